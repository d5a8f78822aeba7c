package loadgen

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/tw"
)

// Scenarios: one party's load beside normal authors, each showing one of
// the service's defences (docs/operations.md, "Limits and timeouts").
const (
	// ScenarioRetryStorm: one token hammering as fast as it can, ignoring
	// Retry-After, beside normal authors; and the same without the storm.
	ScenarioRetryStorm = "retry-storm"
	// ScenarioBulkImport: one author submitting thousands of posts at
	// once beside normal authors posting at a steady rate.
	ScenarioBulkImport = "bulk-import"
	// ScenarioFlood: thousands of connections idle or sending slow bodies
	// beside normal authors, then the normal authors alone.
	ScenarioFlood = "flood"
)

// Scenarios lists every scenario.
var Scenarios = []string{ScenarioRetryStorm, ScenarioBulkImport, ScenarioFlood}

// Names of a scenario's runs and classes.
const (
	PhaseCalm       = "calm"
	PhaseStorm      = "storm"
	PhaseBulkImport = "bulk-import"
	PhaseFlood      = "flood"
	PhaseAfterFlood = "after-flood"

	ClassNormal = "normal"
	ClassBulk   = "bulk"
)

// ScenarioReport is one `tagcount loadgen --scenario` invocation.
type ScenarioReport struct {
	Scenario string         `json:"scenario"`
	Command  string         `json:"command"`
	Started  time.Time      `json:"started"`
	Machine  Machine        `json:"machine"`
	Settings []Setting      `json:"settings"`
	Runs     []*ScenarioRun `json:"runs"`
	Targets  []Target       `json:"targets"`
}

// Setting is one of the service's or the scenario's settings, as shown.
type Setting struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// ScenarioRun is one run of a scenario on its own fresh service.
type ScenarioRun struct {
	Name    string         `json:"name"`
	Classes []*ClassResult `json:"classes"`
	Storm   *StormResult   `json:"storm,omitempty"`
	Flood   *FloodResult   `json:"flood,omitempty"`
	// Rejections is what the storm's rejected requests cost the service,
	// measured in a window with the storm alone.
	Rejections *RejectionCost `json:"rejection_cost,omitempty"`
	Recovery   *Recovery      `json:"recovery,omitempty"`
	Check      *Check         `json:"check,omitempty"`
}

// ClassResult is what one class of clients measured in a run.
type ClassResult struct {
	Class  string  `json:"class"`
	Result *Result `json:"result"`
}

// Class returns the result of class in run, or nil.
func (sr *ScenarioRun) Class(class string) *Result {
	for _, c := range sr.Classes {
		if c.Class == class {
			return c.Result
		}
	}
	return nil
}

// RejectionCost is the CPU the service spent answering a storm with 429s.
// The storm runs in the service's process, so its connections' own CPU
// (measured per thread) and the process's CPU over as long a window with
// no load are taken off the process's CPU.
type RejectionCost struct {
	Seconds           float64 `json:"window_s"`
	Requests          int64   `json:"requests"`
	Rejected          int64   `json:"rejected_429"`
	ProcessCPUSeconds float64 `json:"process_cpu_s"`
	ClientCPUSeconds  float64 `json:"storm_client_cpu_s"`
	IdleCPUSeconds    float64 `json:"idle_cpu_s"`
	ServiceCPUSeconds float64 `json:"service_cpu_s"`
	ServiceCores      float64 `json:"service_cores"`
	// MicrosPerRejection is the service's CPU per 429, in microseconds.
	MicrosPerRejection float64 `json:"service_cpu_us_per_429"`
	// RedisCPUSeconds is the limiter's Redis server's CPU during the
	// window (shared with other clients of that Redis); -1 when unknown.
	RedisCPUSeconds float64 `json:"redis_cpu_s"`
}

// Recovery is how the service came back after a flood stopped.
type Recovery struct {
	// Seconds from the flood's end until no request was in flight but the
	// normal authors' and no body held: -1 when that never happened.
	Seconds float64 `json:"s"`
	// InFlightDuring and BodyBytesDuring are the peaks sampled during the
	// flood.
	InFlightDuring  float64 `json:"peak_in_flight"`
	BodyBytesDuring float64 `json:"peak_body_bytes_in_flight"`
	// Shed is the requests answered 503 overloaded during the flood, by
	// reason (tagcount_http_shed_total).
	Shed map[string]float64 `json:"shed,omitempty"`
}

// Finish evaluates the scenario's targets.
func (rep *ScenarioReport) Finish() { rep.Targets = ScenarioTargets(rep) }

// Run returns the run named name, or nil.
func (rep *ScenarioReport) Run(name string) *ScenarioRun {
	for _, r := range rep.Runs {
		if r.Name == name {
			return r
		}
	}
	return nil
}

