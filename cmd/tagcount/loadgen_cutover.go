package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/tagcount/tagcount/cmd/tagcount/archive"
	"github.com/tagcount/tagcount/cmd/tagcount/loadgen"
	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/reconcile"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/flags"
	"github.com/tagcount/tagcount/flags/rollout"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/loop"
	"github.com/tagcount/tagcount/poster"
)

// The cutover scenarios: the 2017 cutover replayed on an archive-shaped
// database (a guarded rollout of the new posting path, and the nightly
// reconcile, under authors' load), and the guarded rollout alone.
const (
	scenarioCutover = "cutover"
	scenarioRollout = "rollout"
)

// faultCounterStop pauses every counter (the counter-pause switch in the
// database) mid-plan, so the new path's posts stop being counted.
const faultCounterStop = "counter-stop"

// cutoverSettings are the flags of the cutover and rollout scenarios.
type cutoverSettings struct {
	ArchiveDB        string
	ArchiveWorks     int
	Steady           time.Duration
	Steps            string
	Hold             time.Duration
	Interval         time.Duration
	Guards           rollout.Guards
	ReconcileAt      time.Duration
	ReconcileTimeout time.Duration
	PlanTimeout      time.Duration
	Wrangle          bool
	SeriesEvery      time.Duration
	LegacyFirst      time.Duration
	Fault            string
	FaultAt          time.Duration
	After            time.Duration
}

func (c *cutoverSettings) register(fs *flag.FlagSet) {
	fs.StringVar(&c.ArchiveDB, "archive-db", "", "cutover, rollout: an existing database built by `tagcount archive build` to run on (kept)")
	fs.IntVar(&c.ArchiveWorks, "archive-works", 0, "cutover, rollout: build an archive of this many works first, in a database of the run's own (dropped unless --keep-db)")
	fs.DurationVar(&c.Steady, "steady", time.Minute, "cutover, rollout: the load with the flag at 0 % before the plan starts (the phase the others are compared with)")
	fs.StringVar(&c.Steps, "rollout-steps", "1,5,25,50,100", "cutover, rollout: the plan's steps (percent of authors on the new path)")
	fs.DurationVar(&c.Hold, "rollout-hold", 30*time.Second, "cutover, rollout: how long each step is held while its guards hold")
	fs.DurationVar(&c.Interval, "rollout-interval", 2*time.Second, "cutover, rollout: how often the plan's runner reads its guards")
	fs.Int64Var(&c.Guards.MinPosts, "rollout-min-posts", 50, "cutover, rollout: new-path Posts a step's window needs before the per-post guards decide")
	fs.DurationVar(&c.Guards.PostP99, "rollout-post-p99", rollout.DefaultPostP99, "cutover, rollout: bound of the new path's Post p99")
	fs.DurationVar(&c.Guards.FreshnessP99, "rollout-freshness-p99", rollout.DefaultFreshnessP99, "cutover, rollout: bound of the new path's Post → small-tag count p99")
	fs.DurationVar(&c.ReconcileAt, "reconcile-at", 0, "cutover: when the whole reconcile starts, after the load started (0: --steady plus two holds, mid-rollout)")
	fs.DurationVar(&c.ReconcileTimeout, "reconcile-timeout", 30*time.Minute, "cutover: longest wait for the reconcile; the report says how far it got")
	fs.DurationVar(&c.PlanTimeout, "plan-timeout", 30*time.Minute, "cutover, rollout: longest a plan may run before the scenario aborts it")
	fs.BoolVar(&c.Wrangle, "wrangle", false, "cutover: as the reconcile starts, make a large archive tag a synonym, so a wrangling job runs too")
	fs.DurationVar(&c.SeriesEvery, "series-every", 10*time.Second, "cutover, rollout: the series' interval")
	fs.DurationVar(&c.LegacyFirst, "legacy-first", 0, "cutover, rollout: first run the same load this long with the flag at 0 % throughout, on the same database (0: none)")
	fs.StringVar(&c.Fault, "fault", "", "rollout: "+faultCounterStop+" pauses every counter mid-plan so freshness breaks and the plan rolls back")
	fs.DurationVar(&c.FaultAt, "fault-at", 0, "rollout: when the fault starts, after the load started (0: --steady plus one and a half holds)")
	fs.DurationVar(&c.After, "after", 20*time.Second, "cutover, rollout: the load goes on this long after the plan (and the reconcile) ended")
}

