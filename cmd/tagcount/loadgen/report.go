package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
	"time"
)

// Report is a whole loadgen invocation: the same workload on each path, and
// the machine's ceiling.
type Report struct {
	Command  string          `json:"command"`
	Started  time.Time       `json:"started"`
	Machine  Machine         `json:"machine"`
	Workload WorkloadOptions `json:"workload"`
	Results  []*Result       `json:"results"`
	Ceiling  *Ceiling        `json:"ceiling,omitempty"`
	Targets  []Target        `json:"targets,omitempty"`
	// DBLink is the network hop modelled between the in-process service
	// and its database (--db-latency) for every path and the ceiling; nil
	// without one.
	DBLink *DBLink `json:"db_link,omitempty"`
	// Capacity is the capacity search of --find-capacity, which runs
	// probes instead of Results.
	Capacity *CapacityReport `json:"capacity,omitempty"`
}

// Machine describes where a report was measured.
type Machine struct {
	CPUs      int    `json:"cpus"`
	MemTotal  int64  `json:"mem_total_bytes"`
	CPUModel  string `json:"cpu_model"`
	OS        string `json:"os"`
	Kernel    string `json:"kernel"`
	GoVersion string `json:"go"`
	Database  string `json:"database"`
}

// ThisMachine describes the machine this process runs on; dbVersion is the
// database server's VERSION().
func ThisMachine(dbVersion string) Machine {
	m := Machine{CPUs: runtime.NumCPU(), OS: runtime.GOOS + "/" + runtime.GOARCH, GoVersion: runtime.Version(), Database: dbVersion}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(string(b), "MemTotal: %d kB", &kb)
		m.MemTotal = kb * 1024
	}
	return m
}

// Result returns the result of path, or nil.
func (rep *Report) Result(path string) *Result {
	for _, r := range rep.Results {
		if r.Path == path {
			return r
		}
	}
	return nil
}

// Finish computes what depends on several results: each path's share of
// the ceiling, and the targets.
func (rep *Report) Finish() {
	if rep.Ceiling != nil && rep.Ceiling.PostsPerSec > 0 {
		for _, r := range rep.Results {
			r.CeilingFraction = round3(r.PostsPerSec / rep.Ceiling.PostsPerSec)
		}
	}
	rep.Targets = Targets(rep.Result("legacy"), rep.Result("new"))
	if rep.Capacity != nil {
		rep.Capacity.Finish()
	}
}

// Target is one goal of issue 6 and whether the run met it.
type Target struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
}

// mark returns met or missed, as the target was.
func (t Target) mark(met, missed string) string {
	if t.Met {
		return met
	}
	return missed
}

// Targets evaluates the benchmark's goals on the legacy and new results
// (either may be nil; goals needing a missing one are left out).
func Targets(legacy, nw *Result) []Target {
	var ts []Target
	if nw != nil {
		if legacy != nil && legacy.PostsPerSec > 0 {
			x := nw.PostsPerSec / legacy.PostsPerSec
			ts = append(ts, Target{"new vs legacy completed posts/s", "≥ 20×", fmt.Sprintf("%.1f×", x), x >= 20})
		}
		dl := nw.Errors.Deadlock + nw.Errors.LockWait
		ts = append(ts,
			Target{"new path deadlocks + lock-wait timeouts", "0", fmt.Sprint(dl), dl == 0},
			Target{"new path completed posts/s", "≥ 1,000", fmt.Sprintf("%.0f", nw.PostsPerSec), nw.PostsPerSec >= 1000},
			Target{"new path Post p99", "< 50 ms", fmt.Sprintf("%.1f ms", nw.Latency["post"].P99), nw.Latency["post"].Count > 0 && nw.Latency["post"].P99 < 50},
			Target{"new path small-tag count visible p99", "< 2 s", fmt.Sprintf("%.0f ms (%d timeouts)", nw.PostToCount.P99, nw.Works.ProbeTimeout),
				nw.PostToCount.Count > 0 && nw.PostToCount.P99 < 2000 && nw.Works.ProbeTimeout == 0},
		)
	}
	for _, r := range []*Result{legacy, nw} {
		if r == nil || r.Check == nil {
			continue
		}
		got := "exact"
		if !r.Check.Exact {
			got = fmt.Sprintf("%d wrong tags", r.Check.WrongTags)
			if r.Check.Error != "" {
				got = "check failed: " + r.Check.Error
			}
		}
		ts = append(ts, Target{r.Path + " path counts at the end", "exact", got, r.Check.Exact && r.Check.Error == ""})
	}
	return ts
}

