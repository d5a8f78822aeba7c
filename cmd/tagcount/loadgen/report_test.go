package loadgen

import (
	"bytes"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sampleReport() *Report {
	mk := func(path string, pps, p99 float64, deadlocks int64) *Result {
		r := &Result{Path: path, PostsPerSec: pps, AcceptedPerSec: pps,
			Works:   Works{Completed: int64(pps * 20), Edited: 3, Deleted: 1},
			Latency: map[string]LatencySummary{"save": {Count: 10, P50: 1, P95: 2, P99: 3, Max: 4}, "post": {Count: 10, P50: p99 / 4, P95: p99 / 2, P99: p99, Max: 2 * p99}},
			Errors:  Errors{Deadlock: deadlocks},
			Rows:    []RowsWritten{{Table: "tag_counts", Rows: 100, PerWork: 10}, {Table: "tag_events", Rows: 0, PerWork: 0}},
			Check:   &Check{Exact: true, Tags: 1234, OutboxDrained: true},
		}
		for s := range 20 {
			r.Series = append(r.Series, SeriesPoint{Second: s, Completed: int64(pps) + int64(s), PostP99Ms: p99 + float64(s), PostRequests: 10})
		}
		return r
	}
	rep := &Report{Results: []*Result{mk("legacy", 70, 900, 4000), mk("new", 1400, 20, 0)}, Ceiling: &Ceiling{Concurrency: 64, PostsPerSec: 2000, Seconds: 10}}
	rep.Results[1].PostToCount = LatencySummary{Count: 50, P99: 400}
	rep.Finish()
	return rep
}

func TestTableHasAColumnPerPathAndTheRatio(t *testing.T) {
	rep := sampleReport()
	rows := rep.Table()
	if got := strings.Join(rows[0], ","); got != "figure,legacy,new,new/legacy" {
		t.Fatalf("header %q", got)
	}
	find := func(name string) []string {
		for _, r := range rows {
			if r[0] == name {
				return r
			}
		}
		t.Fatalf("no row %q", name)
		return nil
	}
	if r := find("posts completed/s"); r[1] != "70.0" || r[2] != "1,400.0" || r[3] != "20.0×" {
		t.Errorf("posts/s row %q", r)
	}
	if r := find("errors: deadlock"); r[1] != "4,000" || r[2] != "0" || r[3] != "0×" {
		t.Errorf("deadlock row %q", r)
	}
	if r := find("post p99 (ms)"); r[3] != "0.0222×" {
		t.Errorf("post p99 row %q", r)
	}
	if r := find("share of bare-tx ceiling"); r[1] != "0.035" || r[2] != "0.700" {
		t.Errorf("ceiling row %q", r)
	}
	if r := find("counts (conservation)"); r[1] != "exact (1234 tags)" {
		t.Errorf("check row %q", r)
	}
	for _, tg := range rep.Targets {
		if !tg.Met {
			t.Errorf("target %q not met: %s", tg.Name, tg.Got)
		}
	}
}

func TestTextAndMarkdownRenderEveryRow(t *testing.T) {
	rep := sampleReport()
	var text, md bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	figuresTable, targetsTable, _ := strings.Cut(md.String(), "\n\n")
	if got, want := strings.Count(figuresTable, "\n")+1, len(rep.Table())+1; got != want { // + the separator line
		t.Errorf("%d lines in the markdown figures table, want %d", got, want)
	}
	if !strings.Contains(targetsTable, "| new vs legacy completed posts/s | ≥ 20× | 20.0× | met |") {
		t.Errorf("markdown targets:\n%s", targetsTable)
	}
	lines := strings.Split(text.String(), "\n")
	if w := len([]rune(lines[0])); w != len([]rune(lines[2])) {
		t.Errorf("text table not aligned: %d vs %d\n%s", w, len([]rune(lines[2])), text.String())
	}
	for _, want := range []string{"ceiling: the bare posting transaction", "MET", "new vs legacy completed posts/s"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, text.String())
		}
	}
}

