package poster

import (
	"math"
	"slices"
	"sync"
	"time"
)

// Defaults of the adaptive posting limit (AIMDConfig).
const (
	DefaultLimitInterval  = 250 * time.Millisecond
	DefaultLimitMin       = 20.0   // drafts/s: posting never stops
	DefaultLimitMax       = 5000.0 // drafts/s: no limit in practice
	DefaultLimitStep      = 10.0   // drafts/s added per calm interval
	DefaultLimitBackoff   = 0.7
	DefaultLimitTolerance = 3.0
	DefaultLimitSlack     = 20 * time.Millisecond
	DefaultLimitBaseline  = 2 * time.Minute
	// DefaultLimitFloorShare keeps posting at a quarter of its recent peak
	// rate at least, so a backlog always drains and a sustained slowdown
	// that posting does not cause (another tenant of the database) cannot
	// starve it.
	DefaultLimitFloorShare = 0.25
	// DefaultLimitMaxAge is how long a Post may wait for its job before
	// the limit stops backing off: saves first, but a backlog older than
	// this drains (a spike's backlog within minutes of its end).
	DefaultLimitMaxAge = 45 * time.Second
	// limitPeakHalfLife is how fast the remembered peak rate decays.
	limitPeakHalfLife = 30 * time.Second
)

// AIMDConfig configures the adaptive limit on how many drafts a second
// the posting jobs post (interactive first: background posting yields to
// authors' requests when they share the database and it is saturated).
// Zero values take the defaults.
type AIMDConfig struct {
	// Off turns the limit off: jobs post as fast as the group commit goes.
	Off bool
	// Interval is how often the limit is adjusted.
	Interval time.Duration
	// Min, Max and Step (drafts/s) bound the limit and are what a calm
	// interval adds to it.
	Min, Max, Step float64
	// Backoff multiplies the posting rate of an interval whose interactive
	// latency rose (0 < Backoff < 1).
	Backoff float64
	// FloorShare of the recent peak posting rate (decaying with a 30 s
	// half-life) is the least a backoff leaves, above Min.
	FloorShare float64
	// MaxAge: while a job starts for a Post older than this, intervals
	// count as calm, so the limit grows until the backlog is younger.
	MaxAge time.Duration
	// Tolerance and Slack say when latency rose: the interval's p90 above
	// Tolerance × the unloaded level + Slack.
	Tolerance float64
	Slack     time.Duration
	// Baseline is how far back the unloaded level (the lowest interval
	// median) is remembered.
	Baseline time.Duration
}

func (c AIMDConfig) withDefaults() AIMDConfig {
	or := func(v, d float64) float64 {
		if v <= 0 {
			return d
		}
		return v
	}
	ord := func(v, d time.Duration) time.Duration {
		if v <= 0 {
			return d
		}
		return v
	}
	c.Interval, c.Slack, c.Baseline = ord(c.Interval, DefaultLimitInterval), ord(c.Slack, DefaultLimitSlack), ord(c.Baseline, DefaultLimitBaseline)
	c.MaxAge = ord(c.MaxAge, DefaultLimitMaxAge)
	c.Min, c.Max, c.Step = or(c.Min, DefaultLimitMin), or(c.Max, DefaultLimitMax), or(c.Step, DefaultLimitStep)
	c.Backoff, c.Tolerance = or(c.Backoff, DefaultLimitBackoff), or(c.Tolerance, DefaultLimitTolerance)
	c.FloorShare = min(or(c.FloorShare, DefaultLimitFloorShare), 1)
	if c.Backoff >= 1 {
		c.Backoff = DefaultLimitBackoff
	}
	c.Max = max(c.Max, c.Min)
	return c
}

// aimd is an additive-increase, multiplicative-decrease limit on a rate,
// driven by the latency of interactive requests: while an interval's p90
// stays near the unloaded level (the lowest interval median seen lately),
// the limit grows by Step; when it rises above it, the limit falls to
// Backoff × the rate actually used in that interval, but not below
// FloorShare × the recent peak rate nor Min. It is safe for
// concurrent use; adjust is called once per interval by one goroutine.
type aimd struct {
	cfg AIMDConfig

	mu      sync.Mutex
	limit   float64
	window  []float64 // latencies (s) observed this interval
	used    int       // units (drafts) taken this interval
	peak    float64   // the highest rate used lately, decaying
	stale   bool      // a job this interval was for a Post older than MaxAge
	medians []median  // interval medians within Baseline
}

type median struct {
	at time.Time
	v  float64
}

func newAIMD(cfg AIMDConfig) *aimd {
	cfg = cfg.withDefaults()
	return &aimd{cfg: cfg, limit: cfg.Max}
}

// observe records one interactive request's latency.
func (a *aimd) observe(d time.Duration) {
	a.mu.Lock()
	if len(a.window) < 10_000 {
		a.window = append(a.window, d.Seconds())
	}
	a.mu.Unlock()
}

// started records that a job started for a Post waiting since age ago.
func (a *aimd) started(age time.Duration) {
	if age > a.cfg.MaxAge {
		a.mu.Lock()
		a.stale = true
		a.mu.Unlock()
	}
}

// took records n units used at the current limit.
func (a *aimd) took(n int) {
	a.mu.Lock()
	a.used += n
	a.mu.Unlock()
}

// adjust ends the interval that ends at now, lasting interval, and
// returns the new limit. An interval with no interactive request counts
// as calm (nobody waits), and so does one in which a job started for a
// Post older than MaxAge (the backlog has waited long enough).
func (a *aimd) adjust(now time.Time, interval time.Duration) float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	window, used, stale := a.window, a.used, a.stale
	a.window, a.used, a.stale = a.window[:0:0], 0, false
	rate := float64(used) / interval.Seconds()
	a.peak = max(rate, a.peak*math.Pow(0.5, interval.Seconds()/limitPeakHalfLife.Seconds()))
	if len(window) == 0 || stale {
		a.limit = min(a.cfg.Max, a.limit+a.cfg.Step)
		return a.limit
	}
	slices.Sort(window)
	med, p90 := window[len(window)/2], window[len(window)*9/10]
	a.medians = append(a.medians, median{now, med})
	for len(a.medians) > 1 && now.Sub(a.medians[0].at) > a.cfg.Baseline {
		a.medians = a.medians[1:]
	}
	base := med
	for _, m := range a.medians {
		base = min(base, m.v)
	}
	if p90 > a.cfg.Tolerance*base+a.cfg.Slack.Seconds() {
		if used == 0 {
			rate = a.limit // nothing posted: not what slowed them
		}
		a.limit = max(a.cfg.Min, a.cfg.FloorShare*a.peak, a.cfg.Backoff*min(a.limit, rate))
	} else {
		a.limit = min(a.cfg.Max, a.limit+a.cfg.Step)
	}
	return a.limit
}

// current returns the limit.
func (a *aimd) current() float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.limit
}