// figure is one row of the table.
type figure struct {
	name     string
	val      func(r *Result) (float64, bool)
	fmt      string
	text     func(r *Result) string // instead of val, for non-numeric rows
	ratio    bool
	optional bool // left out when no path has a value
}

func lat(get func(r *Result) LatencySummary, q func(LatencySummary) float64) func(r *Result) (float64, bool) {
	return func(r *Result) (float64, bool) {
		s := get(r)
		return q(s), s.Count > 0
	}
}

func latencyRows(name string, get func(r *Result) LatencySummary) []figure {
	return []figure{
		{name: name + " p50 (ms)", val: lat(get, func(s LatencySummary) float64 { return s.P50 }), fmt: "%.2f", ratio: true},
		{name: name + " p95 (ms)", val: lat(get, func(s LatencySummary) float64 { return s.P95 }), fmt: "%.2f", ratio: true},
		{name: name + " p99 (ms)", val: lat(get, func(s LatencySummary) float64 { return s.P99 }), fmt: "%.2f", ratio: true},
		{name: name + " max (ms)", val: lat(get, func(s LatencySummary) float64 { return s.Max }), fmt: "%.2f", ratio: true},
	}
}

func always(f func(r *Result) float64) func(r *Result) (float64, bool) {
	return func(r *Result) (float64, bool) { return f(r), true }
}

// server is a figure of the database server's status counters, when the
// run read them.
func server(f func(s *ServerWork) float64) func(r *Result) (float64, bool) {
	return func(r *Result) (float64, bool) {
		if r.Server == nil {
			return 0, false
		}
		return f(r.Server), true
	}
}

func rowsPerWork(table string) func(r *Result) (float64, bool) {
	return func(r *Result) (float64, bool) {
		w, ok := r.RowsOf(table)
		return w.PerWork, ok && w.Rows >= 0
	}
}

func figures() []figure {
	fs := []figure{
		{name: "posts completed/s", val: always(func(r *Result) float64 { return r.PostsPerSec }), fmt: "%.1f", ratio: true},
		{name: "posts accepted/s", val: always(func(r *Result) float64 { return r.AcceptedPerSec }), fmt: "%.1f", ratio: true},
		{name: "works posted", val: always(func(r *Result) float64 { return float64(r.Works.Completed) }), fmt: "%.0f", ratio: true},
		{name: "share of bare-tx ceiling", val: func(r *Result) (float64, bool) { return r.CeilingFraction, r.CeilingFraction > 0 }, fmt: "%.3f", ratio: true},
	}
	fs = append(fs, latencyRows("save", func(r *Result) LatencySummary { return r.Latency["save"] })...)
	fs = append(fs, latencyRows("post", func(r *Result) LatencySummary { return r.Latency["post"] })...)
	fs = append(fs, latencyRows("Post→work posted", func(r *Result) LatencySummary { return r.PostToPosted })...)
	fs = append(fs, latencyRows("Post→small-tag count", func(r *Result) LatencySummary { return r.PostToCount })...)
	fs = append(fs, errorFigures()...)
	fs = append(fs, resourceFigures()...)
	fs = append(fs, serverFigures()...)
	fs = append(fs, linkFigures()...)
	return append(fs, checkFigures()...)
}

func errorFigures() []figure {
	return []figure{
		{name: "small-tag count timeouts", val: always(func(r *Result) float64 { return float64(r.Works.ProbeTimeout) }), fmt: "%.0f"},
		{name: "errors: deadlock", val: always(func(r *Result) float64 { return float64(r.Errors.Deadlock) }), fmt: "%.0f", ratio: true},
		{name: "errors: lock-wait timeout", val: always(func(r *Result) float64 { return float64(r.Errors.LockWait) }), fmt: "%.0f", ratio: true},
		{name: "errors: other 5xx", val: always(func(r *Result) float64 { return float64(r.Errors.Other5xx) }), fmt: "%.0f", ratio: true},
		{name: "errors: other", val: always(func(r *Result) float64 { return float64(r.Errors.Other) }), fmt: "%.0f", ratio: true},
		{name: "requests given up", val: always(func(r *Result) float64 { return float64(r.Errors.GaveUp) }), fmt: "%.0f", ratio: true},
		{name: "works edited / deleted later", text: func(r *Result) string { return fmt.Sprintf("%d / %d", r.Works.Edited, r.Works.Deleted) }},
	}
}

