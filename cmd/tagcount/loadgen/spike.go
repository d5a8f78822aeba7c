package loadgen

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// ScenarioSpike: steady load at half of a path's capacity, twice its
// capacity for a while, then half again; per second, what authors wait
// for and the backlog of queued posts, and how long the backlog takes to
// go once the spike has passed.
const ScenarioSpike = "spike"

// Phases of a spike.
const (
	PhaseBefore = "before"
	PhaseSpike  = "spike"
)

// SpikeShape is the rate of work starts over a spike run.
type SpikeShape struct {
	Capacity float64       `json:"capacity_per_s"` // the path's capacity, as found or given
	Before   time.Duration `json:"before_ns"`      // at half of Capacity
	During   time.Duration `json:"during_ns"`      // at twice Capacity
	After    time.Duration `json:"after_ns"`       // at half of Capacity again
}

// Duration is the whole run's.
func (s SpikeShape) Duration() time.Duration { return s.Before + s.During + s.After }

// Phase names the phase at elapsed into the run.
func (s SpikeShape) Phase(elapsed time.Duration) string {
	switch {
	case elapsed < s.Before:
		return PhaseBefore
	case elapsed < s.Before+s.During:
		return PhaseSpike
	}
	return PhaseAfter
}

// RateAt is the rate of work starts at elapsed into the run (Config.RateAt).
func (s SpikeShape) RateAt(elapsed time.Duration) float64 {
	if s.Phase(elapsed) == PhaseSpike {
		return 2 * s.Capacity
	}
	return s.Capacity / 2
}

// BacklogSample is the service's backlog of queued posts at one moment.
type BacklogSample struct {
	At         time.Duration // into the run
	Drafts     int64
	OldestAgeS float64
	Limit      float64 // the service's adaptive posting limit (drafts/s); 0: none
}

// SpikeSecond is one second of a spike run.
type SpikeSecond struct {
	Second      int     `json:"t_s"`
	Phase       string  `json:"phase"`
	RatePerSec  float64 `json:"rate_per_s"` // works started per second asked for
	Completed   int64   `json:"posts_completed"`
	SaveP99Ms   float64 `json:"save_p99_ms"`
	PostP99Ms   float64 `json:"post_p99_ms"`
	Backlog     int64   `json:"backlog_drafts"`       // -1: not sampled
	BacklogAgeS float64 `json:"backlog_oldest_age_s"` // of the oldest queued draft
	Limit       float64 `json:"posting_limit_per_s"`  // the adaptive posting limit; 0: off or not sampled
}

// SpikeReport is a `tagcount loadgen --scenario spike` run.
type SpikeReport struct {
	Command string        `json:"command"`
	Started time.Time     `json:"started"`
	Machine Machine       `json:"machine"`
	Path    string        `json:"path"`
	Shape   SpikeShape    `json:"shape"`
	Seconds []SpikeSecond `json:"seconds"`
	// Phase figures: the median of the per-second p99s of each phase's
	// seconds with requests (one slow second does not make a phase).
	SaveP99Ms map[string]float64 `json:"save_p99_ms_by_phase"`
	PostP99Ms map[string]float64 `json:"post_p99_ms_by_phase"`
	// PeakBacklog and PeakBacklogAgeS are the largest backlog sampled and
	// its oldest draft's largest age.
	PeakBacklog     int64   `json:"peak_backlog_drafts"`
	PeakBacklogAgeS float64 `json:"peak_backlog_age_s"`
	// DrainedAfterS is the time from the spike's end until the backlog was
	// first sampled back at its level before the spike (at most that
	// level's largest sample); -1 when not within the run.
	DrainedAfterS float64  `json:"drained_after_s"`
	Result        *Result  `json:"result"`
	Targets       []Target `json:"targets"`
}

// NewSpikeReport builds the report of a spike run res of shape on path,
// with the backlog samples taken meanwhile (in time order).
func NewSpikeReport(path string, shape SpikeShape, res *Result, backlog []BacklogSample) *SpikeReport {
	r := &SpikeReport{Path: path, Shape: shape, Result: res, DrainedAfterS: -1,
		SaveP99Ms: map[string]float64{}, PostP99Ms: map[string]float64{}}
	saves, posts := map[string][]float64{}, map[string][]float64{}
	for _, p := range res.Series {
		at := time.Duration(p.Second) * time.Second
		s := SpikeSecond{Second: p.Second, Phase: shape.Phase(at), RatePerSec: shape.RateAt(at), Completed: p.Completed,
			SaveP99Ms: p.SaveP99Ms, PostP99Ms: p.PostP99Ms, Backlog: -1}
		if b, ok := sampleIn(backlog, at, at+time.Second); ok {
			s.Backlog, s.BacklogAgeS, s.Limit = b.Drafts, round3(b.OldestAgeS), round3(b.Limit)
		}
		if p.SaveP99Ms > 0 {
			saves[s.Phase] = append(saves[s.Phase], p.SaveP99Ms)
		}
		if p.PostRequests > 0 {
			posts[s.Phase] = append(posts[s.Phase], p.PostP99Ms)
		}
		r.Seconds = append(r.Seconds, s)
	}
	for _, ph := range []string{PhaseBefore, PhaseSpike, PhaseAfter} {
		r.SaveP99Ms[ph], r.PostP99Ms[ph] = medianOf(saves[ph]), medianOf(posts[ph])
	}
	r.backlogFigures(shape, backlog)
	r.targets()
	return r
}

