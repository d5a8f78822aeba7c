package rollout

import (
	"cmp"
	"context"
	"fmt"
	"time"
)

// The guards, by the name plans, logs and metrics give them.
const (
	GuardErrorRatio  = "error_ratio"   // new path's failed-Post share minus legacy's
	GuardPostP99     = "post_p99"      // new path's Post answer, 99th percentile
	GuardFreshness   = "freshness_p99" // new path's Post → small-tag count, 99th percentile
	GuardOutboxAge   = "outbox_age"    // age of the oldest outbox row
	GuardConsumerLag = "consumer_lag"  // outbox rows not yet applied by the counter
	GuardBacklog     = "backlog"       // growth of queued drafts since the window began
)

// Defaults of Guards (docs/operations.md, "Guarded rollout").
const (
	DefaultErrorMargin    = 0.01
	DefaultPostP99        = 500 * time.Millisecond
	DefaultFreshnessP99   = 5 * time.Second
	DefaultOutboxAge      = 45 * time.Minute
	DefaultConsumerLag    = 200_000
	DefaultBacklogGrowth  = 500
	DefaultMinPosts       = 200
	DefaultMinEvaluations = 3
	DefaultSevereFactor   = 3.0
)

// Guards are the bounds a step must keep. Zero fields take the defaults
// above (withDefaults is the one place they are filled in).
type Guards struct {
	// ErrorMargin is how far the new path's error ratio (failed Posts over
	// Posts, a post whose job failed counting as failed, whether the job
	// gave up or waits for a retry) may exceed legacy's.
	ErrorMargin float64
	// PostP99 bounds the new path's Post answer time, 99th percentile.
	PostP99 time.Duration
	// FreshnessP99 bounds the time from a new-path Post to its small tags'
	// counts including it, 99th percentile. A post not counted yet counts
	// with its age so far, so a stopped counter fails the guard.
	FreshnessP99 time.Duration
	// OutboxAge bounds the age of the oldest outbox row. Medium and large
	// tags' rows wait for their flush by design: keep it above the large
	// tier's interval.
	OutboxAge time.Duration
	// ConsumerLag bounds the outbox rows the counter has not applied yet.
	ConsumerLag int64
	// BacklogGrowth bounds how many more drafts may be queued for posting
	// than when the step's window began.
	BacklogGrowth int64
	// MinPosts is the number of new-path Posts in a window the per-post
	// guards (error ratio, Post p99, freshness) need before they may pass
	// a step or fail it; legacy's ratio is used when it has as many too,
	// else taken as 0.
	MinPosts int64
	// MinEvaluations is the number of reads in a window the point-in-time
	// guards (outbox age, consumer lag, backlog) need.
	MinEvaluations int64
	// SevereFactor: a guard whose value exceeds its bound by this factor
	// (the error ratio: whose excess exceeds the margin by it) is severe,
	// and the flag goes back to 0 % rather than to the last step that held.
	SevereFactor float64
}

func (g Guards) withDefaults() Guards {
	g.ErrorMargin = cmp.Or(g.ErrorMargin, DefaultErrorMargin)
	g.PostP99 = cmp.Or(g.PostP99, DefaultPostP99)
	g.FreshnessP99 = cmp.Or(g.FreshnessP99, DefaultFreshnessP99)
	g.OutboxAge = cmp.Or(g.OutboxAge, DefaultOutboxAge)
	g.ConsumerLag = cmp.Or(g.ConsumerLag, DefaultConsumerLag)
	g.BacklogGrowth = cmp.Or(g.BacklogGrowth, DefaultBacklogGrowth)
	g.MinPosts = cmp.Or(g.MinPosts, DefaultMinPosts)
	g.MinEvaluations = cmp.Or(g.MinEvaluations, DefaultMinEvaluations)
	g.SevereFactor = cmp.Or(g.SevereFactor, DefaultSevereFactor)
	return g
}

// Reading is what a Measures source saw for one window.
type Reading struct {
	NewPosts, NewErrors       int64
	LegacyPosts, LegacyErrors int64
	// NewPostP99 and FreshnessP99 are over the window's new-path Posts
	// (FreshnessSamples of them for freshness, which leaves out failed ones
	// and adds earlier posts still not counted, with their age so far).
	NewPostP99       time.Duration
	FreshnessP99     time.Duration
	FreshnessSamples int64
	OutboxAge        time.Duration
	OutboxRows       int64
	Backlog          int64 // drafts queued for posting now
}

