package loadgen

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tagcount/tagcount/migrations/loop"
)

// Defaults of a capacity search.
const (
	DefaultCapacityP99       = 100 * time.Millisecond
	DefaultCapacityStart     = 25.0
	DefaultCapacityMaxProbes = 12
	DefaultCapacityPrecision = 0.05
	// DefaultCapacityPostedP99 bounds how long queued posts may take to
	// become works (the new path): the freshness target of issue 25.
	DefaultCapacityPostedP99 = 1500 * time.Millisecond
	DefaultProbeDuration     = 10 * time.Second
	DefaultProbeInFlight     = 1024
)

// CapacityOptions configure the search for a path's capacity: the highest
// open-loop rate of works started per second at which Post p99 stays under
// MaxP99, queued posts become works within MaxPostedP99 (p99), and no
// request fails. Zero values take the defaults.
type CapacityOptions struct {
	MaxP99 time.Duration
	// MaxPostedP99 bounds Post→work posted p99 on a path that posts in
	// the background; without it a probe above the posting rate passes
	// on a fast Post while its backlog grows (negative: not judged).
	MaxPostedP99 time.Duration
	// Start is the first rate probed; it doubles until a probe fails.
	Start float64
	// MaxProbes bounds the probes of one path.
	MaxProbes int
	// Precision ends the bisection between the last good and the first
	// bad rate once they are this share of the good one apart.
	Precision float64
}

func (o *CapacityOptions) defaults() {
	o.MaxP99 = loop.OrDefault(o.MaxP99, DefaultCapacityP99)
	o.Start = loop.OrDefault(o.Start, DefaultCapacityStart)
	o.MaxProbes = loop.OrDefault(o.MaxProbes, DefaultCapacityMaxProbes)
	o.Precision = loop.OrDefault(o.Precision, DefaultCapacityPrecision)
	if o.MaxPostedP99 == 0 {
		o.MaxPostedP99 = DefaultCapacityPostedP99
	}
}

// Probe is one short open-loop run at a fixed rate, and its verdict.
type Probe struct {
	Rate          float64 `json:"rate"`
	OfferedPerSec float64 `json:"offered_per_s"` // works started or missed per second of load
	PostsPerSec   float64 `json:"posts_completed_per_s"`
	PostP99Ms     float64 `json:"post_p99_ms"`
	// PostedP99Ms is how long queued posts took to become works (the new
	// path): judged against CapacityOptions.MaxPostedP99, as a backlog
	// shows here first.
	PostedP99Ms  float64 `json:"post_to_posted_p99_ms,omitempty"`
	Posts        int64   `json:"post_requests"`
	Retried503   int64   `json:"retried_503s"` // deadlocks and lock-wait timeouts, each attempt
	GaveUp       int64   `json:"requests_given_up"`
	WorksFailed  int64   `json:"works_failed"`
	NotCompleted int64   `json:"posts_not_completed"`
	Missed       int64   `json:"missed_arrivals"`
	Exact        *bool   `json:"counts_exact,omitempty"`
	OK           bool    `json:"ok"`
	Why          string  `json:"why_not,omitempty"`
}

// PathCapacity is what the search found on one path.
type PathCapacity struct {
	Path string `json:"path"`
	// Capacity is the highest rate a probe passed at; 0 when none did.
	Capacity float64 `json:"capacity_per_s"`
	// FirstBad is the lowest rate a probe failed at; 0 when the search
	// ran out of probes first, so the capacity is at least Capacity.
	FirstBad float64 `json:"first_bad_rate,omitempty"`
	Probes   []Probe `json:"probes"`
}

// ProbeRun runs one probe: the workload open-loop at rate on a fresh
// service. It returns the run's result, or an error when the probe could
// not run at all.
type ProbeRun func(ctx context.Context, rate float64) (*Result, error)

// FindCapacity searches path's capacity: it doubles the rate from
// o.Start until a probe fails, then bisects between the last good and
// the first bad rate. It returns what it found when a probe cannot run or
// ctx ends, with that error.
func FindCapacity(ctx context.Context, path string, o CapacityOptions, run ProbeRun) (*PathCapacity, error) {
	o.defaults()
	pc := &PathCapacity{Path: path}
	probe := func(rate float64) (bool, error) {
		res, err := run(ctx, rate)
		if err != nil {
			return false, err
		}
		p := JudgeProbe(res, rate, o)
		pc.Probes = append(pc.Probes, p)
		return p.OK, ctx.Err()
	}
	good, bad := 0.0, 0.0
	for rate := o.Start; len(pc.Probes) < o.MaxProbes; rate *= 2 {
		ok, err := probe(rate)
		if err != nil {
			return pc.found(good, bad), err
		}
		if !ok {
			bad = rate
			break
		}
		good = rate
	}
	for bad > 0 && bad-good > o.Precision*good && len(pc.Probes) < o.MaxProbes {
		mid := roundRate((good + bad) / 2)
		if mid <= good || mid >= bad || mid < 1 {
			break
		}
		ok, err := probe(mid)
		if err != nil {
			return pc.found(good, bad), err
		}
		if ok {
			good = mid
		} else {
			bad = mid
		}
	}
	return pc.found(good, bad), nil
}

func (pc *PathCapacity) found(good, bad float64) *PathCapacity {
	pc.Capacity, pc.FirstBad = good, bad
	return pc
}

// roundRate keeps probed rates readable: whole works per second above 10.
func roundRate(r float64) float64 {
	if r >= 10 {
		return float64(int64(r + 0.5))
	}
	return round3(r)
}

