package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/cmd/tagcount/loadgen"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations/loop"
	"github.com/tagcount/tagcount/poster"
)

// overloadSettings are the flags of loadgen's overload scenarios
// (loadgen.Scenarios): one party's load beside normal authors, on
// in-process stacks with the service's rate limits, quotas and fair
// posting on.
type overloadSettings struct {
	NormalAuthors  int
	NormalRate     float64
	StormConns     int
	StormAlone     time.Duration
	BulkPosts      int64
	BulkConc       int
	BulkBatch      int
	BulkWriteLimit float64
	BulkAfter      int
	FloodConns     int
	FloodIdleShare float64
	FloodBodyBytes int
	AfterFlood     time.Duration
}

// Author ids of the scenarios' classes, apart from the normal authors'
// (1..--normal-authors).
const (
	bulkAuthorBase  = 100_000
	floodAuthorBase = 200_000
	floodAuthors    = 1000
	stormAuthor     = 900_000_001
)

func (c *overloadSettings) register(fs *flag.FlagSet) {
	fs.IntVar(&c.NormalAuthors, "normal-authors", 50, "with --scenario: the normal authors, posting at --normal-rate for --duration")
	fs.Float64Var(&c.NormalRate, "normal-rate", 20, "with --scenario: works the normal authors start per second in all (open loop)")
	fs.IntVar(&c.StormConns, "storm-connections", 64, "retry-storm: connections the storming token sends on, each as fast as it is answered")
	fs.DurationVar(&c.StormAlone, "storm-alone", 5*time.Second, "retry-storm: the window with the storm alone in which its rejections' CPU is measured")
	fs.Int64Var(&c.BulkPosts, "bulk-posts", 5000, "bulk-import: works the bulk author submits at once")
	fs.IntVar(&c.BulkConc, "bulk-concurrency", 64, "bulk-import: the bulk author's requests in flight")
	fs.IntVar(&c.BulkBatch, "bulk-batch", 5000,
		"bulk-import: the bulk author saves this many drafts, then posts them all at once, batch after batch (the drafts quota is raised to fit one batch)")
	fs.Float64Var(&c.BulkWriteLimit, "bulk-write-limit", 1000,
		"bulk-import: writes a second an author may send (burst: --bulk-posts); at the service's default of 5/s the limiter alone spreads an import over hours (0: the default)")
	fs.IntVar(&c.BulkAfter, "bulk-after", poster.DefaultBulkAfter, "with --scenario: the service's --bulk-after (0: one posting queue, first come first served)")
	fs.IntVar(&c.FloodConns, "flood-connections", 2000, "flood: connections held open at once")
	fs.Float64Var(&c.FloodIdleShare, "flood-idle-share", 0.5, "flood: share of the connections that send nothing; the others send a body slowly")
	fs.IntVar(&c.FloodBodyBytes, "flood-body-bytes", 1<<20, "flood: the Content-Length a slow body announces (64 bytes follow each second)")
	fs.DurationVar(&c.AfterFlood, "after-flood", 10*time.Second, "flood: how long the normal authors go on alone after the flood")
}

// validate checks the scenario flags of s (nothing when no scenario).
func (c *overloadSettings) validate(s loadgenSettings) error {
	if !slices.Contains(loadgen.Scenarios, s.Scenario) {
		return nil
	}
	if s.URL != "" || s.Capacity.Find || s.DBLatency > 0 {
		return errors.New("--scenario runs its own in-process stacks: not with --url, --find-capacity or --db-latency")
	}
	if c.NormalAuthors <= 0 || c.NormalRate <= 0 || c.StormConns <= 0 || c.StormAlone <= 0 || c.BulkPosts <= 0 ||
		c.BulkConc <= 0 || c.BulkBatch <= 0 || c.BulkWriteLimit < 0 || c.BulkAfter < 0 || c.FloodConns <= 0 || c.FloodIdleShare < 0 ||
		c.FloodIdleShare > 1 || c.FloodBodyBytes <= 0 || c.AfterFlood <= 0 {
		return errors.New("--scenario: --normal-*, --storm-*, --bulk-*, --flood-* and --after-flood take positive values (shares within 0..1)")
	}
	return nil
}

