package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// The phases of a cutover or rollout scenario, as its samples name them.
const (
	PhaseSteady       = "steady"            // the flag at 0 %, before the plan
	PhaseRollout      = "rollout"           // the plan running
	PhaseReconcile    = "reconcile"         // the reconcile running, the plan over
	PhaseBoth         = "rollout+reconcile" // both
	PhaseFault        = "fault"             // the fault injected (rollout scenario)
	PhaseAfter        = "after"             // both over, the load going on
	PhaseLegacySteady = "legacy"            // the legacy run before the cutover (its own series)
)

// CutoverReport is a cutover or rollout scenario: the load, its series,
// the plan's and the reconcile's outcomes, the checks, and the same load on
// the legacy path when asked.
type CutoverReport struct {
	Scenario    string    `json:"scenario"`
	Command     string    `json:"command"`
	Started     time.Time `json:"started"`
	Machine     Machine   `json:"machine"`
	LoadAverage string    `json:"load_average_at_end"` // /proc/loadavg: the machine is shared
	Settings    []Setting `json:"settings"`
	// Legacy is the same load with the flag at 0 % throughout, on the same
	// database, run before the scenario (nil without --legacy-first).
	Legacy       *Result                 `json:"legacy,omitempty"`
	LegacySeries []SeriesSample          `json:"legacy_series,omitempty"`
	Run          *Result                 `json:"run"`
	Series       []SeriesSample          `json:"series"`
	Phases       map[string]PhaseLatency `json:"phases"`
	Rollout      *RolloutOutcome         `json:"rollout,omitempty"`
	Reconcile    *ReconcileOutcome       `json:"reconcile,omitempty"`
	Converged    *Convergence            `json:"converged,omitempty"`
	Targets      []Target                `json:"targets"`
}

// RolloutOutcome is the plan at the end of the scenario.
type RolloutOutcome struct {
	PlanID      int64  `json:"plan_id"`
	State       string `json:"state"`
	Percent     int    `json:"percent"`
	Steps       string `json:"steps"`
	StepsPassed int    `json:"steps_passed"`
	FailedGuard string `json:"failed_guard,omitempty"`
	Reason      string `json:"reason,omitempty"`
	// FaultAtS is when the fault was injected and EndedAtS when the plan
	// ended, seconds since the series began (0: none).
	FaultAtS float64 `json:"fault_at_s,omitempty"`
	EndedAtS float64 `json:"ended_at_s,omitempty"`
	// State is the plan as `tagcount rollout status` shows it, at the end.
	StateJSON json.RawMessage `json:"state_json,omitempty"`
}

// ReconcileOutcome is the reconcile run of a cutover.
type ReconcileOutcome struct {
	RunID       int64   `json:"run_id"`
	State       string  `json:"state"`
	StartedAtS  float64 `json:"started_at_s"`
	Seconds     float64 `json:"seconds"`
	Scanned     int64   `json:"tags_scanned"`
	Total       int64   `json:"tags_at_start"`
	TagsPerSec  float64 `json:"tags_per_s"`
	Drifted     int64   `json:"tags_drifted"`
	Corrected   int64   `json:"tags_corrected"`
	Budget      float64 `json:"corrections_per_s_budget"`
	TimedOut    bool    `json:"timed_out"`
	PeakCorrPS  float64 `json:"peak_corrections_per_s"` // of the series' intervals
	ProjectedS  float64 `json:"projected_full_s,omitempty"`
	Description string  `json:"description,omitempty"`
}

// Convergence is the end check of a cutover: every tag's four numbers
// against an independent recount, and the corrections against the
// archive's drift manifest.
type Convergence struct {
	Tags                 int `json:"tags"`
	WrongTags            int `json:"wrong_tags"`
	Corrections          int `json:"corrections"`
	Injected             int `json:"drift_injected"`
	CorrectionMismatches int `json:"correction_mismatches"`
	// Unreached counts tags still off by exactly their injected drift: an
	// unfinished reconcile never reached them (not counted as wrong).
	Unreached int      `json:"unreached_by_the_reconcile"`
	Examples  []string `json:"examples,omitempty"`
	Error     string   `json:"error,omitempty"`
	Checked   bool     `json:"corrections_checked"` // false: the reconcile did not finish
}

// InRollout and InReconcile say which phases count as during the rollout
// steps and during the reconcile.
func InRollout(phase string) bool {
	return phase == PhaseRollout || phase == PhaseBoth || phase == PhaseFault
}
func InReconcile(phase string) bool { return phase == PhaseReconcile || phase == PhaseBoth }
func inSteady(phase string) bool    { return phase == PhaseSteady }

