package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// soakReport is what a fault soak prints: the faults with their recovery
// times, the requests by status, and the state the service ended in.
type soakReport struct {
	cfg         soakConfig
	rec         *soakRecorder
	start       time.Time
	loadStopped time.Time
	drained     time.Duration // from the load stopping to nothing owed
	tags        int
	drainTrace  []string // what was left, every few seconds after the load stopped

	mu     sync.Mutex
	faults []*soakFaultRun
}

func (r *soakReport) add(name string, began, end time.Time) *soakFaultRun {
	f := &soakFaultRun{name: name, end: end, at: end.Sub(r.start), held: end.Sub(began), recoverNew: -1, recoverLegacy: -1}
	r.mu.Lock()
	r.faults = append(r.faults, f)
	r.mu.Unlock()
	return f
}

// finish logs the report, writes it to TAGCOUNT_SOAK_REPORT if set, and
// keeps the processes' logs of a failed soak (of every soak in
// TAGCOUNT_SOAK_LOGS, if set).
func (r *soakReport) finish(t *testing.T, s *soakService) {
	s.noteWorkerCounters()
	text := r.render(s)
	t.Log("\n" + text)
	if p := os.Getenv("TAGCOUNT_SOAK_REPORT"); p != "" {
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Errorf("TAGCOUNT_SOAK_REPORT: %v", err)
		}
	}
	if dir := os.Getenv("TAGCOUNT_SOAK_LOGS"); dir != "" {
		t.Logf("the processes' logs are in %s", s.keepLogs(dir))
	} else if t.Failed() {
		t.Logf("the processes' logs are kept in %s", s.keepLogs(""))
	}
}

func (r *soakReport) render(s *soakService) string {
	var b strings.Builder
	length := "one round of the schedule"
	if r.cfg.duration > 0 {
		length = r.cfg.duration.String() + " of rounds"
	}
	fmt.Fprintf(&b, "Fault soak: %s, %v in all; %d authors (half on each path, 1 request in 20 through the other "+
		"path's API); request deadline %v (hung: no answer within %v); the worker drops 10%% of its announcements.\n\n",
		length, time.Since(r.start).Round(time.Second), r.cfg.authors, r.cfg.requestTimeout, r.cfg.hungAfter)
	r.renderFaults(&b)
	b.WriteString("\n")
	r.renderRequests(&b)
	b.WriteString("\n")
	r.renderEnd(&b, s)
	return b.String()
}

func (r *soakReport) renderFaults(b *strings.Builder) {
	b.WriteString("| # | fault | ended at | held | recovered: new path | recovered: legacy path | posts owed at its end done after |\n")
	b.WriteString("| ---: | --- | ---: | ---: | ---: | ---: | ---: |\n")
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, f := range r.faults {
		backlog := "not yet"
		if ns := f.backlog.Load(); ns > 0 {
			backlog = fmtSeconds(time.Duration(ns))
		}
		fmt.Fprintf(b, "| %d | %s | %s | %s | %s | %s | %s |\n", i+1, f.name, fmtClock(f.at), fmtSeconds(f.held),
			fmtRecovery(f.recoverNew), fmtRecovery(f.recoverLegacy), backlog)
	}
	if len(r.faults) > 0 {
		b.WriteString("\nRecovered: from the fault's end (the part started again) until a work posted then, with a tag of its own, " +
			"shows in that tag's count. Posts owed: until no draft queued before the fault's end is still queued.\n")
	}
}

func (r *soakReport) renderRequests(b *strings.Builder) {
	b.WriteString("| request | sent | 2xx | 4xx | 503 (by code) | other 5xx | no answer | hung | slowest |\n")
	b.WriteString("| --- | ---: | ---: | --- | --- | ---: | --- | ---: | ---: |\n")
	rec := r.rec
	rec.mu.Lock()
	defer rec.mu.Unlock()
	all := map[int]int{}
	for _, name := range slices.Sorted(maps.Keys(rec.ops)) {
		s := rec.ops[name]
		var ok, other5xx int
		var c4xx []string
		for _, st := range slices.Sorted(maps.Keys(s.status)) {
			n := s.status[st]
			all[st] += n
			switch {
			case st < 300:
				ok += n
			case st >= 400 && st < 500:
				c4xx = append(c4xx, fmt.Sprintf("%d×%d", st, n))
			case st >= 500 && st != 503:
				other5xx += n
			}
		}
		hung := 0
		for _, h := range rec.hung {
			if strings.HasPrefix(h, name+":") {
				hung++
			}
		}
		fmt.Fprintf(b, "| %s | %d | %d | %s | %s | %d | %s | %d | %s |\n", name, s.total, ok, orDash(strings.Join(c4xx, " ")),
			orDash(fmtCounts(s.codes503)), other5xx, orDash(fmtCounts(s.transport)), hung, fmtSeconds(s.max))
	}
	var totals []string
	for _, st := range slices.Sorted(maps.Keys(all)) {
		totals = append(totals, fmt.Sprintf("%d×%d", st, all[st]))
	}
	fmt.Fprintf(b, "\nAll answers by status: %s. Requests that hung: %d; 5xx other than 503 with Retry-After: %d; "+
		"drafts, works or accepted Posts lost: %d; failed posts seen (and posted again): %d.\n",
		strings.Join(totals, ", "), len(rec.hung), len(rec.bad5xx), len(rec.lost), rec.failedPosts)
}

// renderEnd describes the state the service ended in, read from the
// database.
func (r *soakReport) renderEnd(b *strings.Builder, s *soakService) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	states := map[string]int{}
	rows, err := s.check.QueryContext(ctx, "SELECT state, COUNT(*) FROM drafts GROUP BY state")
	if err == nil {
		for rows.Next() {
			var st string
			var n int
			rows.Scan(&st, &n)
			states[st] = n
		}
		err = rows.Close()
	}
	var works, outbox int
	if err == nil {
		err = s.check.QueryRowContext(ctx, "SELECT (SELECT COUNT(*) FROM works), (SELECT COUNT(*) FROM tag_events)").Scan(&works, &outbox)
	}
	if err != nil {
		fmt.Fprintf(b, "End state: not read (%v).\n", err)
		return
	}
	drained := "not drained"
	if r.drained > 0 {
		drained = "drained " + fmtSeconds(r.drained) + " after the load stopped"
	}
	if len(r.drainTrace) > 0 {
		fmt.Fprintf(b, "Drain after the load stopped: %s.\n\n", strings.Join(r.drainTrace, "; "))
	}
	fmt.Fprintf(b, "End state: %d works; drafts by state %s; %d outbox rows (%s); %d tags checked against the recount; "+
		"announcements dropped by the worker: %d, re-announced by the sweeper: %d.\n",
		works, fmtCounts(states), outbox, drained, r.tags, s.dropped.Load(), s.reannounced.Load())
}

func fmtCounts[K comparable](m map[K]int) string {
	keys := make([]string, 0, len(m))
	byKey := map[string]int{}
	for k, n := range m {
		ks := fmt.Sprint(k)
		keys = append(keys, ks)
		byKey[ks] = n
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s×%d", k, byKey[k])
	}
	return strings.Join(parts, " ")
}

func fmtRecovery(d time.Duration) string {
	if d < 0 {
		return "not recovered"
	}
	return fmtSeconds(d)
}

func fmtSeconds(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

func fmtClock(d time.Duration) string {
	d = d.Round(time.Second)
	return fmt.Sprintf("%d:%02d", int(d.Minutes()), int(d.Seconds())%60)
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}