// runScenario runs lg's scenario, prints its report and writes its JSON.
func (lg *loadgenSession) runScenario(ctx context.Context, args []string, stdout io.Writer) error {
	rep := &loadgen.ScenarioReport{Scenario: lg.s.Scenario, Command: "tagcount loadgen " + strings.Join(args, " "), Started: time.Now(),
		Machine: lg.rep.Machine}
	var err error
	switch lg.s.Scenario {
	case loadgen.ScenarioRetryStorm:
		err = lg.retryStorm(ctx, rep)
	case loadgen.ScenarioBulkImport:
		err = lg.bulkImport(ctx, rep)
	case loadgen.ScenarioFlood:
		err = lg.flood(ctx, rep)
	}
	rep.Finish()
	fmt.Fprintln(stdout)
	if werr := rep.WriteText(stdout); werr != nil {
		return werr
	}
	if lg.s.OutJSON != "" {
		if werr := rep.WriteJSON(lg.s.OutJSON); werr != nil {
			return werr
		}
		fmt.Fprintf(lg.stderr, "loadgen: wrote %s\n", lg.s.OutJSON)
	}
	if err == nil {
		err = ctx.Err()
	}
	return err
}

// scenarioLimits are the rate limits of a scenario's service: the
// service's defaults, with writes at writes.
func scenarioLimits(writes httpapi.RateLimit) httpapi.RateLimits {
	return httpapi.RateLimits{Writes: writes, Reads: httpapi.DefaultReadLimit, Admin: httpapi.DefaultAdminLimit,
		Anonymous: httpapi.DefaultAnonymousLimit}
}

// settings lists what the scenario's services run with.
func (lg *loadgenSession) settings(limits httpapi.RateLimits, maxDrafts int) []loadgen.Setting {
	c := lg.s.Overload
	rl := func(l httpapi.RateLimit) string { return fmt.Sprintf("%g/s, burst %d", l.PerSecond, l.Burst) }
	fair := fmt.Sprintf("an author's posts past %d queued go to the bulk queue", c.BulkAfter)
	if c.BulkAfter == 0 {
		fair = "off: one queue, first come first served"
	}
	return []loadgen.Setting{
		{Name: "rate limits", Value: fmt.Sprintf("writes %s, reads %s, anonymous %s", rl(limits.Writes), rl(limits.Reads), rl(limits.Anonymous))},
		{Name: "quotas", Value: fmt.Sprintf("%d unposted drafts, %d new tags a day", maxDrafts, tags.DefaultNewTagsPerDay)},
		{Name: "fair posting", Value: fair},
		{Name: "normal authors", Value: fmt.Sprintf("%d, %g works/s in all for %v (open loop, at most %d in flight)",
			c.NormalAuthors, c.NormalRate, lg.s.Duration, lg.s.Concurrency)},
	}
}

// onScenarioStack starts a fresh stack for phase with limits, the quotas
// (maxDrafts unposted drafts) and fair posting, calls fn with it, and
// stops it.
func (lg *loadgenSession) onScenarioStack(ctx context.Context, phase string, limits httpapi.RateLimits, maxDrafts int,
	fn func(st *stack) error) error {
	label := strings.ReplaceAll(phase, "-", "_")
	database := "tagcount_loadgen_" + lg.runID + "_" + label
	runID := lg.runID + "-" + phase
	limits.Prefix = "loadgen-" + runID + ":"
	st, stop, err := loadgenStack(ctx, lg.s, runID, "new", database, lg.secret, lg.log, true, func(o *stackOptions) {
		o.Edge = httpapi.Edge{RequestTimeout: httpapi.DefaultRequestTimeout, RateLimits: limits}
		o.MaxDrafts, o.NewTagsPerDay = maxDrafts, tags.DefaultNewTagsPerDay
		o.BulkAfter = lg.s.Overload.BulkAfter
	})
	if err != nil {
		return fmt.Errorf("starting the %s service: %w", phase, err)
	}
	defer func() {
		if err := stop(); err != nil {
			fmt.Fprintf(lg.stderr, "loadgen: stopping the %s service: %v\n", phase, err)
		}
		loadgenDrop(lg.server, database, lg.s.KeepDB, lg.stderr)
	}()
	fmt.Fprintf(lg.stderr, "loadgen: %s: %s at %s\n", lg.s.Scenario, phase, st.URL)
	return fn(st)
}