// JudgeProbe summarises a probe's result at rate and says whether the
// service kept up: Post p99 under o.MaxP99, queued posts posted within
// o.MaxPostedP99 (p99), no request failed after its retries, every post
// completed, no arrival missed for want of room in flight, the rate
// actually offered (within 5%), and exact counts.
func JudgeProbe(res *Result, rate float64, o CapacityOptions) Probe {
	o.defaults()
	maxP99 := o.MaxP99
	post := res.Latency["post"]
	w := res.Works
	p := Probe{Rate: rate, PostsPerSec: res.PostsPerSec, PostP99Ms: post.P99, PostedP99Ms: res.PostToPosted.P99, Posts: post.Count,
		Retried503: res.Errors.Deadlock + res.Errors.LockWait, GaveUp: res.Errors.GaveUp,
		WorksFailed: w.Failed, NotCompleted: w.NotCompleted, Missed: w.Missed}
	if res.LoadSeconds > 0 {
		p.OfferedPerSec = round3(float64(w.Started+w.Missed) / res.LoadSeconds)
	}
	if res.Check != nil {
		exact := res.Check.Exact && res.Check.Error == ""
		p.Exact = &exact
	}
	var why []string
	add := func(bad bool, format string, args ...any) {
		if bad {
			why = append(why, fmt.Sprintf(format, args...))
		}
	}
	add(post.Count == 0, "no Post measured")
	add(post.Count > 0 && post.P99 >= float64(maxP99)/float64(time.Millisecond), "Post p99 %.1f ms", post.P99)
	add(o.MaxPostedP99 > 0 && p.PostedP99Ms >= float64(o.MaxPostedP99)/float64(time.Millisecond),
		"Post→posted p99 %.1f ms (a backlog)", p.PostedP99Ms)
	add(p.GaveUp > 0, "%d requests failed", p.GaveUp)
	add(p.WorksFailed > p.GaveUp, "%d works failed", p.WorksFailed)
	add(p.NotCompleted > 0, "%d posts not completed", p.NotCompleted)
	add(p.Missed > 0, "%d arrivals missed (in-flight cap)", p.Missed)
	add(p.OfferedPerSec < 0.95*rate, "offered only %.1f/s", p.OfferedPerSec)
	add(p.Exact != nil && !*p.Exact, "counts not exact")
	p.OK, p.Why = len(why) == 0, strings.Join(why, "; ")
	return p
}

// CapacityReport is a capacity search on each path.
type CapacityReport struct {
	MaxP99Ms      float64         `json:"max_post_p99_ms"`
	MaxPostedP99  float64         `json:"max_post_to_posted_p99_ms,omitempty"`
	ProbeSeconds  float64         `json:"probe_s"`
	InFlight      int             `json:"max_in_flight"`
	Paths         []*PathCapacity `json:"paths"`
	NewVsLegacy   float64         `json:"new_vs_legacy,omitempty"` // capacity ratio, when both were found
	NewVsLegacyLB bool            `json:"new_vs_legacy_is_lower_bound,omitempty"`
}

// Finish computes the new/legacy ratio of capacities.
func (c *CapacityReport) Finish() {
	var legacy, nw *PathCapacity
	for _, p := range c.Paths {
		switch p.Path {
		case "legacy":
			legacy = p
		case "new":
			nw = p
		}
	}
	if legacy != nil && nw != nil && legacy.Capacity > 0 {
		c.NewVsLegacy = round3(nw.Capacity / legacy.Capacity)
		c.NewVsLegacyLB = nw.FirstBad == 0
	}
}

// WriteText writes every probe and each path's capacity.
func (c *CapacityReport) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "capacity: the highest open-loop rate (works started/s) at which Post p99 < %.0f ms, queued posts become\n"+
		"works within Post→posted p99 < %.0f ms, and no request fails; each probe %.0f s on a fresh database, at most %d works\n"+
		"in flight; completed/s counts until the last post completed, so a backlog shows as less than offered/s\n\n",
		c.MaxP99Ms, c.MaxPostedP99, c.ProbeSeconds, c.InFlight)
	fmt.Fprintf(&b, "%-7s %5s %9s %9s %11s %13s %15s %8s %7s  %s\n", "path", "probe", "rate/s", "offered/s", "completed/s",
		"post p99 (ms)", "posted p99 (ms)", "retried", "failed", "verdict")
	for _, pc := range c.Paths {
		for i, p := range pc.Probes {
			verdict := "ok"
			if !p.OK {
				verdict = "FAIL: " + p.Why
			}
			posted := "-"
			if p.PostedP99Ms > 0 {
				posted = formatNum("%.1f", p.PostedP99Ms)
			}
			fmt.Fprintf(&b, "%-7s %5d %9s %9s %11s %13s %15s %8d %7d  %s\n", pc.Path, i+1, formatNum("%.1f", p.Rate),
				formatNum("%.1f", p.OfferedPerSec), formatNum("%.1f", p.PostsPerSec), formatNum("%.1f", p.PostP99Ms),
				posted, p.Retried503, p.GaveUp+p.NotCompleted, verdict)
		}
	}
	b.WriteString("\n")
	for _, pc := range c.Paths {
		bound := fmt.Sprintf("fails at %s/s", formatNum("%.1f", pc.FirstBad))
		if pc.FirstBad == 0 {
			bound = "no failing rate found within the probes: at least this"
		}
		fmt.Fprintf(&b, "capacity %-7s %s works/s (%s)\n", pc.Path, formatNum("%.1f", pc.Capacity), bound)
	}
	if c.NewVsLegacy > 0 {
		lb := ""
		if c.NewVsLegacyLB {
			lb = " (at least: the new path's search found no failing rate)"
		}
		fmt.Fprintf(&b, "capacity new/legacy %.1f×%s\n", c.NewVsLegacy, lb)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
