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

// StreamLock is the SQL expression naming the count stream's publishing lock.
const StreamLock = streamLock
