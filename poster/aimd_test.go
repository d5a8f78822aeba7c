package poster

import (
	"testing"
	"time"
)

// interval feeds a one-interval window of n latencies of d and n drafts
// posted, and returns the limit adjust sets.
func interval(a *aimd, at time.Time, d time.Duration, posted int) float64 {
	for range 20 {
		a.observe(d)
	}
	a.took(posted)
	return a.adjust(at, time.Second)
}

func TestAIMDBacksOffToAShareOfTheRateUsedWhenLatencyRisesAndGrowsBackByStep(t *testing.T) {
	a := newAIMD(AIMDConfig{Min: 10, Max: 1000, Step: 50, Backoff: 0.5, Tolerance: 2, Slack: time.Millisecond})
	t0 := time.Unix(0, 0)
	// Calm: 10 ms is the unloaded level; the limit stays at its maximum.
	if got := interval(a, t0, 10*time.Millisecond, 300); got != 1000 {
		t.Fatalf("calm interval: limit %v, want 1000", got)
	}
	// Saves take 40 ms (> 2 × 10 ms + 1 ms) while 300 drafts/s are posted:
	// the limit falls to half of what was used.
	if got := interval(a, t0.Add(time.Second), 40*time.Millisecond, 300); got != 150 {
		t.Fatalf("slow interval: limit %v, want 150 (0.5 × 300 drafts/s)", got)
	}
	if got := interval(a, t0.Add(2*time.Second), 40*time.Millisecond, 150); got != 75 {
		t.Fatalf("second slow interval: limit %v, want 75", got)
	}
	// Back to the unloaded level: it grows by Step per interval.
	if got := interval(a, t0.Add(3*time.Second), 12*time.Millisecond, 75); got != 125 {
		t.Fatalf("calm again: limit %v, want 125", got)
	}
}

func TestAIMDNeverGoesBelowMinNorAboveMax(t *testing.T) {
	a := newAIMD(AIMDConfig{Min: 20, Max: 100, Step: 60, Backoff: 0.1, FloorShare: 0.001})
	t0 := time.Unix(0, 0)
	interval(a, t0, time.Millisecond, 100)
	for i := 1; i < 10; i++ {
		if got := interval(a, t0.Add(time.Duration(i)*time.Second), time.Second, 100); got != 20 {
			t.Fatalf("slow interval %d: limit %v, want the minimum 20", i, got)
		}
	}
	for i := 10; i < 20; i++ {
		interval(a, t0.Add(time.Duration(i)*time.Second), time.Millisecond, 20)
	}
	if got := a.current(); got != 100 {
		t.Fatalf("after calm intervals: limit %v, want the maximum 100", got)
	}
}

func TestAIMDIntervalWithoutInteractiveRequestsIsCalm(t *testing.T) {
	a := newAIMD(AIMDConfig{Min: 10, Max: 1000, Step: 5, Backoff: 0.5})
	t0 := time.Unix(0, 0)
	interval(a, t0, time.Millisecond, 100)
	interval(a, t0.Add(time.Second), time.Second, 100) // 50
	if got := a.adjust(t0.Add(2*time.Second), time.Second); got != 55 {
		t.Fatalf("interval with nobody waiting: limit %v, want 55 (grows)", got)
	}
}

func TestAIMDSlowIntervalWithNothingPostedBacksOffFromTheLimit(t *testing.T) {
	a := newAIMD(AIMDConfig{Min: 10, Max: 400, Step: 5, Backoff: 0.5})
	t0 := time.Unix(0, 0)
	interval(a, t0, time.Millisecond, 0)
	if got := interval(a, t0.Add(time.Second), time.Second, 0); got != 200 {
		t.Fatalf("slow interval, nothing posted: limit %v, want 200 (half the limit, not the minimum)", got)
	}
}

func TestAIMDForgetsAnUnloadedLevelOlderThanBaseline(t *testing.T) {
	a := newAIMD(AIMDConfig{Min: 10, Max: 1000, Step: 5, Backoff: 0.5, Tolerance: 2, Slack: time.Millisecond, Baseline: 10 * time.Second})
	t0 := time.Unix(0, 0)
	interval(a, t0, time.Millisecond, 100)
	// 30 ms is slow against 1 ms, but once 1 ms is older than Baseline
	// the level is 30 ms's own and the interval is calm.
	interval(a, t0.Add(time.Second), 30*time.Millisecond, 100)
	if got := interval(a, t0.Add(20*time.Second), 30*time.Millisecond, 100); got != 55 {
		t.Fatalf("limit %v after the old level expired; want 55 (calm: 50 + Step)", got)
	}
}

func TestAIMDKeepsAShareOfTheRecentPeakRateHoweverLongLatencyStaysHigh(t *testing.T) {
	// Another tenant slows the database for a minute: posting is not what
	// slows the saves, and it keeps a quarter of its peak rate.
	a := newAIMD(AIMDConfig{Min: 1, Max: 1000, Step: 5, Backoff: 0.5, FloorShare: 0.25})
	t0 := time.Unix(0, 0)
	interval(a, t0, time.Millisecond, 400)
	var got float64
	for i := 1; i <= 60; i++ {
		got = interval(a, t0.Add(time.Duration(i)*time.Second), time.Second, int(min(a.current(), 400)))
	}
	// The peak decays with a 30 s half-life: 400 → 100 after a minute,
	// and a quarter of that is 25.
	if got < 24 || got > 26 {
		t.Fatalf("limit %v after a minute of slow intervals; want a quarter of the decayed peak, about 25", got)
	}
}

func TestAIMDGrowsWhileJobsStartForPostsOlderThanMaxAge(t *testing.T) {
	a := newAIMD(AIMDConfig{Min: 10, Max: 1000, Step: 5, Backoff: 0.5, FloorShare: 0.001, MaxAge: 30 * time.Second})
	t0 := time.Unix(0, 0)
	interval(a, t0, time.Millisecond, 100)
	interval(a, t0.Add(time.Second), time.Second, 100) // 50
	// Saves are still slow, but the backlog has waited long enough.
	a.started(29 * time.Second)
	if got := interval(a, t0.Add(2*time.Second), time.Second, 50); got != 25 {
		t.Fatalf("slow interval, young backlog: limit %v, want 25", got)
	}
	a.started(31 * time.Second)
	if got := interval(a, t0.Add(3*time.Second), time.Second, 25); got != 30 {
		t.Fatalf("slow interval, a Post older than MaxAge: limit %v, want 30 (grows)", got)
	}
}
