package rollout

import (
	"testing"
	"time"
)

var testGuards = Guards{MinPosts: 10, MinEvaluations: 2, FreshnessP99: 2 * time.Second, PostP99: time.Second,
	ErrorMargin: 0.05, BacklogGrowth: 10, OutboxAge: time.Minute, ConsumerLag: 1000, SevereFactor: 3}

func healthy() Reading {
	return Reading{NewPosts: 100, LegacyPosts: 100, NewPostP99: 100 * time.Millisecond,
		FreshnessP99: 500 * time.Millisecond, FreshnessSamples: 100, OutboxAge: time.Second, OutboxRows: 10, Backlog: 5}
}

func guard(v Verdict, name string) GuardResult {
	for _, g := range v.Guards {
		if g.Name == name {
			return g
		}
	}
	return GuardResult{}
}

func TestEveryGuardPassesAHealthyWindowOnceSampled(t *testing.T) {
	t.Parallel()
	v := Evaluate(testGuards, healthy(), 2, 5)
	if g, failed := v.Failed(); failed {
		t.Fatalf("healthy reading failed %v", g)
	}
	if !v.Ready() {
		t.Fatalf("healthy reading with enough samples is not ready: %+v", v.Guards)
	}
	if Evaluate(testGuards, healthy(), 1, 5).Ready() {
		t.Fatal("one evaluation is fewer than MinEvaluations, yet the verdict is ready")
	}
}

func TestAGuardOutOfBoundsFailsOnlyWithItsMinimumSamples(t *testing.T) {
	t.Parallel()
	r := healthy()
	r.FreshnessP99, r.FreshnessSamples = 3*time.Second, 9
	v := Evaluate(testGuards, r, 2, 5)
	if _, failed := v.Failed(); failed {
		t.Fatal("a guard with 9 of 10 samples failed")
	}
	if g := guard(v, GuardFreshness); g.OK || g.Ready() {
		t.Fatalf("freshness should be out of bounds and not ready: %+v", g)
	}
	r.FreshnessSamples = 10
	g, failed := Evaluate(testGuards, r, 2, 5).Failed()
	if !failed || g.Name != GuardFreshness || g.Severe {
		t.Fatalf("want freshness failed, not severe; got %+v (failed %v)", g, failed)
	}
	if g.Value != 3 || g.Bound != 2 || g.Samples != 10 {
		t.Fatalf("the failure should carry its numbers: %+v", g)
	}
}

func TestAGuardFarOutOfBoundsIsSevere(t *testing.T) {
	t.Parallel()
	r := healthy()
	r.NewPostP99 = 4 * time.Second // bound 1 s, factor 3
	g, failed := Evaluate(testGuards, r, 2, 5).Failed()
	if !failed || g.Name != GuardPostP99 || !g.Severe {
		t.Fatalf("want post_p99 severe; got %+v", g)
	}
}

func TestErrorRatioComparesWithLegacyOnlyWhenLegacyIsSampled(t *testing.T) {
	t.Parallel()
	r := healthy()
	r.NewErrors, r.LegacyErrors = 10, 8 // 10 % against 8 %: within a 5-point margin
	if g, failed := Evaluate(testGuards, r, 2, 5).Failed(); failed {
		t.Fatalf("new 10%% vs legacy 8%% failed: %+v", g)
	}
	r.LegacyPosts = 9 // too few: legacy counts as 0 %
	g, failed := Evaluate(testGuards, r, 2, 5).Failed()
	if !failed || g.Name != GuardErrorRatio {
		t.Fatalf("new 10%% vs an unsampled legacy should fail error_ratio; got %+v", g)
	}
}

func TestBacklogGuardComparesWithTheWindowsStart(t *testing.T) {
	t.Parallel()
	r := healthy()
	r.Backlog = 100
	if _, failed := Evaluate(testGuards, r, 2, 95).Failed(); failed {
		t.Fatal("a backlog 5 above its start failed a growth bound of 10")
	}
	g, failed := Evaluate(testGuards, r, 2, 80).Failed()
	if !failed || g.Name != GuardBacklog {
		t.Fatalf("a backlog 20 above its start should fail; got %+v", g)
	}
}

func TestP99IsTheNearestRank(t *testing.T) {
	t.Parallel()
	var d []time.Duration
	for i := 1; i <= 200; i++ {
		d = append(d, time.Duration(i))
	}
	if got := P99(d); got != 198 {
		t.Fatalf("p99 of 1..200 = %v, want 198", got)
	}
	if P99(nil) != 0 || P99([]time.Duration{7}) != 7 {
		t.Fatal("p99 of none or one")
	}
}