// written returns what write (one of Report's writers) writes to the file
// it is given, a new one named name.
func written(t *testing.T, name string, write func(path string) error) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := write(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestJSONHoldsEveryFigure(t *testing.T) {
	b := written(t, "r.json", sampleReport().WriteJSON)
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Results) != 2 || back.Results[1].PostsPerSec != 1400 || back.Results[1].Latency["post"].P99 != 20 ||
		back.Ceiling.PostsPerSec != 2000 || len(back.Results[0].Series) != 20 || len(back.Targets) == 0 {
		t.Errorf("round trip lost figures: %s", b)
	}
}

func TestChartIsAPNG(t *testing.T) {
	b := written(t, "c.png", sampleReport().WritePNG)
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if r := img.Bounds(); r.Dx() < 800 || r.Dy() < 600 {
		t.Errorf("chart is %v", r)
	}
	if out := os.Getenv("LOADGEN_CHART_OUT"); out != "" {
		os.WriteFile(out, b, 0o644)
	}
}

func TestThousandsSeparators(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.5: "1,234,567.5", -4200: "-4,200"} {
		format := "%.0f"
		if in != float64(int64(in)) {
			format = "%.1f"
		}
		if got := formatNum(format, in); got != want {
			t.Errorf("formatNum(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestDatabaseLinkRowsAndNoteOnlyWhenTheRunHadALink(t *testing.T) {
	rep := sampleReport()
	var text bytes.Buffer
	rep.WriteText(&text)
	if strings.Contains(text.String(), "DB link") || strings.Contains(text.String(), "db link") {
		t.Errorf("a run without a link shows link figures:\n%s", text.String())
	}

	line := NewDelayLine(250 * time.Microsecond)
	cost := &DelayCost{Conns: 16, PhaseSeconds: 1, DirectCPUUs: 10, DelayCPUUs: 30, PacketsPerRT: 2, CPUUsPerPacket: 10}
	rep.DBLink = &DBLink{OneWayMs: 0.25, Cost: *cost}
	for i, r := range rep.Results {
		before := DelayStats{Packets: 1000, Waits: 500, Late: 5 * time.Millisecond}
		after := DelayStats{Conns: 4, Packets: 1000 + int64(i+1)*70_000, Bytes: 1 << 20, Waits: 500 + 1000, Late: 5*time.Millisecond + 50*time.Millisecond}
		r.DBLink = linkUse(line, cost, before, after, r.Works.Completed, 2)
	}
	rows := rep.Table()
	row := tableRow(rows, "DB link: packets / posted work")
	if row == nil || row[1] != "50.0" || row[2] != "5.0" {
		t.Errorf("packets per work row %q (works %d and %d)", row, rep.Results[0].Works.Completed, rep.Results[1].Works.Completed)
	}
	if row := tableRow(rows, "DB link: mean wake-up lateness (µs)"); row == nil || row[1] != "50" {
		t.Errorf("lateness row %q, want 50 µs: 50 ms late over 1000 waits", row)
	}
	if row := tableRow(rows, "DB link: delay line CPU, est. (s)"); row == nil || row[1] != "0.70" || row[2] != "1.40" {
		t.Errorf("CPU row %q, want 70,000 and 140,000 packets at 10 µs", row)
	}
	if row := tableRow(rows, "DB link: share of process CPU, est."); row == nil || row[1] != "0.350" {
		t.Errorf("CPU share row %q, want 0.7 s of 2 s", row)
	}
	text.Reset()
	rep.WriteText(&text)
	if !strings.Contains(text.String(), "db link: every packet between the service and its database was delayed 0.250 ms each way") {
		t.Errorf("text lacks the link's note:\n%s", text.String())
	}
}

func tableRow(rows [][]string, name string) []string {
	for _, r := range rows {
		if r[0] == name {
			return r
		}
	}
	return nil
}