// WriteJSON writes the report, indented, to path.
func (rep *ScenarioReport) WriteJSON(path string) error { return writeJSON(path, rep) }

// WriteText writes the report as tables: per run, a row per class.
func (rep *ScenarioReport) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "scenario %s — %s\n", rep.Scenario, rep.Command)
	fmt.Fprintf(&b, "machine: %d CPUs, %s, %s\n", rep.Machine.CPUs, rep.Machine.CPUModel, rep.Machine.Database)
	for _, s := range rep.Settings {
		fmt.Fprintf(&b, "  %s: %s\n", s.Name, s.Value)
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	for _, run := range rep.Runs {
		if err := run.writeText(w); err != nil {
			return err
		}
	}
	fmt.Fprintln(w, "\ntargets:")
	for _, t := range rep.Targets {
		mark := "MET    "
		if !t.Met {
			mark = "NOT MET"
		}
		fmt.Fprintf(w, "  %s %s: want %s, got %s\n", mark, t.Name, t.Want, t.Got)
	}
	return nil
}

func (sr *ScenarioRun) writeText(w io.Writer) error {
	fmt.Fprintf(w, "\nrun %q\n", sr.Name)
	tbl := tablewriter.NewTable(w, tablewriter.WithHeaderAutoFormat(tw.Off))
	tbl.Header("class", "works", "save p50/p99 ms", "Post p50/p99 ms", "Post→posted p50/p99 ms", "answers")
	for _, c := range sr.Classes {
		r := c.Result
		if err := tbl.Append(c.Class,
			fmt.Sprintf("%d started, %d posted, %d failed, %d not posted", r.Works.Started, r.Works.Completed, r.Works.Failed, r.Works.NotCompleted),
			pair(r.Latency["save"]), pair(r.Latency["post"]), pair(r.PostToPosted), statusLine(r.Statuses)); err != nil {
			return err
		}
	}
	if sr.Storm != nil {
		s := sr.Storm
		if err := tbl.Append("storm", fmt.Sprintf("%d requests on %d connections (%.0f/s)", s.Requests, s.Conns, s.PerSec),
			"", "", "", statusLine(s.Statuses)); err != nil {
			return err
		}
	}
	if sr.Flood != nil {
		f := sr.Flood
		if err := tbl.Append("flood", fmt.Sprintf("%d connections held, %d opened, %d closed unanswered", f.Conns, f.Opened, f.ClosedUnanswered),
			"", "", "", statusLine(f.Statuses)); err != nil {
			return err
		}
	}
	if err := tbl.Render(); err != nil {
		return err
	}
	sr.writeNotes(w)
	return nil
}

func (sr *ScenarioRun) writeNotes(w io.Writer) {
	if normal := sr.Class(ClassNormal); normal != nil {
		res := normal.Resources
		fmt.Fprintf(w, "  process: %.2f cores, peak RSS %s (VmHWM %s)\n", res.CPUCores, mib(res.PeakRSS), mib(res.ProcessHWM))
	}
	if c := sr.Rejections; c != nil {
		fmt.Fprintf(w, "  storm alone for %.1fs: %d requests, %d answered 429; service CPU %.3fs (%.2f cores) = process %.3fs − storm client %.3fs − idle %.3fs: %.1f µs per 429; Redis %.3fs\n",
			c.Seconds, c.Requests, c.Rejected, c.ServiceCPUSeconds, c.ServiceCores, c.ProcessCPUSeconds, c.ClientCPUSeconds,
			c.IdleCPUSeconds, c.MicrosPerRejection, c.RedisCPUSeconds)
	}
	if r := sr.Recovery; r != nil {
		fmt.Fprintf(w, "  during the flood: peak %.0f requests in flight, %s of bodies held, shed %v; recovered %.1fs after it stopped\n",
			r.InFlightDuring, mib(int64(r.BodyBytesDuring)), r.Shed, r.Seconds)
	}
	if c := sr.Check; c != nil {
		fmt.Fprintf(w, "  counts exact: %v (%d tags, %d wrong, %d works, %d drafts still queued)\n", c.Exact, c.Tags, c.WrongTags, c.Works, c.QueuedDrafts)
	}
}