// normalConfig is the normal authors' run on st: --normal-authors posting
// --normal-rate works a second in all for d, checked by the scenario.
func (lg *loadgenSession) normalConfig(st *stack, d time.Duration) (loadgen.Config, error) {
	s := lg.s
	wl, err := loadgen.NewWorkload(loadgen.WorkloadOptions{
		Seed: s.Seed, Authors: s.Overload.NormalAuthors, Vocabulary: s.Vocab, EditShare: nonZero(s.EditShare),
		DeleteShare: nonZero(s.DeleteShare), BodyChars: s.BodyChars, ProbeEvery: s.ProbeEvery, ProbePrefix: fmt.Sprintf("probe %d", s.Seed),
	})
	if err != nil {
		return loadgen.Config{}, err
	}
	cfg := lg.base
	cfg.Path, cfg.Workload, cfg.BaseURL, cfg.Auth, cfg.DB, cfg.NoCheck = loadgen.ClassNormal, wl, st.URL, st.Auth, st.DB, true
	cfg.Rate, cfg.OpenLoop, cfg.Profile, cfg.Duration, cfg.Posts = s.Overload.NormalRate, true, loadgen.Steady, d, 0
	return cfg, nil
}

// retryStorm runs the normal authors alone, then beside a retry storm, on
// fresh services, and prices the storm's rejections with the storm alone.
func (lg *loadgenSession) retryStorm(ctx context.Context, rep *loadgen.ScenarioReport) error {
	limits := scenarioLimits(httpapi.DefaultWriteLimit)
	rep.Settings = append(lg.settings(limits, drafts.DefaultMaxDrafts), loadgen.Setting{Name: "storm",
		Value: fmt.Sprintf("one token, POST /v1/drafts on %d connections, each sending again as soon as it is answered; then alone for %v",
			lg.s.Overload.StormConns, lg.s.Overload.StormAlone)})
	for _, phase := range []string{loadgen.PhaseCalm, loadgen.PhaseStorm} {
		run := &loadgen.ScenarioRun{Name: phase}
		rep.Runs = append(rep.Runs, run)
		err := lg.onScenarioStack(ctx, phase, limits, drafts.DefaultMaxDrafts, func(st *stack) error {
			cfg, err := lg.normalConfig(st, lg.s.Duration)
			if err != nil {
				return err
			}
			if phase == loadgen.PhaseCalm {
				res, err := loadgen.Run(ctx, cfg)
				run.Classes = append(run.Classes, &loadgen.ClassResult{Class: loadgen.ClassNormal, Result: res})
				return err
			}
			return lg.stormBeside(ctx, st, cfg, run)
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// stormBeside runs the storm beside the normal authors' run cfg on st,
// then alone to price its rejections.
func (lg *loadgenSession) stormBeside(ctx context.Context, st *stack, cfg loadgen.Config, run *loadgen.ScenarioRun) error {
	tok, err := st.Auth.IssueToken(stormAuthor, httpapi.RoleAuthor, 24*time.Hour)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]any{"title": "Again", "body": "And again.", "tags": map[string]any{
		"rating": "General Audiences", "warnings": []string{"No Archive Warnings Apply"}, "fandoms": []string{"Fandom 0"}}})
	storm := loadgen.StormConfig{BaseURL: st.URL, Token: tok, Method: "POST", Path: "/v1/drafts", Body: body, Conns: lg.s.Overload.StormConns}
	sctx, stopStorm := context.WithCancel(ctx)
	stormDone := make(chan *loadgen.StormResult, 1)
	go func() {
		res, _ := loadgen.RunStorm(sctx, storm)
		stormDone <- res
	}()
	res, err := loadgen.Run(ctx, cfg)
	stopStorm()
	run.Storm = <-stormDone
	run.Classes = append(run.Classes, &loadgen.ClassResult{Class: loadgen.ClassNormal, Result: res})
	if err != nil {
		return err
	}
	fmt.Fprintf(lg.stderr, "loadgen: retry-storm: the storm alone for %v, after as long idle\n", lg.s.Overload.StormAlone)
	run.Rejections, _, err = loadgen.MeasureRejections(ctx, storm, lg.s.Overload.StormAlone, lg.s.RedisAddr)
	return err
}

// bulkImport runs one author submitting --bulk-posts works at once beside
// the normal authors, and checks every count once all are posted. The
// importer saves its drafts first; the normal authors start, and a
// quarter into their run the importer posts every draft at once.
func (lg *loadgenSession) bulkImport(ctx context.Context, rep *loadgen.ScenarioReport) error {
	c := lg.s.Overload
	writes := httpapi.DefaultWriteLimit
	if c.BulkWriteLimit > 0 {
		writes = httpapi.RateLimit{PerSecond: c.BulkWriteLimit, Burst: int(c.BulkPosts)}
	}
	limits := scenarioLimits(writes)
	maxDrafts := max(drafts.DefaultMaxDrafts, c.BulkBatch)
	rep.Settings = append(lg.settings(limits, maxDrafts), loadgen.Setting{Name: "bulk author",
		Value: fmt.Sprintf("one, %d works in batches of %d: a batch's drafts saved and edited, then all of them posted at once (the first batch a quarter into the normal authors' run), %d requests in flight; tags from a small vocabulary",
			c.BulkPosts, c.BulkBatch, c.BulkConc)})
	run := &loadgen.ScenarioRun{Name: loadgen.PhaseBulkImport}
	rep.Runs = append(rep.Runs, run)
	return lg.onScenarioStack(ctx, loadgen.PhaseBulkImport, limits, maxDrafts, func(st *stack) error {
		normal, err := lg.normalConfig(st, lg.s.Duration)
		if err != nil {
			return err
		}
		bulk, err := lg.bulkConfig(st)
		if err != nil {
			return err
		}
		type outcome struct {
			res *loadgen.Result
			err error
		}
		normalDone := make(chan outcome, 1)
		var startNormal sync.Once
		start := func() {
			startNormal.Do(func() {
				go func() {
					res, err := loadgen.Run(ctx, normal)
					normalDone <- outcome{res, err}
				}()
			})
		}
		bulk.ImportReady = func(batch int) {
			if batch == 0 {
				start()
				loop.Sleep(ctx, lg.s.Duration/4)
			}
			fmt.Fprintf(lg.stderr, "loadgen: bulk-import: posting batch %d at once\n", batch+1)
		}
		fmt.Fprintf(lg.stderr, "loadgen: bulk-import: the bulk author saves its first %d drafts\n", c.BulkBatch)
		bres, berr := loadgen.Run(ctx, bulk)
		start() // had the import failed before its first batch
		n := <-normalDone
		if n.res != nil {
			run.Classes = append(run.Classes, &loadgen.ClassResult{Class: loadgen.ClassNormal, Result: n.res})
		}
		if bres != nil {
			run.Classes = append(run.Classes, &loadgen.ClassResult{Class: loadgen.ClassBulk, Result: bres})
		}
		if err := errors.Join(n.err, berr); err != nil {
			return err
		}
		chk := loadgen.CheckCounts(ctx, st.DB, lg.s.OutboxWait)
		run.Check = &chk
		return nil
	})
}

// bulkConfig is the bulk author's run on st: --bulk-posts works, saved and
// posted in batches of --bulk-batch, as fast as --bulk-concurrency
// requests in flight go. An import names the tags
// of its few fandoms, not thousands of new ones a day: its tags come
// from a small vocabulary, within the new-tag quota.
func (lg *loadgenSession) bulkConfig(st *stack) (loadgen.Config, error) {
	s := lg.s
	wl, err := loadgen.NewWorkload(loadgen.WorkloadOptions{
		Seed: s.Seed, Authors: 1, AuthorBase: bulkAuthorBase, EditShare: -1, DeleteShare: -1, ProbeEvery: -1, BodyChars: s.BodyChars,
		Vocabulary: loadgen.Vocabulary{Fandoms: 3, Characters: 40, Relationships: 40, Freeforms: 60, Exponent: s.Vocab.Exponent},
	})
	if err != nil {
		return loadgen.Config{}, err
	}
	cfg := lg.base
	cfg.Path, cfg.Workload, cfg.BaseURL, cfg.Auth, cfg.DB, cfg.NoCheck = loadgen.ClassBulk, wl, st.URL, st.Auth, st.DB, true
	cfg.Concurrency, cfg.Posts, cfg.Duration, cfg.Rate, cfg.OpenLoop = s.Overload.BulkConc, s.Overload.BulkPosts, 0, 0, false
	cfg.ImportBatch = s.Overload.BulkBatch
	cfg.PollTimeout, cfg.DrainTimeout, cfg.Progress = 5*time.Minute, 5*time.Minute, nil
	return cfg, nil
}

// flood runs the normal authors beside a connection flood, measures how
// the service comes back once it stops, and runs them again alone.
func (lg *loadgenSession) flood(ctx context.Context, rep *loadgen.ScenarioReport) error {
	c := lg.s.Overload
	limits := scenarioLimits(httpapi.DefaultWriteLimit)
	rep.Settings = append(lg.settings(limits, drafts.DefaultMaxDrafts), loadgen.Setting{Name: "flood",
		Value: fmt.Sprintf("%d connections, %.0f%% idle, the others announcing %d-byte bodies under %d authors' tokens and sending 64 bytes a second; then the normal authors alone for %v",
			c.FloodConns, 100*c.FloodIdleShare, c.FloodBodyBytes, floodAuthors, c.AfterFlood)})
	during := &loadgen.ScenarioRun{Name: loadgen.PhaseFlood}
	after := &loadgen.ScenarioRun{Name: loadgen.PhaseAfterFlood}
	rep.Runs = append(rep.Runs, during, after)
	return lg.onScenarioStack(ctx, loadgen.PhaseFlood, limits, drafts.DefaultMaxDrafts, func(st *stack) error {
		tokens := make([]string, floodAuthors)
		for i := range tokens {
			var err error
			if tokens[i], err = st.Auth.IssueToken(floodAuthorBase+int64(i), httpapi.RoleAuthor, 24*time.Hour); err != nil {
				return err
			}
		}
		flood := loadgen.FloodConfig{BaseURL: st.URL, Conns: c.FloodConns, IdleShare: c.FloodIdleShare, Tokens: tokens, BodyBytes: c.FloodBodyBytes}
		if err := lg.duringFlood(ctx, st, flood, during); err != nil {
			return err
		}
		cfg, err := lg.normalConfig(st, c.AfterFlood)
		if err != nil {
			return err
		}
		res, err := loadgen.Run(ctx, cfg)
		after.Classes = append(after.Classes, &loadgen.ClassResult{Class: loadgen.ClassNormal, Result: res})
		return err
	})
}

// duringFlood runs the normal authors beside flood on st, then stops the
// flood and measures the recovery.
func (lg *loadgenSession) duringFlood(ctx context.Context, st *stack, flood loadgen.FloodConfig, run *loadgen.ScenarioRun) error {
	cfg, err := lg.normalConfig(st, lg.s.Duration)
	if err != nil {
		return err
	}
	fctx, stopFlood := context.WithCancel(ctx)
	floodDone := make(chan *loadgen.FloodResult, 1)
	go func() {
		res, _ := loadgen.RunFlood(fctx, flood)
		floodDone <- res
	}()
	rec := &loadgen.Recovery{Seconds: -1}
	stopPeaks := watchPeaks(st.Registry, rec)
	res, err := loadgen.Run(ctx, cfg)
	stopPeaks()
	run.Classes = append(run.Classes, &loadgen.ClassResult{Class: loadgen.ClassNormal, Result: res})
	rec.Shed = metricValues(st.Registry, "tagcount_http_shed_total", "reason")
	stopFlood()
	end := time.Now()
	run.Flood, run.Recovery = <-floodDone, rec
	for time.Since(end) < 30*time.Second && ctx.Err() == nil {
		if metricValue(st.Registry, "tagcount_http_in_flight") == 0 && metricValue(st.Registry, "tagcount_http_body_bytes_in_flight") == 0 {
			rec.Seconds = round1(time.Since(end).Seconds())
			break
		}
		loop.Sleep(ctx, 20*time.Millisecond)
	}
	return err
}

// watchPeaks samples the in-flight gauges into rec four times a second
// until the returned stop is called.
func watchPeaks(reg *prometheus.Registry, rec *loadgen.Recovery) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			rec.InFlightDuring = max(rec.InFlightDuring, metricValue(reg, "tagcount_http_in_flight"))
			rec.BodyBytesDuring = max(rec.BodyBytesDuring, metricValue(reg, "tagcount_http_body_bytes_in_flight"))
			loop.Sleep(ctx, 250*time.Millisecond)
		}
	}()
	return func() { cancel(); <-done }
}

// metricValue is the value of the unlabelled gauge or counter name in reg,
// or 0.
func metricValue(reg *prometheus.Registry, name string) float64 {
	for _, v := range metricValues(reg, name, "") {
		return v
	}
	return 0
}

// metricValues are the values of the gauge or counter name in reg by its
// label's value.
func metricValues(reg *prometheus.Registry, name, label string) map[string]float64 {
	out := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			key := ""
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label {
					key = lp.GetValue()
				}
			}
			out[key] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return out
}

func round1(x float64) float64 { return float64(int64(x*10+0.5)) / 10 }