// Finish computes the phases' figures and the targets; budget is the
// reconcile's corrections per second.
func (rep *CutoverReport) Finish(series *Series, budget float64) {
	rep.Series = series.Samples
	rep.Phases = map[string]PhaseLatency{
		PhaseSteady: series.Over(inSteady), PhaseRollout: series.Over(InRollout), PhaseReconcile: series.Over(InReconcile),
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		rep.LoadAverage = strings.TrimSpace(string(b))
	}
	rep.Targets = rep.targets(budget)
}

func (rep *CutoverReport) targets(budget float64) []Target {
	var ts []Target
	if r := rep.Run; r != nil {
		share := 0.0
		if r.Works.Accepted > 0 {
			share = float64(r.Works.Completed) / float64(r.Works.Accepted)
		}
		ts = append(ts, Target{"completed / accepted posts", "≥ 0.97",
			fmt.Sprintf("%.4f (%d / %d)", share, r.Works.Completed, r.Works.Accepted), share >= 0.97})
		bad := other5xx(r.Statuses) + r.MissingRetryAfter
		ts = append(ts, Target{"5xx other than 503 with Retry-After", "0", fmt.Sprint(bad), bad == 0})
	}
	steady := rep.Phases[PhaseSteady]
	ratio := func(name, phase string, got, base float64) Target {
		x := 0.0
		if base > 0 {
			x = got / base
		}
		return Target{fmt.Sprintf("%s during %s / steady", name, phase), "≤ 1.5×",
			fmt.Sprintf("%.2f× (%.1f / %.1f)", x, got, base), base > 0 && x <= 1.5}
	}
	for _, ph := range []string{PhaseRollout, PhaseReconcile} {
		p := rep.Phases[ph]
		if p.Posts == 0 {
			continue
		}
		ts = append(ts, ratio("Post p99 (ms)", ph, p.PostP99Ms, steady.PostP99Ms), ratio("save p99 (ms)", ph, p.SaveP99Ms, steady.SaveP99Ms))
	}
	if rec := rep.Reconcile; rec != nil {
		ts = append(ts, Target{"reconcile corrections/s, every interval", fmt.Sprintf("≤ %g", budget),
			fmt.Sprintf("peak %.1f", rec.PeakCorrPS), rec.PeakCorrPS <= budget})
		if p := rep.Phases[PhaseReconcile]; p.Posts > 0 {
			t := ratio("DB rows written/s", PhaseReconcile, p.RowsPerSec, steady.RowsPerSec)
			if p.PostsPerSec > 0 && steady.PostsPerSec > 0 && steady.RowsPerSec > 0 {
				// The load's own rate differs between phases (a closed loop
				// follows the service): per completed post is the same work.
				t.Got += fmt.Sprintf("; per completed post %.2f×", (p.RowsPerSec/p.PostsPerSec)/(steady.RowsPerSec/steady.PostsPerSec))
			}
			ts = append(ts, t)
		}
		ts = append(ts, Target{"reconcile finished", "done", fmt.Sprintf("%s, %d of %d tags scanned", rec.State, rec.Scanned, rec.Total),
			rec.State == "done"})
	}
	if c := rep.Converged; c != nil {
		got := fmt.Sprintf("%d of %d tags wrong", c.WrongTags, c.Tags)
		if c.Unreached > 0 {
			got += fmt.Sprintf(" (%d more still off by exactly their injected drift: the reconcile did not reach them)", c.Unreached)
		}
		if c.Error != "" {
			got = "check failed: " + c.Error
		}
		ts = append(ts, Target{"every tag's four numbers = independent recount", "all", got, c.Error == "" && c.WrongTags == 0})
		if c.Checked {
			ts = append(ts, Target{"corrections = drift injected, tag for tag", "equal",
				fmt.Sprintf("%d corrections, %d injected, %d differ", c.Corrections, c.Injected, c.CorrectionMismatches),
				c.CorrectionMismatches == 0 && c.Corrections == c.Injected})
		}
	}
	return append(ts, rep.rolloutTargets()...)
}

// rolloutTargets: a healthy plan reaches 100 %; a faulted one rolls back.
func (rep *CutoverReport) rolloutTargets() []Target {
	ro := rep.Rollout
	if ro == nil {
		return nil
	}
	if ro.FaultAtS > 0 {
		return []Target{{"plan rolled back after the fault", "rolled_back", fmt.Sprintf("%s at %d %% (%s)", ro.State, ro.Percent, ro.FailedGuard),
			ro.State == "rolled_back"}}
	}
	return []Target{{"plan walked every step", "done at 100 %", fmt.Sprintf("%s at %d %%, %d steps passed", ro.State, ro.Percent, ro.StepsPassed),
		ro.State == "done" && ro.Percent == 100}}
}

