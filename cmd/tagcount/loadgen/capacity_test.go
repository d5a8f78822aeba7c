package loadgen

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// probeResult is what a probe at rate measures from a service that keeps
// Post p99 at 20 ms up to limit works/s and at 500 ms beyond.
func probeResult(rate, limit float64) *Result {
	p99 := 20.0
	if rate > limit {
		p99 = 500
	}
	started := int64(rate * 10)
	return &Result{LoadSeconds: 10, PostsPerSec: rate, Works: Works{Started: started, Completed: started},
		Latency: map[string]LatencySummary{"post": {Count: started, P99: p99}}, PostToPosted: LatencySummary{Count: started, P99: 3 * p99},
		Check: &Check{Exact: true}}
}

func TestCapacityDoublesUntilAProbeFailsThenBisects(t *testing.T) {
	var rates []float64
	run := func(ctx context.Context, rate float64) (*Result, error) {
		rates = append(rates, rate)
		return probeResult(rate, 730), nil
	}
	pc, err := FindCapacity(context.Background(), "new", CapacityOptions{}, run)
	if err != nil {
		t.Fatal(err)
	}
	// 750 - 725 is within a twentieth of 725: the bisection stops there.
	want := []float64{25, 50, 100, 200, 400, 800, 600, 700, 750, 725}
	if !slices.Equal(rates, want) {
		t.Errorf("probed %v, want %v", rates, want)
	}
	if pc.Capacity != 725 || pc.FirstBad != 750 || len(pc.Probes) != len(want) {
		t.Errorf("capacity %v, first bad %v, %d probes", pc.Capacity, pc.FirstBad, len(pc.Probes))
	}
	if p := pc.Probes[5]; p.OK || !strings.Contains(p.Why, "Post p99 500.0 ms") {
		t.Errorf("probe at 800/s: %+v, want failed on p99", p)
	}
}

func TestCapacitySearchStopsAtItsProbeLimitWithALowerBound(t *testing.T) {
	run := func(ctx context.Context, rate float64) (*Result, error) { return probeResult(rate, 1e9), nil }
	pc, err := FindCapacity(context.Background(), "new", CapacityOptions{Start: 10, MaxProbes: 4}, run)
	if err != nil || pc.Capacity != 80 || pc.FirstBad != 0 || len(pc.Probes) != 4 {
		t.Errorf("capacity %+v (%v), want at least 80 after 4 probes", pc, err)
	}
}

func TestCapacitySearchReturnsWhatItFoundWhenAProbeCannotRun(t *testing.T) {
	broken := errors.New("no database")
	run := func(ctx context.Context, rate float64) (*Result, error) {
		if rate > 50 {
			return nil, broken
		}
		return probeResult(rate, 1e9), nil
	}
	pc, err := FindCapacity(context.Background(), "legacy", CapacityOptions{}, run)
	if !errors.Is(err, broken) || pc == nil || pc.Capacity != 50 || len(pc.Probes) != 2 {
		t.Errorf("capacity %+v, error %v", pc, err)
	}
}

func TestAProbeFailsOnAnyFailedRequestMissedArrivalOrShortfall(t *testing.T) {
	for name, c := range map[string]struct {
		change func(r *Result)
		why    string
	}{
		"given up":      {func(r *Result) { r.Errors.GaveUp, r.Works.Failed = 2, 2 }, "2 requests failed"},
		"not completed": {func(r *Result) { r.Works.NotCompleted = 3 }, "3 posts not completed"},
		"missed":        {func(r *Result) { r.Works.Missed = 4; r.Works.Started -= 4 }, "4 arrivals missed"},
		"shortfall":     {func(r *Result) { r.Works.Started = 500 }, "offered only 50.0/s"},
		"inexact":       {func(r *Result) { r.Check.Exact = false }, "counts not exact"},
		"no posts":      {func(r *Result) { r.Latency["post"] = LatencySummary{} }, "no Post measured"},
		// A fast Post over a growing backlog: the path does not keep up.
		"backlog": {func(r *Result) { r.PostToPosted.P99 = 2500 }, "Post→posted p99 2500.0 ms (a backlog)"},
	} {
		r := probeResult(100, 1e9)
		c.change(r)
		p := JudgeProbe(r, 100, CapacityOptions{MaxP99: 100 * time.Millisecond})
		if p.OK || !strings.Contains(p.Why, c.why) {
			t.Errorf("%s: %+v, want failed: %q", name, p, c.why)
		}
	}
	// Deadlocks retried until they went through are not failures.
	r := probeResult(100, 1e9)
	r.Errors.Deadlock = 7
	if p := JudgeProbe(r, 100, CapacityOptions{MaxP99: 100 * time.Millisecond}); !p.OK || p.Retried503 != 7 {
		t.Errorf("retried deadlocks: %+v, want ok with 7 retried", p)
	}
}

func TestCapacityReportPrintsEveryProbeAndTheRatio(t *testing.T) {
	c := &CapacityReport{MaxP99Ms: 100, ProbeSeconds: 10, InFlight: 1024}
	for path, limit := range map[string]float64{"legacy": 60, "new": 730} {
		pc, _ := FindCapacity(context.Background(), path, CapacityOptions{}, func(ctx context.Context, rate float64) (*Result, error) {
			return probeResult(rate, limit), nil
		})
		c.Paths = append(c.Paths, pc)
	}
	slices.SortFunc(c.Paths, func(a, b *PathCapacity) int { return strings.Compare(a.Path, b.Path) })
	rep := &Report{Capacity: c}
	rep.Finish()
	var b bytes.Buffer
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	// Post→posted p99 of each probe is shown.
	if !strings.Contains(out, "posted p99 (ms)") || !strings.Contains(out, "500.0         1,500.0") {
		t.Errorf("capacity text lacks Post→posted p99 of the probes:\n%s", out)
	}
	for _, want := range []string{"capacity legacy  60.0 works/s (fails at 63.0/s)", "capacity new     725.0 works/s", "capacity new/legacy 12.1×", "FAIL: Post p99 500.0 ms"} {
		if !strings.Contains(out, want) {
			t.Errorf("capacity text lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "\nlegacy ") + strings.Count(out, "\nnew "); n != len(c.Paths[0].Probes)+len(c.Paths[1].Probes) {
		t.Errorf("%d probe rows:\n%s", n, out)
	}
}