func pair(l LatencySummary) string {
	if l.Count == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f / %.1f", l.P50, l.P99)
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

// statusLine lists answers by status, in status order.
func statusLine(statuses map[string]int64) string {
	keys := make([]string, 0, len(statuses))
	for k := range statuses {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "×" + strconv.FormatInt(statuses[k], 10)
	}
	return strings.Join(parts, " ")
}

// ScenarioTargets evaluates the goals of issue 12 on a scenario's runs
// (goals whose runs are missing are left out).
func ScenarioTargets(rep *ScenarioReport) []Target {
	switch rep.Scenario {
	case ScenarioRetryStorm:
		return stormTargets(rep.Run(PhaseCalm), rep.Run(PhaseStorm))
	case ScenarioBulkImport:
		return bulkTargets(rep.Run(PhaseBulkImport))
	case ScenarioFlood:
		return floodTargets(rep.Run(PhaseFlood), rep.Run(PhaseAfterFlood))
	}
	return nil
}

func stormTargets(calm, storm *ScenarioRun) []Target {
	if calm == nil || storm == nil || calm.Class(ClassNormal) == nil || storm.Class(ClassNormal) == nil {
		return nil
	}
	var ts []Target
	for _, op := range []string{"post", "save"} {
		c, s := calm.Class(ClassNormal).Latency[op].P99, storm.Class(ClassNormal).Latency[op].P99
		x := s / c
		ts = append(ts, Target{fmt.Sprintf("normal authors' %s p99 with the storm ÷ without", opName(op)), "≤ 1.25×",
			fmt.Sprintf("%.2f× (%.1f ms ÷ %.1f ms)", x, s, c), c > 0 && x <= 1.25})
	}
	if st := storm.Storm; st != nil {
		n := st.Statuses["429"]
		ts = append(ts, Target{"the storming token gets 429 with Retry-After", "all of its 429s carry Retry-After",
			fmt.Sprintf("%d of %d requests answered 429, %d without Retry-After", n, st.Requests, st.Missing429RetryAfter),
			n > 0 && st.Missing429RetryAfter == 0})
	}
	if c := storm.Rejections; c != nil {
		ts = append(ts, Target{"service CPU spent on the storm's rejected requests", "reported",
			fmt.Sprintf("%.1f µs per 429, %.2f cores at %.0f rejections/s", c.MicrosPerRejection, c.ServiceCores,
				float64(c.Rejected)/max(c.Seconds, 1e-9)), c.Rejected > 0})
	}
	return ts
}

func opName(op string) string {
	if op == "post" {
		return "Post"
	}
	return op
}

func bulkTargets(run *ScenarioRun) []Target {
	if run == nil || run.Class(ClassNormal) == nil || run.Class(ClassBulk) == nil {
		return nil
	}
	normal, bulk := run.Class(ClassNormal), run.Class(ClassBulk)
	p99 := normal.PostToPosted.P99
	ts := []Target{
		{"normal authors' Post→posted p99 while the bulk posts drain", "< 2 s", fmt.Sprintf("%.0f ms", p99),
			normal.PostToPosted.Count > 0 && p99 < 2000},
		{"bulk posts posted", fmt.Sprintf("all %d", bulk.Works.Started), fmt.Sprintf("%d", bulk.Works.Completed),
			bulk.Works.Started > 0 && bulk.Works.Completed == bulk.Works.Started},
	}
	if c := run.Check; c != nil {
		ts = append(ts, Target{"counts exact", "every tag", fmt.Sprintf("%d of %d tags wrong, %d drafts still queued", c.WrongTags, c.Tags, c.QueuedDrafts),
			c.Exact && c.QueuedDrafts == 0 && c.Error == ""})
	}
	return ts
}

func floodTargets(flood, after *ScenarioRun) []Target {
	if flood == nil || flood.Class(ClassNormal) == nil {
		return nil
	}
	normal := flood.Class(ClassNormal)
	rss := normal.Resources.PeakRSS
	answered := normal.Statuses["transport"] == 0 && normal.MissingRetryAfter == 0
	ts := []Target{
		{"process peak RSS during the flood", "< 512 MiB", mib(rss), rss > 0 && rss < 512<<20},
		{"normal authors answered during the flood", "every request, 503 with Retry-After at worst",
			fmt.Sprintf("%s; %d without an answer, %d 429/503 without Retry-After", statusLine(normal.Statuses),
				normal.Statuses["transport"], normal.MissingRetryAfter), answered},
	}
	if after != nil && after.Class(ClassNormal) != nil {
		a := after.Class(ClassNormal)
		bad := a.Statuses["503"] + a.Statuses["transport"]
		got := fmt.Sprintf("%s after the flood", statusLine(a.Statuses))
		if r := flood.Recovery; r != nil {
			got = fmt.Sprintf("in %.1f s; %s", r.Seconds, got)
		}
		ts = append(ts, Target{"the service recovers by itself when the flood stops", "no 503 and no failure afterwards", got,
			bad == 0 && a.Works.Failed == 0 && a.Works.Started > 0})
	}
	return ts
}
