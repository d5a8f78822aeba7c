package counter

// What the package's external tests (package counter_test) share with its
// internal ones.

type TestClock = testClock

var (
	NewTestClock = newTestClock
	TestLogger   = testLogger
	CreateTags   = createTags
	Metric       = metric
	CountDiff    = countDiff
)