// other5xx counts the 5xx answers other than 503 (a 503 without
// Retry-After is counted by MissingRetryAfter).
func other5xx(statuses map[string]int64) int64 {
	var n int64
	for code, c := range statuses {
		if len(code) == 3 && code[0] == '5' && code != "503" {
			n += c
		}
	}
	return n
}

// WriteJSON writes the whole report, indented, to path.
func (rep *CutoverReport) WriteJSON(path string) error {
	return writeJSON(path, rep)
}

// WriteText writes the summary, the phases, the legacy comparison and the
// targets for a terminal (the series is in the Markdown and the JSON).
func (rep *CutoverReport) WriteText(w io.Writer) error { return rep.write(w, false) }

// WriteMarkdown writes the same as WriteText as Markdown, and the series
// as a table.
func (rep *CutoverReport) WriteMarkdown(w io.Writer) error { return rep.write(w, true) }

func (rep *CutoverReport) write(w io.Writer, markdown bool) error {
	var b strings.Builder
	item := "  %s: %s\n"
	if markdown {
		fmt.Fprintf(&b, "`%s`\n\n", rep.Command)
		item = "- %s: %s\n"
	}
	fmt.Fprintf(&b, "%s scenario; load average at the end %s (%d CPUs, shared)\n\n", rep.Scenario, rep.LoadAverage, rep.Machine.CPUs)
	for _, s := range rep.Settings {
		fmt.Fprintf(&b, item, s.Name, s.Value)
	}
	b.WriteString("\n")
	writeRows(&b, rep.summaryRows(), markdown, false)
	rep.writeOutcomes(&b)
	writeTargets(&b, rep.Targets, markdown)
	if markdown {
		b.WriteString("\nSeries (one row per interval):\n\n")
		writeRows(&b, seriesRows(rep.Series), true, false)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func (rep *CutoverReport) writeOutcomes(b *strings.Builder) {
	if ro := rep.Rollout; ro != nil {
		fmt.Fprintf(b, "\nrollout plan %d: %s at %d %% (steps %s, %d passed)", ro.PlanID, ro.State, ro.Percent, ro.Steps, ro.StepsPassed)
		if ro.Reason != "" {
			fmt.Fprintf(b, "; %s", ro.Reason)
		}
		b.WriteString("\n")
	}
	if rc := rep.Reconcile; rc != nil {
		fmt.Fprintf(b, "reconcile run %d: %s after %.0f s, %d of %d tags scanned (%.1f tags/s), %d drifted, %d corrected; %s\n",
			rc.RunID, rc.State, rc.Seconds, rc.Scanned, rc.Total, rc.TagsPerSec, rc.Drifted, rc.Corrected, rc.Description)
	}
	if c := rep.Converged; c != nil && len(c.Examples) > 0 {
		fmt.Fprintf(b, "convergence examples: %s\n", strings.Join(c.Examples, "; "))
	}
}

// summaryRows are the phases side by side, and the legacy run's figures
// beside the scenario's.
func (rep *CutoverReport) summaryRows() [][]string {
	phases := []string{PhaseSteady, PhaseRollout, PhaseReconcile}
	head := []string{"figure"}
	for _, p := range phases {
		head = append(head, p)
	}
	rows := [][]string{head}
	add := func(name, format string, f func(PhaseLatency) float64) {
		row := []string{name}
		for _, p := range phases {
			row = append(row, formatNum(format, f(rep.Phases[p])))
		}
		rows = append(rows, row)
	}
	add("completed posts/s (mean)", "%.1f", func(p PhaseLatency) float64 { return p.PostsPerSec })
	add("Post p99 (ms)", "%.1f", func(p PhaseLatency) float64 { return p.PostP99Ms })
	add("save p99 (ms)", "%.1f", func(p PhaseLatency) float64 { return p.SaveP99Ms })
	add("DB rows written/s (mean)", "%.0f", func(p PhaseLatency) float64 { return p.RowsPerSec })
	add("DB rows written / completed post", "%.1f", func(p PhaseLatency) float64 {
		if p.PostsPerSec == 0 {
			return 0
		}
		return p.RowsPerSec / p.PostsPerSec
	})
	add("Posts in the phase", "%.0f", func(p PhaseLatency) float64 { return float64(p.Posts) })
	if rep.Legacy != nil && rep.Run != nil {
		rows = append(rows, []string{"", "", "", ""}, []string{"whole run", "legacy (flag 0 %)", rep.Scenario, "ratio"})
		rows = append(rows, legacyRows(rep.Legacy, rep.Run)...)
	}
	return rows
}

// legacyRows compares the legacy run with the scenario's run.
func legacyRows(l, r *Result) [][]string {
	row := func(name, format string, f func(*Result) float64) []string {
		a, b := f(l), f(r)
		x := "-"
		if a > 0 {
			x = fmt.Sprintf("%.2f×", b/a)
		}
		return []string{name, formatNum(format, a), formatNum(format, b), x}
	}
	return [][]string{
		row("completed posts/s", "%.1f", func(r *Result) float64 { return r.PostsPerSec }),
		row("Post p99 (ms)", "%.1f", func(r *Result) float64 { return r.Latency["post"].P99 }),
		row("save p99 (ms)", "%.1f", func(r *Result) float64 { return r.Latency["save"].P99 }),
		row("deadlocks", "%.0f", func(r *Result) float64 { return float64(r.Errors.Deadlock) }),
		row("lock-wait timeouts", "%.0f", func(r *Result) float64 { return float64(r.Errors.LockWait) }),
		row("DB row-lock waits (server-wide)", "%.0f", func(r *Result) float64 { return rowLockWaits(r) }),
		// The runs differ in length: per completed post is the comparison.
		row("deadlocks / 1,000 completed posts", "%.2f", func(r *Result) float64 { return perPost(r, 1000*float64(r.Errors.Deadlock)) }),
		row("DB row-lock waits / completed post", "%.2f", func(r *Result) float64 { return perPost(r, rowLockWaits(r)) }),
	}
}

func rowLockWaits(r *Result) float64 {
	if r.Server == nil {
		return 0
	}
	return float64(r.Server.RowLockWaits)
}

func perPost(r *Result, v float64) float64 {
	if r.Works.Completed == 0 {
		return 0
	}
	return v / float64(r.Works.Completed)
}

// seriesRows is the series as a table.
func seriesRows(samples []SeriesSample) [][]string {
	rows := [][]string{{"t (s)", "phase", "rollout %", "posts/s", "Post p99 ms", "save p99 ms", "count p99 ms", "rows/s posting",
		"counter", "reconcile", "wrangling", "DB CPU", "outbox rows", "outbox age s", "RSS MiB", "heap MiB", "reconcile %",
		"corr/s", "guards (value/bound)"}}
	for _, s := range samples {
		var g []string
		for _, gv := range s.Guards {
			g = append(g, fmt.Sprintf("%s %.3g/%.3g", gv.Name, gv.Value, gv.Bound))
		}
		slices.Sort(g)
		rows = append(rows, []string{fmt.Sprintf("%.0f", s.T), s.Phase, fmt.Sprint(s.RolloutPercent), fmt.Sprintf("%.1f", s.PostsPerSec),
			fmt.Sprintf("%.1f", s.PostP99Ms), fmt.Sprintf("%.1f", s.SaveP99Ms), fmt.Sprintf("%.0f", s.CountP99Ms),
			fmt.Sprintf("%.0f", s.Rows.Posting), fmt.Sprintf("%.0f", s.Rows.Counter), fmt.Sprintf("%.0f", s.Rows.Reconcile),
			fmt.Sprintf("%.0f", s.Rows.Wrangling), fmt.Sprintf("%.2f", s.DBCores), fmt.Sprint(s.OutboxRows), fmt.Sprintf("%.1f", s.OutboxAgeS),
			fmt.Sprintf("%.0f", s.RSSMiB), fmt.Sprintf("%.0f", s.HeapMiB), fmt.Sprintf("%.1f", 100*s.ReconcileDone),
			fmt.Sprintf("%.1f", s.CorrectionsPerS), strings.Join(g, ", ")})
	}
	return rows
}

// writeRows writes rows aligned for a terminal, a line under the header,
// or as a Markdown table (numbers right-aligned when numeric).
func writeRows(b *strings.Builder, rows [][]string, markdown, numeric bool) {
	if len(rows) == 0 {
		return
	}
	if markdown {
		align := " --- |"
		if numeric {
			align = " ---: |"
		}
		for n, row := range rows {
			b.WriteString("|")
			for _, c := range row {
				b.WriteString(" " + strings.ReplaceAll(c, "|", `\|`) + " |")
			}
			b.WriteByte('\n')
			if n == 0 {
				b.WriteString("| --- |" + strings.Repeat(align, len(row)-1) + "\n")
			}
		}
		return
	}
	widths := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, c := range row {
			widths[i] = max(widths[i], runeLen(c))
		}
	}
	for n, row := range rows {
		for i, c := range row {
			pad := strings.Repeat(" ", widths[i]-runeLen(c))
			if i == 0 {
				b.WriteString(c + pad)
			} else {
				b.WriteString("  " + pad + c)
			}
		}
		b.WriteByte('\n')
		if n == 0 {
			total := 0
			for _, wd := range widths {
				total += wd + 2
			}
			b.WriteString(strings.Repeat("-", total-2) + "\n")
		}
	}
}