func resourceFigures() []figure {
	return []figure{
		{name: "tag_counts rows written / posted work", val: rowsPerWork("tag_counts"), fmt: "%.3f", ratio: true},
		{name: "tag_events rows written / posted work", val: rowsPerWork("tag_events"), fmt: "%.3f", ratio: true},
		{name: "process CPU (s)", val: always(func(r *Result) float64 { return r.Resources.CPUSeconds }), fmt: "%.1f", ratio: true},
		{name: "process CPU / posted work (ms)", val: always(func(r *Result) float64 { return r.Resources.CPUMsPerPost }), fmt: "%.2f", ratio: true},
		{name: "database CPU (s)", val: func(r *Result) (float64, bool) { return r.Resources.DBCPUSeconds, r.Resources.DBCPUSeconds >= 0 }, fmt: "%.1f", ratio: true},
		{name: "Redis CPU (s, server-wide)", val: func(r *Result) (float64, bool) { return r.Resources.RedisCPUSeconds, r.Resources.RedisCPUSeconds >= 0 }, fmt: "%.1f", ratio: true},
		{name: "process+DB+Redis CPU / posted work (ms)", val: cpuPerPost, fmt: "%.2f", ratio: true},
		{name: "DB pool: waits for a connection", val: func(r *Result) (float64, bool) {
			return float64(poolOf(r).Waits), r.Resources.Pool != nil
		}, fmt: "%.0f", ratio: true},
		{name: "DB pool: mean wait (ms)", val: func(r *Result) (float64, bool) {
			return poolOf(r).WaitMsMean, r.Resources.Pool != nil
		}, fmt: "%.2f", ratio: true},
		{name: "DB pool: peak in use / max", text: func(r *Result) string {
			if p := r.Resources.Pool; p != nil {
				return fmt.Sprintf("%d / %d", p.PeakInUse, p.MaxOpen)
			}
			return "-"
		}},
	}
}

// serverFigures are of the database server, and of this process's memory.
func serverFigures() []figure {
	return []figure{
		{name: "DB statements / posted work (server-wide)", val: server(func(s *ServerWork) float64 { return s.StatementsPerWk }), fmt: "%.1f", ratio: true},
		{name: "Redis commands / posted work (server-wide)", val: func(r *Result) (float64, bool) {
			if r.Redis == nil {
				return 0, false
			}
			return r.Redis.CommandsPerW, true
		}, fmt: "%.1f", ratio: true},
		{name: "DB prepares / posted work (server-wide)", val: server(func(s *ServerWork) float64 { return s.PreparesPerWk }), fmt: "%.1f", ratio: true},
		{name: "DB row-lock waits (server-wide)", val: server(func(s *ServerWork) float64 { return float64(s.RowLockWaits) }), fmt: "%.0f", ratio: true},
		{name: "DB fsyncs / posted work (server-wide)", val: server(func(s *ServerWork) float64 { return s.FsyncsPerWk }), fmt: "%.2f", ratio: true},
		{name: "peak RSS (MiB)", val: always(func(r *Result) float64 { return float64(r.Resources.PeakRSS) / (1 << 20) }), fmt: "%.0f", ratio: true},
		{name: "peak Go runtime memory (MiB)", val: always(func(r *Result) float64 { return float64(r.Resources.PeakGoSys) / (1 << 20) }), fmt: "%.0f", ratio: true},
	}
}

// link is a figure of the delay line to the database, when the run had
// one.
func link(f func(u *DBLinkUse) float64) func(r *Result) (float64, bool) {
	return func(r *Result) (float64, bool) {
		if r.DBLink == nil {
			return 0, false
		}
		return f(r.DBLink), true
	}
}

// linkFigures are shown only for runs with a delay line (--db-latency).
func linkFigures() []figure {
	return []figure{
		{name: "DB link: packets / posted work", val: link(func(u *DBLinkUse) float64 { return u.PacketsPerWk }), fmt: "%.1f", ratio: true, optional: true},
		{name: "DB link: mean wake-up lateness (µs)", val: link(func(u *DBLinkUse) float64 { return u.LateUsMean }), fmt: "%.0f", ratio: true, optional: true},
		{name: "DB link: delay line CPU, est. (s)", val: link(func(u *DBLinkUse) float64 { return u.CPUSeconds }), fmt: "%.2f", ratio: true, optional: true},
		{name: "DB link: share of process CPU, est.", val: link(func(u *DBLinkUse) float64 { return u.CPUShare }), fmt: "%.3f", ratio: true, optional: true},
	}
}