// validate checks the flags of a cutover or rollout scenario and fills in
// the defaults that depend on others.
func (c *cutoverSettings) validate(s loadgenSettings) error {
	if s.Scenario != scenarioCutover && s.Scenario != scenarioRollout {
		return nil
	}
	if s.URL != "" || s.Capacity.Find || s.DBLatency > 0 {
		return errors.New("--scenario " + s.Scenario + " runs its own in-process stack: not with --url, --find-capacity or --db-latency")
	}
	if s.Scenario == scenarioCutover && c.ArchiveDB == "" && c.ArchiveWorks <= 0 {
		return errors.New("--scenario cutover needs an archive: --archive-db NAME or --archive-works N")
	}
	if c.ArchiveDB != "" && c.ArchiveWorks > 0 {
		return errors.New("give --archive-db or --archive-works, not both")
	}
	if _, err := parseSteps(c.Steps); err != nil {
		return fmt.Errorf("--rollout-steps: %w", err)
	}
	if c.Hold <= 0 || c.Interval <= 0 || c.Steady <= 0 || c.SeriesEvery <= 0 || c.ReconcileTimeout <= 0 || c.PlanTimeout <= 0 ||
		c.Guards.MinPosts <= 0 || c.After < 0 || c.LegacyFirst < 0 {
		return errors.New("--rollout-hold, --rollout-interval, --rollout-min-posts, --steady, --series-every, --reconcile-timeout and --plan-timeout are positive")
	}
	if c.Fault != "" && (c.Fault != faultCounterStop || s.Scenario != scenarioRollout) {
		return fmt.Errorf("--fault: the rollout scenario knows %q", faultCounterStop)
	}
	if c.ReconcileAt <= 0 {
		c.ReconcileAt = c.Steady + 2*c.Hold
	}
	if c.FaultAt <= 0 {
		c.FaultAt = c.Steady + c.Hold*3/2
	}
	return nil
}

// runCutover runs the cutover or rollout scenario on its archive (or a
// fresh database), prints its report and writes its files.
func (lg *loadgenSession) runCutover(ctx context.Context, args []string, stdout io.Writer) error {
	c := lg.s.Cutover
	database, drop, err := lg.cutoverDatabase(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if drop {
			loadgenDrop(lg.server, database, lg.s.KeepDB, lg.stderr)
		}
	}()
	rep := &loadgen.CutoverReport{Scenario: lg.s.Scenario, Command: "tagcount loadgen " + strings.Join(args, " "), Started: time.Now(),
		Machine: lg.rep.Machine}
	st, stop, err := loadgenStack(ctx, lg.s, lg.runID, "flag", database, lg.secret, lg.log, true, func(o *stackOptions) {
		o.Rollout = rolloutOptions{Interval: c.Interval, Guards: c.Guards}
	})
	if err != nil {
		return fmt.Errorf("starting the %s service: %w", lg.s.Scenario, err)
	}
	defer func() {
		if err := stop(); err != nil {
			fmt.Fprintf(lg.stderr, "loadgen: stopping the %s service: %v\n", lg.s.Scenario, err)
		}
	}()
	var manifest []archive.Injected
	if lg.s.Scenario == scenarioCutover {
		if manifest, err = archive.Manifest(ctx, st.DB); err != nil {
			return fmt.Errorf("the archive's drift manifest: %w", err)
		}
	}
	rep.Settings = lg.cutoverSettingsShown(ctx, st, database, len(manifest))
	if err := st.Flags.SetLocalRollout(flags.NewPostingPath, 0); err != nil {
		return err
	}
	if err := lg.warmCounter(ctx, st); err != nil {
		return err
	}
	if c.LegacyFirst > 0 {
		if rep.Legacy, rep.LegacySeries, err = lg.legacyFirst(ctx, st); err != nil {
			return err
		}
	}
	runErr := lg.cutoverRun(ctx, st, rep, manifest)
	if err := lg.writeCutover(rep, stdout); err != nil {
		return err
	}
	return errors.Join(runErr, ctx.Err())
}