// backlogFigures finds the backlog's peak and when it drained.
func (r *SpikeReport) backlogFigures(shape SpikeShape, backlog []BacklogSample) {
	var calm int64 // the backlog's largest sample before the spike
	end := shape.Before + shape.During
	for _, b := range backlog {
		r.PeakBacklog, r.PeakBacklogAgeS = max(r.PeakBacklog, b.Drafts), max(r.PeakBacklogAgeS, round3(b.OldestAgeS))
		if b.At < shape.Before {
			calm = max(calm, b.Drafts)
		}
		if b.At >= end && r.DrainedAfterS < 0 && b.Drafts <= calm {
			r.DrainedAfterS = round3((b.At - end).Seconds())
		}
	}
}

// sampleIn returns the last sample taken in [from, to).
func sampleIn(samples []BacklogSample, from, to time.Duration) (BacklogSample, bool) {
	var out BacklogSample
	ok := false
	for _, s := range samples {
		if s.At >= from && s.At < to {
			out, ok = s, true
		}
	}
	return out, ok
}

func medianOf(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

// targets are issue 25's for a spike: save p99 during the spike at most
// 1.5× its level before, and the backlog gone within 2 minutes after.
func (r *SpikeReport) targets() {
	before, during := r.SaveP99Ms[PhaseBefore], r.SaveP99Ms[PhaseSpike]
	ratio := 0.0
	if before > 0 {
		ratio = during / before
	}
	r.Targets = append(r.Targets, Target{Name: "save p99 during the spike vs before", Want: "≤ 1.5×",
		Got: fmt.Sprintf("%.2f× (%.1f vs %.1f ms)", ratio, during, before), Met: before > 0 && ratio <= 1.5})
	got := "not within the run"
	if r.DrainedAfterS >= 0 {
		got = fmt.Sprintf("%.1f s (peak %d drafts, oldest %.1f s)", r.DrainedAfterS, r.PeakBacklog, r.PeakBacklogAgeS)
	}
	r.Targets = append(r.Targets, Target{Name: "backlog gone after the spike", Want: "≤ 120 s", Got: got,
		Met: r.DrainedAfterS >= 0 && r.DrainedAfterS <= 120})
	exact := r.Result.Check != nil && r.Result.Check.Exact && r.Result.Check.Error == ""
	r.Targets = append(r.Targets, Target{Name: "counts at the end", Want: "exact", Got: map[bool]string{true: "exact", false: "not exact"}[exact], Met: exact})
}

// WriteText writes the per-second table, the phase figures and the targets.
func (r *SpikeReport) WriteText(w io.Writer) error {
	var b strings.Builder
	s := r.Shape
	fmt.Fprintf(&b, "spike on the %s path: %.0f works/s (half of capacity %.0f) for %v, %.0f works/s for %v, %.0f works/s for %v (open loop)\n\n",
		r.Path, s.Capacity/2, s.Capacity, s.Before, 2*s.Capacity, s.During, s.Capacity/2, s.After)
	fmt.Fprintf(&b, "%5s %-6s %7s %9s %14s %14s %9s %14s %11s\n", "t (s)", "phase", "rate/s", "posted/s", "save p99 (ms)", "Post p99 (ms)", "backlog", "oldest age (s)", "limit (/s)")
	for _, x := range r.Seconds {
		backlog, age, limit := "-", "-", "-"
		if x.Backlog >= 0 {
			backlog, age = formatNum("%.0f", float64(x.Backlog)), formatNum("%.1f", x.BacklogAgeS)
		}
		if x.Limit > 0 {
			limit = formatNum("%.0f", x.Limit)
		}
		fmt.Fprintf(&b, "%5d %-6s %7.0f %9d %14s %14s %9s %14s %11s\n", x.Second, x.Phase, x.RatePerSec, x.Completed,
			formatNum("%.1f", x.SaveP99Ms), formatNum("%.1f", x.PostP99Ms), backlog, age, limit)
	}
	b.WriteString("\nmedian of the per-second p99s by phase:\n")
	for _, ph := range []string{PhaseBefore, PhaseSpike, PhaseAfter} {
		fmt.Fprintf(&b, "  %-6s save p99 %8s ms   Post p99 %8s ms\n", ph, formatNum("%.1f", r.SaveP99Ms[ph]), formatNum("%.1f", r.PostP99Ms[ph]))
	}
	fmt.Fprintf(&b, "backlog: peak %d drafts, oldest %.1f s; ", r.PeakBacklog, r.PeakBacklogAgeS)
	if r.DrainedAfterS >= 0 {
		fmt.Fprintf(&b, "back to its level before the spike %.1f s after the spike ended\n", r.DrainedAfterS)
	} else {
		b.WriteString("not back to its level before the spike within the run\n")
	}
	b.WriteString("\ntargets:\n")
	for _, t := range r.Targets {
		fmt.Fprintf(&b, "  %-7s %-40s want %-8s got %s\n", t.mark("MET", "MISSED"), t.Name, t.Want, t.Got)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the report, indented, to path.
func (r *SpikeReport) WriteJSON(path string) error { return writeJSON(path, r) }