func checkFigures() []figure {
	return []figure{
		{name: "counts (conservation)", text: func(r *Result) string {
			switch {
			case r.Check == nil:
				return "not checked"
			case r.Check.Error != "":
				return "check failed"
			case r.Check.Exact:
				return fmt.Sprintf("exact (%d tags)", r.Check.Tags)
			}
			return fmt.Sprintf("NOT exact: %d wrong", r.Check.WrongTags)
		}},
		{name: "outbox drained", text: func(r *Result) string {
			switch {
			case r.Check == nil || r.Check.Error != "":
				return "-"
			case r.Check.OutboxDrained:
				return "yes"
			}
			return fmt.Sprintf("no: %d rows (%d small)", r.Check.OutboxPending, r.Check.OutboxPendingSmall)
		}},
	}
}

// Table returns the report's figures as rows: a header, then one row per
// figure with one column per path and, with two or more paths, the ratio of
// the last path to the first.
func (rep *Report) Table() [][]string {
	head := []string{"figure"}
	for _, r := range rep.Results {
		head = append(head, r.Path)
	}
	withRatio := len(rep.Results) >= 2
	if withRatio {
		head = append(head, rep.Results[len(rep.Results)-1].Path+"/"+rep.Results[0].Path)
	}
	rows := [][]string{head}
	for _, f := range figures() {
		if f.optional && !rep.anyValue(f) {
			continue
		}
		row := []string{f.name}
		vals := make([]float64, len(rep.Results))
		oks := make([]bool, len(rep.Results))
		for i, r := range rep.Results {
			if f.text != nil {
				row = append(row, f.text(r))
				continue
			}
			vals[i], oks[i] = f.val(r)
			if oks[i] {
				row = append(row, formatNum(f.fmt, vals[i]))
			} else {
				row = append(row, "-")
			}
		}
		if withRatio {
			row = append(row, ratio(f, vals, oks))
		}
		rows = append(rows, row)
	}
	return rows
}

func (rep *Report) anyValue(f figure) bool {
	for _, r := range rep.Results {
		if _, ok := f.val(r); ok {
			return true
		}
	}
	return false
}

func ratio(f figure, vals []float64, oks []bool) string {
	last := len(vals) - 1
	if f.text != nil || !f.ratio || !oks[0] || !oks[last] {
		return ""
	}
	a, b := vals[0], vals[last]
	switch {
	case a == 0 && b == 0:
		return "-"
	case a == 0:
		return "∞"
	}
	x := b / a
	switch {
	case x >= 100:
		return fmt.Sprintf("%.0f×", x)
	case x >= 10:
		return fmt.Sprintf("%.1f×", x)
	}
	return fmt.Sprintf("%.3g×", x)
}

// formatNum formats with thousands separators for whole numbers.
func formatNum(format string, v float64) string {
	if math.IsInf(v, 0) || math.IsNaN(v) {
		return "-"
	}
	s := fmt.Sprintf(format, v)
	intPart, frac, _ := strings.Cut(s, ".")
	neg := strings.HasPrefix(intPart, "-")
	intPart = strings.TrimPrefix(intPart, "-")
	var b strings.Builder
	for i, c := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	out := b.String()
	if neg {
		out = "-" + out
	}
	if frac != "" {
		out += "." + frac
	}
	return out
}