// warmCounter posts one work on the new path, through the posting
// transaction, and waits (up to --poll-timeout) for the counter to count
// it: the counter's first join of its consumer group takes seconds, and
// with the flag at 0 % the plan's first new-path posts would wait for it,
// which is not what the guards are to judge (the guarded-rollout tests warm
// up the same way).
func (lg *loadgenSession) warmCounter(ctx context.Context, st *stack) error {
	c := drafts.Content{Title: "Warm-up", Body: "Warm-up.", Tags: drafts.Tags{Rating: "General Audiences",
		Warnings: []string{"No Archive Warnings Apply"}, Fandoms: []string{"Fandom 0"}, Freeforms: []string{"loadgen warm-up " + lg.runID}}}
	if _, err := st.Poster.PostContents(ctx, 1, poster.PathNew, []drafts.Content{c}); err != nil {
		return fmt.Errorf("warming the counter up: %w", err)
	}
	deadline := time.Now().Add(lg.s.PollTimeout)
	for {
		_, small, err := counter.OutboxDepth(ctx, st.DB, counter.DefaultTiers().MediumFrom)
		if err != nil || small == 0 {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("warming the counter up: %d small tags' outbox rows not applied after --poll-timeout %v", small, lg.s.PollTimeout)
		}
		if err := loop.Sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// cutoverDatabase returns the database the scenario runs on, and whether
// it is the run's own (to drop): --archive-db, an archive built now of
// --archive-works works, or a fresh one for the rollout scenario.
func (lg *loadgenSession) cutoverDatabase(ctx context.Context) (string, bool, error) {
	c := lg.s.Cutover
	if c.ArchiveDB != "" {
		return c.ArchiveDB, false, nil
	}
	database := "tagcount_loadgen_" + lg.runID + "_" + lg.s.Scenario
	if c.ArchiveWorks <= 0 {
		return database, true, nil
	}
	dsn, err := migrations.WithDatabase(lg.s.MySQLDSN, database)
	if err != nil {
		return "", false, err
	}
	db, err := openCreating(ctx, dsn, true)
	if err != nil {
		return "", false, err
	}
	defer db.Close()
	if err := migrations.Up(ctx, db); err != nil {
		return database, true, err
	}
	fmt.Fprintf(lg.stderr, "loadgen: building an archive of %d works in %s\n", c.ArchiveWorks, database)
	rep, err := archive.Build(ctx, archive.Config{DB: db, Works: c.ArchiveWorks, Progress: lg.stderr})
	if err != nil {
		return database, true, err
	}
	fmt.Fprintf(lg.stderr, "loadgen: archive built in %v: %d works, %d tags, %d taggings\n", rep.Took.Round(time.Second), rep.Works, rep.Tags, rep.Taggings)
	return database, true, nil
}

// cutoverSettingsShown lists what the scenario runs with.
func (lg *loadgenSession) cutoverSettingsShown(ctx context.Context, st *stack, database string, drifted int) []loadgen.Setting {
	s, c := lg.s, lg.s.Cutover
	works, _ := poster.CountWorks(ctx, st.DB)
	tagN, _ := tags.Count(ctx, st.DB, "")
	g := rollout.Guards{MinPosts: c.Guards.MinPosts, PostP99: c.Guards.PostP99, FreshnessP99: c.Guards.FreshnessP99}
	out := []loadgen.Setting{
		{Name: "database", Value: fmt.Sprintf("%s: %d posted works, %d tags at the start; %d tags with drift injected", database, works, tagN, drifted)},
		{Name: "load", Value: fmt.Sprintf("%g works/s (%s profile, open loop %v, at most %d in flight), %d authors, %.0f%% edited and %.0f%% deleted later",
			s.Rate, s.Profile, s.OpenLoop, s.Concurrency, s.Authors, 100*s.EditShare, 100*s.DeleteShare)},
		{Name: "rollout", Value: fmt.Sprintf("steps %s %%, hold %v, guards read every %v, %d new-path Posts a window; Post p99 ≤ %v, freshness p99 ≤ %v (others: defaults)",
			c.Steps, c.Hold, c.Interval, g.MinPosts, cmpOr(g.PostP99, rollout.DefaultPostP99), cmpOr(g.FreshnessP99, rollout.DefaultFreshnessP99))},
		{Name: "phases", Value: fmt.Sprintf("steady %v; the plan then; the load goes on %v after the plan%s ends", c.Steady, c.After,
			map[bool]string{true: " and the reconcile", false: ""}[s.Scenario == scenarioCutover])},
		{Name: "series", Value: fmt.Sprintf("every %v", c.SeriesEvery)},
	}
	if s.Scenario == scenarioCutover {
		out = append(out, loadgen.Setting{Name: "reconcile", Value: fmt.Sprintf("every tag, at %v, default budget (%g corrections/s, %d-tag chunks), waited for up to %v; wrangling job: %v",
			c.ReconcileAt, float64(reconcile.DefaultCorrectionsPerSecond), reconcile.DefaultChunkSize, c.ReconcileTimeout, c.Wrangle)})
	}
	if c.Fault != "" {
		out = append(out, loadgen.Setting{Name: "fault", Value: fmt.Sprintf("%s at %v: every counter paused (the counter-pause switch), resumed once the plan ended", c.Fault, c.FaultAt)})
	}
	return out
}

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// legacyFirst runs the same load with the flag at 0 % for --legacy-first,
// with its own series.
func (lg *loadgenSession) legacyFirst(ctx context.Context, st *stack) (*loadgen.Result, []loadgen.SeriesSample, error) {
	fmt.Fprintf(lg.stderr, "loadgen: %s: the same load on the legacy path first, for %v\n", lg.s.Scenario, lg.s.Cutover.LegacyFirst)
	cfg := lg.cutoverConfig(st, "legacy")
	cfg.Duration = lg.s.Cutover.LegacyFirst
	sampler := loadgen.StartSeries(ctx, loadgen.SeriesConfig{Every: lg.s.Cutover.SeriesEvery, DB: st.DB, Window: cfg.Window,
		Probe: func(ctx context.Context) loadgen.ServiceReading {
			return serviceReading(ctx, st, nil, loadgen.PhaseLegacySteady)
		}})
	res, err := runWithLockWaits(ctx, st, cfg)
	series := sampler.Stop(ctx)
	return res, series.Samples, err
}

// cutoverConfig is the scenario's load on st, labelled path.
func (lg *loadgenSession) cutoverConfig(st *stack, path string) loadgen.Config {
	cfg := lg.base
	cfg.Path, cfg.BaseURL, cfg.Auth, cfg.DB, cfg.NoCheck = path, st.URL, st.Auth, st.DB, true
	cfg.Window, cfg.Posts = loadgen.NewWindow(), 0
	if cfg.Rate <= 0 {
		cfg.Rate = defaultCutoverRate
	}
	return cfg
}

// defaultCutoverRate is the cutover's works a second without --rate: far
// above the archive's own peak (about 95,000 works a month in 2017).
const defaultCutoverRate = 50

// runWithLockWaits runs cfg and adds the server's row-lock waits during
// the run (server-wide) to its result.
func runWithLockWaits(ctx context.Context, st *stack, cfg loadgen.Config) (*loadgen.Result, error) {
	read := func() int64 {
		var name string
		var n int64
		st.DB.QueryRowContext(ctx, "SHOW GLOBAL STATUS LIKE 'Innodb_row_lock_waits'").Scan(&name, &n)
		return n
	}
	before := read()
	res, err := loadgen.Run(ctx, cfg)
	if res != nil {
		res.Server = &loadgen.ServerWork{RowLockWaits: read() - before}
	}
	return res, err
}

// writeCutover prints the report and writes the files asked for.
func (lg *loadgenSession) writeCutover(rep *loadgen.CutoverReport, stdout io.Writer) error {
	fmt.Fprintln(stdout)
	if err := rep.WriteText(stdout); err != nil {
		return err
	}
	return writeReportFiles(rep, lg.s, lg.stderr)
}