// Measures reads what the guards compare, for the window from since to now,
// across every replica. It returns an error when it cannot read them; a
// runner then decides nothing that round.
type Measures interface {
	Measure(ctx context.Context, since, now time.Time) (Reading, error)
}

// GuardResult is one guard at one evaluation.
type GuardResult struct {
	Name string `json:"name"`
	// Value and Bound are in the guard's unit: a ratio, seconds, rows or
	// drafts (Unit names it).
	Value      float64 `json:"value"`
	Bound      float64 `json:"bound"`
	Unit       string  `json:"unit"`
	Samples    int64   `json:"samples"`
	MinSamples int64   `json:"min_samples"`
	// OK: within its bound (whatever the samples). Failed: out of bounds
	// with enough samples. Severe: failed by SevereFactor or more.
	OK     bool `json:"ok"`
	Failed bool `json:"failed"`
	Severe bool `json:"severe"`
}

// Ready says whether the guard has the samples to pass a step.
func (r GuardResult) Ready() bool { return r.Samples >= r.MinSamples }

func (r GuardResult) String() string {
	return fmt.Sprintf("%s %.4g %s (bound %.4g, %d samples)", r.Name, r.Value, r.Unit, r.Bound, r.Samples)
}

// Verdict is every guard at one evaluation.
type Verdict struct {
	Guards []GuardResult
}

// Failed returns the first failed guard (a severe one first) and whether
// any failed.
func (v Verdict) Failed() (GuardResult, bool) {
	var first GuardResult
	found := false
	for _, g := range v.Guards {
		if g.Failed && (!found || (g.Severe && !first.Severe)) {
			first, found = g, true
		}
	}
	return first, found
}

// Ready says whether every guard has its samples.
func (v Verdict) Ready() bool {
	for _, g := range v.Guards {
		if !g.Ready() {
			return false
		}
	}
	return true
}

// Evaluate compares a window's reading with the guards. evaluations is the
// number of reads in the window, this one included; backlogFrom the queued
// drafts when the window began. It is pure: the runner's decisions follow
// from it alone.
func Evaluate(g Guards, r Reading, evaluations, backlogFrom int64) Verdict {
	g = g.withDefaults()
	ratio := func(errs, posts int64) float64 {
		if posts == 0 {
			return 0
		}
		return float64(errs) / float64(posts)
	}
	legacy := 0.0
	if r.LegacyPosts >= g.MinPosts {
		legacy = ratio(r.LegacyErrors, r.LegacyPosts)
	}
	excess := ratio(r.NewErrors, r.NewPosts) - legacy
	secs := func(d time.Duration) float64 { return d.Seconds() }
	return Verdict{Guards: []GuardResult{
		g.result(GuardErrorRatio, "ratio", excess, g.ErrorMargin, r.NewPosts, g.MinPosts),
		g.result(GuardPostP99, "seconds", secs(r.NewPostP99), secs(g.PostP99), r.NewPosts, g.MinPosts),
		g.result(GuardFreshness, "seconds", secs(r.FreshnessP99), secs(g.FreshnessP99), r.FreshnessSamples, g.MinPosts),
		g.result(GuardOutboxAge, "seconds", secs(r.OutboxAge), secs(g.OutboxAge), evaluations, g.MinEvaluations),
		g.result(GuardConsumerLag, "rows", float64(r.OutboxRows), float64(g.ConsumerLag), evaluations, g.MinEvaluations),
		g.result(GuardBacklog, "drafts", float64(r.Backlog-backlogFrom), float64(g.BacklogGrowth), evaluations, g.MinEvaluations),
	}}
}

func (g Guards) result(name, unit string, value, bound float64, samples, minSamples int64) GuardResult {
	r := GuardResult{Name: name, Unit: unit, Value: value, Bound: bound, Samples: samples, MinSamples: minSamples, OK: value <= bound}
	r.Failed = !r.OK && r.Ready()
	r.Severe = r.Failed && value > bound*g.SevereFactor
	return r
}