// WriteText writes the table aligned for a terminal, and the ceiling and
// targets below it.
func (rep *Report) WriteText(w io.Writer) error {
	if len(rep.Results) == 0 && rep.Capacity != nil {
		return rep.Capacity.WriteText(w)
	}
	var b strings.Builder
	writeRows(&b, rep.Table(), false, true)
	rep.writeNotes(&b)
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteMarkdown writes the table as GitHub Markdown, and the ceiling and
// targets below it.
func (rep *Report) WriteMarkdown(w io.Writer) error {
	if len(rep.Results) == 0 && rep.Capacity != nil {
		io.WriteString(w, "```\n")
		if err := rep.Capacity.WriteText(w); err != nil {
			return err
		}
		_, err := io.WriteString(w, "```\n")
		return err
	}
	var b strings.Builder
	writeRows(&b, rep.Table(), true, true)
	if n := rep.linkNote(); n != "" {
		b.WriteString("\nDatabase link: " + n + "\n")
	}
	if n := rep.ceilingNote("**"); n != "" {
		b.WriteString("\nCeiling — " + n + ".\n")
	}
	writeTargets(&b, rep.Targets, true)
	_, err := io.WriteString(w, b.String())
	return err
}

func (rep *Report) writeNotes(b *strings.Builder) {
	if n := rep.linkNote(); n != "" {
		b.WriteString("\ndb link: " + n + "\n")
	}
	if n := rep.ceilingNote(""); n != "" {
		b.WriteString("\nceiling: " + n + "\n")
	}
	writeTargets(b, rep.Targets, false)
}

// writeTargets writes targets under a heading, for a terminal (MET or
// MISSED first) or as a Markdown table; nothing without targets.
func writeTargets(b *strings.Builder, targets []Target, markdown bool) {
	if len(targets) == 0 {
		return
	}
	if markdown {
		b.WriteString("\n| target | want | got | |\n| --- | --- | --- | --- |\n")
	} else {
		b.WriteString("\ntargets:\n")
	}
	for _, t := range targets {
		if markdown {
			fmt.Fprintf(b, "| %s | %s | %s | %s |\n", t.Name, t.Want, t.Got, t.mark("met", "**missed**"))
		} else {
			fmt.Fprintf(b, "  %s  %-48s want %-14s got %s\n", t.mark("MET   ", "MISSED"), t.Name, t.Want, t.Got)
		}
	}
}

// ceilingNote describes the ceiling run, with em around its rate ("**" in
// Markdown); "" without one.
func (rep *Report) ceilingNote(em string) string {
	c := rep.Ceiling
	if c == nil {
		return ""
	}
	return fmt.Sprintf("the bare posting transaction alone (no HTTP, no queue), %d concurrent: %s%s posts/s%s over %.1f s (p99 %.1f ms; %d deadlocks, %d lock-wait timeouts, %d other errors)",
		c.Concurrency, em, formatNum("%.0f", c.PostsPerSec), em, c.Seconds, c.Latency.P99, c.Errors.Deadlock, c.Errors.LockWait, c.Errors.Other5xx+c.Errors.Other)
}

// linkNote says what the modelled database hop was and how its CPU was
// estimated; "" without one.
func (rep *Report) linkNote() string {
	l := rep.DBLink
	if l == nil {
		return ""
	}
	c := l.Cost
	return fmt.Sprintf("every packet between the service and its database was delayed %.3f ms each way in this process, "+
		"for every path and the ceiling (a delay line: a round trip takes at least %.3f ms; packets in flight and other "+
		"connections do not wait for each other). \"Wake-up lateness\" is how long after their due time packets were handed on: "+
		"what the line added to the delay. Its CPU is an estimate: before the runs, %d connections ping-ponged %d-byte messages "+
		"over loopback for %.1f s directly (%.1f µs of process CPU per round trip) and %.1f s through the line (%.1f µs and "+
		"%.1f packets per round trip): %.1f µs per packet more, times the packets each path sent. An idle process pays more per timer "+
		"wake-up than a busy one, so the estimate likely errs high.",
		l.OneWayMs, 2*l.OneWayMs, c.Conns, calibrationMessage, c.PhaseSeconds, c.DirectCPUUs, c.PhaseSeconds, c.DelayCPUUs,
		c.PacketsPerRT, c.CPUUsPerPacket)
}

func runeLen(s string) int { return len([]rune(s)) }

// WriteJSON writes the whole report, indented, to path.
func (rep *Report) WriteJSON(path string) error {
	return writeJSON(path, rep)
}

// writeJSON writes v, indented, to path.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func poolOf(r *Result) PoolStats {
	if r.Resources.Pool == nil {
		return PoolStats{}
	}
	return *r.Resources.Pool
}

// cpuPerPost is the CPU of the process, the database and Redis per
// completed post: the machine's whole cost of a posted work (the servers'
// figures are server-wide).
func cpuPerPost(r *Result) (float64, bool) {
	res := r.Resources
	if res.DBCPUSeconds < 0 || res.RedisCPUSeconds < 0 || r.Works.Completed <= 0 {
		return 0, false
	}
	return (res.CPUSeconds + res.DBCPUSeconds + res.RedisCPUSeconds) * 1000 / float64(r.Works.Completed), true
}
