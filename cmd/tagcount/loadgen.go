package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/cmd/tagcount/loadgen"
	"github.com/tagcount/tagcount/migrations"
)

// loadgenSettings are the flags of `tagcount loadgen`.
type loadgenSettings struct {
	Paths        string
	URL          string
	AuthSecret   string
	MySQLDSN     string
	RedisAddr    string
	Concurrency  int
	Duration     time.Duration
	Posts        int64
	Rate         float64
	Profile      string
	OpenLoop     bool
	Seed         uint64
	Authors      int
	EditShare    float64
	DeleteShare  float64
	BodyChars    int
	ProbeEvery   int
	Vocab        loadgen.Vocabulary
	MaxRetries   int
	MaxRetryWait time.Duration
	PollTimeout  time.Duration
	DrainTimeout time.Duration
	OutboxWait   time.Duration
	Ceiling      bool
	CeilingFor   time.Duration
	OutJSON      string
	OutPNG       string
	OutMarkdown  string
	LogFile      string
	PprofDir     string
	KeepDB       bool
	JobConc      int
	Limit        bool
	DBLatency    time.Duration
	Capacity     capacitySettings
	// Scenario is what the invocation runs: paths (the posting
	// benchmark), wrangling, or one of loadgen.Scenarios.
	Scenario  string
	Wrangling wranglingSettings
	Overload  overloadSettings
	Spike     spikeSettings
	Cutover   cutoverSettings
}

// capacitySettings are the flags of loadgen's --find-capacity mode.
type capacitySettings struct {
	Find      bool
	MaxP99    time.Duration
	PostedP99 time.Duration
	Probe     time.Duration
	InFlight  int
	Start     float64
	MaxProbes int
}

func (c *capacitySettings) register(fs *flag.FlagSet) {
	fs.BoolVar(&c.Find, "find-capacity", false,
		"instead of one run per path, search each path's capacity: the highest open-loop rate at which Post p99 stays under --capacity-p99 and no request fails")
	fs.DurationVar(&c.MaxP99, "capacity-p99", loadgen.DefaultCapacityP99, "with --find-capacity: the Post p99 a probe must stay under")
	fs.DurationVar(&c.PostedP99, "capacity-posted-p99", loadgen.DefaultCapacityPostedP99,
		"with --find-capacity: the Post→work posted p99 a probe must stay under on a path that posts in the background (negative: not judged)")
	fs.DurationVar(&c.Probe, "probe-duration", loadgen.DefaultProbeDuration, "with --find-capacity: how long each probe loads its fresh service")
	fs.IntVar(&c.InFlight, "probe-in-flight", loadgen.DefaultProbeInFlight, "with --find-capacity: most works in flight in a probe; an arrival beyond fails it")
	fs.Float64Var(&c.Start, "capacity-start", loadgen.DefaultCapacityStart, "with --find-capacity: the first rate probed (doubled until a probe fails, then bisected)")
	fs.IntVar(&c.MaxProbes, "capacity-probes", loadgen.DefaultCapacityMaxProbes, "with --find-capacity: most probes per path")
}

func (s *loadgenSettings) register(fs *flag.FlagSet) {
	fs.StringVar(&s.Paths, "paths", "legacy,new", "posting paths to run one after the other, each on a fresh database: legacy, new, flag")
	fs.StringVar(&s.URL, "url", "", "drive an already-running service at this URL instead (one path; needs --auth-secret)")
	fs.StringVar(&s.AuthSecret, "auth-secret", "", "HS256 secret of the service at --url")
	fs.StringVar(&s.MySQLDSN, "mysql-dsn", "root@tcp(127.0.0.1:3306)/?parseTime=true",
		"MySQL/MariaDB server DSN; each path gets its own fresh database on it (with --url: the service's database, for the checks)")
	fs.StringVar(&s.RedisAddr, "redis-addr", "127.0.0.1:6379", "Redis address for the job queue")
	fs.IntVar(&s.Concurrency, "concurrency", 64, "authors writing at once (closed loop) or most works in flight (open loop)")
	fs.DurationVar(&s.Duration, "duration", 0, "how long each path is loaded (default 20s when --posts is not set)")
	fs.Int64Var(&s.Posts, "posts", 0, "number of works each path posts (0: until --duration)")
	fs.Float64Var(&s.Rate, "rate", 0, "works started per second (0: as fast as the service goes); the peak with --profile weekend-peak")
	fs.StringVar(&s.Profile, "profile", "steady", "rate profile: steady or weekend-peak (ramps from 20% of --rate to all of it and back)")
	fs.BoolVar(&s.OpenLoop, "open-loop", false, "start works at --rate whether or not earlier ones finished")
	fs.Uint64Var(&s.Seed, "seed", 1, "workload seed: the same seed sends the same works")
	fs.IntVar(&s.Authors, "authors", loadgen.DefaultWorkload.Authors, "author ids 1..N")
	fs.Float64Var(&s.EditShare, "edit-share", loadgen.DefaultWorkload.EditShare, "share of posted works later edited (tags added and removed)")
	fs.Float64Var(&s.DeleteShare, "delete-share", loadgen.DefaultWorkload.DeleteShare, "share of posted works later deleted")
	fs.IntVar(&s.BodyChars, "body-chars", loadgen.DefaultWorkload.BodyChars, "characters in a work's body")
	fs.IntVar(&s.ProbeEvery, "probe-every", loadgen.DefaultWorkload.ProbeEvery, "every n-th work carries a fresh small tag whose count is watched (negative: none)")
	fs.IntVar(&s.Vocab.Fandoms, "fandoms", loadgen.DefaultVocabulary.Fandoms, "fandom vocabulary size")
	fs.IntVar(&s.Vocab.Characters, "characters", loadgen.DefaultVocabulary.Characters, "character vocabulary size")
	fs.IntVar(&s.Vocab.Relationships, "relationships", loadgen.DefaultVocabulary.Relationships, "relationship vocabulary size")
	fs.IntVar(&s.Vocab.Freeforms, "freeforms", loadgen.DefaultVocabulary.Freeforms, "free-form tag vocabulary size")
	fs.Float64Var(&s.Vocab.Exponent, "zipf-exponent", loadgen.DefaultVocabulary.Exponent, "Zipf exponent of tag popularity (> 1)")
	fs.IntVar(&s.MaxRetries, "max-retries", 5, "retries of a 503 or transport error before a work is given up (negative: none)")
	fs.DurationVar(&s.MaxRetryWait, "max-retry-wait", time.Second, "longest wait honoured from a Retry-After (each retry adds up to half again as jitter)")
	fs.DurationVar(&s.PollTimeout, "poll-timeout", 30*time.Second, "longest wait for a post to become a work, and for a small tag's count")
	fs.DurationVar(&s.DrainTimeout, "drain-timeout", 60*time.Second, "longest wait for posts, polls, edits and deletes after the load stops")
	fs.DurationVar(&s.OutboxWait, "outbox-wait", 15*time.Second, "longest wait for the outbox to drain before the exactness check")
	fs.BoolVar(&s.Ceiling, "ceiling", true, "also measure the bare posting transaction alone at the same concurrency, on its own fresh database")
	fs.DurationVar(&s.CeilingFor, "ceiling-duration", 0, "how long the ceiling is measured (default: --duration, at most 10s)")
	fs.StringVar(&s.OutJSON, "out-json", "loadgen.json", "file for every figure as JSON (empty: none)")
	fs.StringVar(&s.OutPNG, "out-png", "loadgen.png", "file for the chart of posts/s and Post p99 over time (empty: none)")
	fs.StringVar(&s.OutMarkdown, "out-md", "", "file for the table as Markdown (empty: none)")
	fs.StringVar(&s.LogFile, "log-file", "", "the in-process service's log (default: a file in the temp dir)")
	fs.StringVar(&s.PprofDir, "pprof-dir", "", "write a CPU profile of each path's run to this directory")
	fs.BoolVar(&s.KeepDB, "keep-db", false, "keep each path's database instead of dropping it")
	fs.BoolVar(&s.Limit, "posting-limit", false, "run the in-process services with the adaptive posting limit (the service's --posting-limit)")
	fs.IntVar(&s.JobConc, "job-concurrency", 0, "jobs the in-process worker runs at once (0: the service's default)")
	fs.DurationVar(&s.DBLatency, "db-latency", 0,
		"model the database one network hop away: delay every packet to and from it by this much each way, in process, for every path and the ceiling (e.g. 250us; 0: none)")
	s.Capacity.register(fs)
	fs.StringVar(&s.Scenario, "scenario", "paths",
		"paths: one run per --paths; wrangling: the new path twice, plainly and while a wrangling job re-files a big tag's works; "+
			"spike: the first of --paths at half of --rate, twice --rate for --spike-for, half again; "+
			strings.Join(loadgen.Scenarios, ", ")+": one party's load beside normal authors, rate limits and quotas on (docs/operations.md); "+
			"cutover: the new path rolled out by the guarded plan and the whole reconcile on an archive-shaped database; rollout: the plan alone")
	s.Wrangling.register(fs)
	s.Overload.register(fs)
	s.Spike.register(fs)
	s.Cutover.register(fs)
}

// runLoadgen drives the same production-like posting workload through
// each posting path of a service started in process on a fresh database
// (or through the service at --url), measures the machine's ceiling, and
// prints the comparison; the JSON and the chart go to files.
func runLoadgen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	s, paths, err := parseLoadgen(args, stderr)
	if err != nil {
		return err
	}
	lg, err := startLoadgen(ctx, s, args, stderr)
	if err != nil {
		return err
	}
	defer lg.close()
	if slices.Contains(loadgen.Scenarios, s.Scenario) {
		return lg.runScenario(ctx, args, stdout)
	}
	if s.Scenario == loadgen.ScenarioSpike {
		return lg.runSpike(ctx, args, stdout, paths[0])
	}
	if s.Scenario == scenarioCutover || s.Scenario == scenarioRollout {
		return lg.runCutover(ctx, args, stdout)
	}
	if s.Capacity.Find {
		return lg.findCapacity(ctx, paths, stdout)
	}
	if s.Scenario == "wrangling" {
		return lg.runWranglingScenario(ctx, stdout)
	}
	for _, path := range paths {
		if ctx.Err() != nil {
			break
		}
		res, err := lg.runPath(ctx, path)
		if err != nil {
			return err
		}
		lg.rep.Results = append(lg.rep.Results, res)
		fmt.Fprintf(stderr, "loadgen: %s: %.1f posts/s completed, post p99 %.1f ms, %d deadlocks, %d lock-wait timeouts\n",
			path, res.PostsPerSec, res.Latency["post"].P99, res.Errors.Deadlock, res.Errors.LockWait)
	}
	if s.Ceiling && s.URL == "" && ctx.Err() == nil {
		if lg.rep.Ceiling, err = lg.runCeiling(ctx); err != nil {
			return err
		}
	}
	lg.rep.Finish()
	fmt.Fprintln(stdout)
	if err := lg.rep.WriteText(stdout); err != nil {
		return err
	}
	if err := writeLoadgenFiles(lg.rep, s, stderr); err != nil {
		return err
	}
	return ctx.Err()
}

// parseLoadgen parses and checks loadgen's flags, and returns the paths to
// run in order.
func parseLoadgen(args []string, stderr io.Writer) (loadgenSettings, []string, error) {
	var s loadgenSettings
	if _, err := parse("loadgen", args, stderr, nil, s.register); err != nil {
		return s, nil, err
	}
	if s.Duration <= 0 && s.Posts <= 0 {
		s.Duration = 20 * time.Second
	}
	var paths []string
	for _, p := range strings.Split(s.Paths, ",") {
		switch p = strings.TrimSpace(p); p {
		case "":
		case "legacy", "new", "flag":
			paths = append(paths, p)
		default:
			return s, nil, fmt.Errorf("--paths: unknown path %q (want legacy, new or flag)", p)
		}
	}
	if len(paths) == 0 {
		return s, nil, errors.New("--paths names no path")
	}
	known := append([]string{"paths", "wrangling", loadgen.ScenarioSpike, scenarioCutover, scenarioRollout}, loadgen.Scenarios...)
	if !slices.Contains(known, s.Scenario) {
		return s, nil, fmt.Errorf("--scenario: unknown scenario %q (want %s)", s.Scenario, strings.Join(known, ", "))
	}
	if err := s.Spike.validate(s); err != nil {
		return s, nil, err
	}
	if w := s.Wrangling; s.Scenario == "wrangling" && (s.URL != "" || s.Capacity.Find || w.SeedWorks <= 0 || w.RowsPerTx < 4 || w.PerSecond <= w.RowsPerTx) {
		return s, nil, errors.New("--scenario wrangling starts its own stacks (not --url, not --find-capacity) and needs --wrangle-seed-works > 0 and 4 ≤ --wrangle-rows-per-tx < --wrangle-rows-per-second")
	}
	if s.DBLatency < 0 || (s.DBLatency > 0 && s.URL != "") {
		return s, nil, errors.New("--db-latency is a positive delay, and applies only to the stacks loadgen starts (not with --url)")
	}
	if c := s.Capacity; c.Find && (s.URL != "" || c.Probe <= 0 || c.InFlight <= 0 || c.MaxP99 <= 0 || c.Start <= 0 || c.MaxProbes <= 0) {
		return s, nil, errors.New("--find-capacity needs positive --capacity-* and --probe-* values, and fresh in-process stacks (not --url)")
	}
	if err := s.Overload.validate(s); err != nil {
		return s, nil, err
	}
	if err := s.Cutover.validate(s); err != nil {
		return s, nil, err
	}
	if s.URL != "" {
		if len(paths) != 1 {
			return s, nil, errors.New("with --url the service runs one path: give --paths with exactly one (its label)")
		}
		if s.AuthSecret == "" {
			return s, nil, errors.New("with --url, --auth-secret (TAGCOUNT_AUTH_SECRET) is the service's token secret")
		}
	}
	return s, paths, nil
}

// loadgenSession is what the runs of one `tagcount loadgen` share: the
// workload, the service log, the database server and the report.
type loadgenSession struct {
	s       loadgenSettings
	runID   string
	secret  string // signs the in-process stacks' tokens
	wl      *loadgen.Workload
	base    loadgen.Config // every path's run, but for the path and the service
	log     *slog.Logger
	logFile *os.File
	prevLog *slog.Logger
	server  *migrations.DB
	rep     *loadgen.Report
	stderr  io.Writer
	unlink  func() // forgets the delay line's network, if any
}

// startLoadgen builds the workload, opens the service log and the database
// server, and starts the report.
func startLoadgen(ctx context.Context, s loadgenSettings, args []string, stderr io.Writer) (*loadgenSession, error) {
	profile, err := loadgen.ParseProfile(s.Profile)
	if err != nil {
		return nil, err
	}
	lg := &loadgenSession{s: s, runID: randomHex(4), secret: randomHex(32), stderr: stderr}
	if lg.wl, err = loadgenWorkload(s, lg.runID); err != nil {
		return nil, err
	}
	if err := lg.openLog(); err != nil {
		return nil, err
	}
	lg.rep = &loadgen.Report{Command: "tagcount loadgen " + strings.Join(args, " "), Started: time.Now(), Workload: lg.wl.Options()}
	if lg.server, err = loadgenServer(ctx, s); err != nil {
		lg.close()
		return nil, err
	}
	lg.rep.Machine = loadgen.ThisMachine(lg.server.Version)
	lg.base = loadgen.Config{
		Workload: lg.wl, Concurrency: s.Concurrency, Duration: s.Duration, Posts: s.Posts, Rate: s.Rate, Profile: profile,
		OpenLoop: s.OpenLoop, MaxRetries: s.MaxRetries, MaxRetryWait: s.MaxRetryWait, PollTimeout: s.PollTimeout,
		DrainTimeout: s.DrainTimeout, OutboxWait: s.OutboxWait, Progress: stderr, RedisAddr: s.RedisAddr,
	}
	if s.DBLatency > 0 {
		if err := lg.startLink(ctx); err != nil {
			lg.close()
			return nil, err
		}
	}
	return lg, nil
}

// Calibration of the delay line's CPU cost: connections and time per phase.
const (
	linkCalibrationConns = 16
	linkCalibrationPhase = time.Second
)

// startLink puts a delay line of --db-latency between the stacks loadgen
// starts and their database: the DSN they are given dials through it. It
// first measures what the line costs in CPU, while nothing else runs.
func (lg *loadgenSession) startLink(ctx context.Context) error {
	cfg, err := mysql.ParseDSN(lg.s.MySQLDSN)
	if err != nil {
		return fmt.Errorf("--mysql-dsn: %w", err)
	}
	if cfg.Net != "tcp" {
		return fmt.Errorf("--db-latency needs a TCP --mysql-dsn, not %q", cfg.Net)
	}
	fmt.Fprintf(lg.stderr, "loadgen: db link: %v each way; measuring its CPU cost (%v)\n", lg.s.DBLatency, 2*linkCalibrationPhase)
	cost, err := loadgen.MeasureDelayCost(ctx, lg.s.DBLatency, linkCalibrationConns, linkCalibrationPhase)
	if err != nil {
		return fmt.Errorf("measuring the delay line's cost: %w", err)
	}
	line := loadgen.NewDelayLine(lg.s.DBLatency)
	cfg.Net = "tcp+delay-" + lg.runID
	lg.unlink = line.RegisterMySQL(cfg.Net)
	// Both paths and the ceiling start their stacks from this DSN.
	lg.s.MySQLDSN = cfg.FormatDSN()
	lg.base.DBLink, lg.base.DBLinkCost = line, &cost
	lg.rep.DBLink = &loadgen.DBLink{OneWayMs: float64(lg.s.DBLatency) / float64(time.Millisecond), Cost: cost}
	return nil
}

// loadgenWorkload is the workload of s; with --url its probe tags are named
// after the run, since the service's database may hold an earlier run's.
func loadgenWorkload(s loadgenSettings, runID string) (*loadgen.Workload, error) {
	probePrefix := fmt.Sprintf("probe %d", s.Seed)
	if s.URL != "" {
		probePrefix = "probe " + runID
	}
	return loadgen.NewWorkload(loadgen.WorkloadOptions{
		Seed: s.Seed, Authors: s.Authors, Vocabulary: s.Vocab, EditShare: nonZero(s.EditShare), DeleteShare: nonZero(s.DeleteShare),
		BodyChars: s.BodyChars, ProbeEvery: s.ProbeEvery, ProbePrefix: probePrefix,
	})
}

// openLog sends the in-process service's warnings to the log file, and the
// default logger there too until close.
func (lg *loadgenSession) openLog() error {
	logPath := lg.s.LogFile
	if logPath == "" {
		logPath = filepath.Join(os.TempDir(), "tagcount-loadgen-"+lg.runID+".log")
	}
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	lg.logFile = f
	lg.log = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelWarn}))
	fmt.Fprintf(lg.stderr, "loadgen: run %s, seed %d; service log: %s\n", lg.runID, lg.s.Seed, logPath)
	// Handlers log failed requests through the default logger; under load
	// (the legacy path's deadlocks) that is thousands of lines.
	lg.prevLog = slog.Default()
	slog.SetDefault(lg.log)
	return nil
}

func (lg *loadgenSession) close() {
	if lg.server != nil {
		lg.server.Close()
	}
	if lg.unlink != nil {
		lg.unlink()
	}
	slog.SetDefault(lg.prevLog)
	lg.logFile.Close()
}

// runPath runs the workload through one path: on a fresh in-process stack,
// or through the service at --url.
func (lg *loadgenSession) runPath(ctx context.Context, path string) (*loadgen.Result, error) {
	cfg := lg.base
	cfg.Path = path
	if lg.s.URL == "" {
		return lg.runOnStack(ctx, cfg, lg.runID, path)
	}
	cfg.BaseURL, cfg.Auth = lg.s.URL, httpapi.Auth{Secret: []byte(lg.s.AuthSecret)}
	if db, ok := loadgenServiceDB(ctx, lg.s.MySQLDSN, lg.stderr); ok {
		defer db.Close()
		cfg.DB = db
	}
	return lg.profiled(ctx, cfg)
}

// runOnStack runs cfg on a fresh in-process stack of cfg.Path, whose
// database is named after label and queue after runID, and drops the
// database after (unless --keep-db).
func (lg *loadgenSession) runOnStack(ctx context.Context, cfg loadgen.Config, runID, label string) (*loadgen.Result, error) {
	database := "tagcount_loadgen_" + lg.runID + "_" + label
	st, stop, err := loadgenStack(ctx, lg.s, runID, cfg.Path, database, lg.secret, lg.log, true)
	if err != nil {
		return nil, fmt.Errorf("starting the %s path's service: %w", cfg.Path, err)
	}
	defer func() {
		if err := stop(); err != nil {
			fmt.Fprintf(lg.stderr, "loadgen: stopping the %s path's service: %v\n", cfg.Path, err)
		}
		loadgenDrop(lg.server, database, lg.s.KeepDB, lg.stderr)
	}()
	cfg.BaseURL, cfg.Auth, cfg.DB = st.URL, st.Auth, st.DB
	res, err := lg.profiled(ctx, cfg)
	writeStages(lg.stderr, cfg.Path, st.Registry)
	return res, err
}

// profiled runs cfg, with a CPU profile when --pprof-dir asks for one.
func (lg *loadgenSession) profiled(ctx context.Context, cfg loadgen.Config) (*loadgen.Result, error) {
	debug.FreeOSMemory()
	stopProfile, err := loadgenProfile(lg.s.PprofDir, cfg.Path, cfg.Duration/2)
	if err != nil {
		return nil, err
	}
	defer stopProfile()
	fmt.Fprintf(lg.stderr, "loadgen: %s path at %s\n", cfg.Path, cfg.BaseURL)
	return loadgen.Run(ctx, cfg)
}

// findCapacity searches each path's capacity with short open-loop probes,
// each on a fresh stack, and prints and writes the probes and capacities.
func (lg *loadgenSession) findCapacity(ctx context.Context, paths []string, stdout io.Writer) error {
	c := lg.s.Capacity
	lg.rep.Capacity = &loadgen.CapacityReport{MaxP99Ms: float64(c.MaxP99) / float64(time.Millisecond),
		ProbeSeconds: c.Probe.Seconds(), InFlight: c.InFlight}
	lg.rep.Capacity.MaxPostedP99 = float64(c.PostedP99) / float64(time.Millisecond)
	o := loadgen.CapacityOptions{MaxP99: c.MaxP99, MaxPostedP99: c.PostedP99, Start: c.Start, MaxProbes: c.MaxProbes}
	var err error
	for _, path := range paths {
		n := 0
		probe := func(ctx context.Context, rate float64) (*loadgen.Result, error) {
			n++
			fmt.Fprintf(lg.stderr, "loadgen: capacity of %s: probe %d at %.1f works/s\n", path, n, rate)
			cfg := lg.base
			cfg.Path, cfg.Rate, cfg.OpenLoop, cfg.Profile = path, rate, true, loadgen.Steady
			cfg.Duration, cfg.Posts, cfg.Concurrency = c.Probe, 0, c.InFlight
			return lg.runOnStack(ctx, cfg, fmt.Sprintf("%s-p%d", lg.runID, n), fmt.Sprintf("%s_p%d", path, n))
		}
		var pc *loadgen.PathCapacity
		pc, err = loadgen.FindCapacity(ctx, path, o, probe)
		lg.rep.Capacity.Paths = append(lg.rep.Capacity.Paths, pc)
		if err != nil {
			break
		}
	}
	lg.rep.Finish()
	fmt.Fprintln(stdout)
	if werr := lg.rep.WriteText(stdout); werr != nil {
		return werr
	}
	if werr := writeLoadgenFiles(lg.rep, lg.s, lg.stderr); werr != nil {
		return werr
	}
	return err
}

// runCeiling measures the bare posting transaction alone on its own fresh
// database, at the runs' concurrency.
func (lg *loadgenSession) runCeiling(ctx context.Context) (*loadgen.Ceiling, error) {
	s := lg.s
	d := s.CeilingFor
	if d <= 0 && s.Duration > 0 {
		d = min(s.Duration, 10*time.Second)
	}
	database := "tagcount_loadgen_" + lg.runID + "_ceiling"
	st, stop, err := loadgenStack(ctx, s, lg.runID, "new", database, lg.secret, lg.log, false)
	if err != nil {
		return nil, fmt.Errorf("starting the ceiling's database: %w", err)
	}
	fmt.Fprintf(lg.stderr, "loadgen: ceiling: the bare posting transaction at concurrency %d\n", s.Concurrency)
	c, err := loadgen.RunBare(ctx, st.Poster.PostContent, lg.wl, s.Concurrency, d, s.Posts)
	stop()
	loadgenDrop(lg.server, database, s.KeepDB, lg.stderr)
	return c, err
}

// writeLoadgenFiles writes the report to the files s asks for; a chart
// only of runs (a capacity search has none).
func writeLoadgenFiles(rep *loadgen.Report, s loadgenSettings, stderr io.Writer) error {
	if len(rep.Results) == 0 {
		s.OutPNG = ""
	}
	return writeReportFiles(rep, s, stderr)
}

// reportFiles is a report that writes itself as JSON, a chart and Markdown.
type reportFiles interface {
	WriteJSON(path string) error
	WritePNG(path string) error
	WriteMarkdown(w io.Writer) error
}

// writeReportFiles writes rep to the files s asks for (--out-json,
// --out-png, --out-md).
func writeReportFiles(rep reportFiles, s loadgenSettings, stderr io.Writer) error {
	if s.OutJSON != "" {
		if err := rep.WriteJSON(s.OutJSON); err != nil {
			return err
		}
	}
	if s.OutPNG != "" {
		if err := rep.WritePNG(s.OutPNG); err != nil {
			return err
		}
	}
	if s.OutMarkdown != "" {
		f, err := os.Create(s.OutMarkdown)
		if err != nil {
			return err
		}
		if err := rep.WriteMarkdown(f); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	fmt.Fprintf(stderr, "loadgen: wrote %s\n", strings.Join(nonEmpty(s.OutJSON, s.OutPNG, s.OutMarkdown), ", "))
	return nil
}

// loadgenStack starts the service for one path on a fresh database; with
// roles false only the database and the poster (for the bare transaction);
// extra adjusts the options (a scenario's settings).
// stop closes it and removes its data dir.
func loadgenStack(ctx context.Context, s loadgenSettings, runID, path, database, secret string, log *slog.Logger, roles bool,
	extra ...func(*stackOptions)) (st *stack, stop func() error, err error) {
	dataDir, err := os.MkdirTemp("", "tagcount-loadgen-"+path+"-")
	if err != nil {
		return nil, nil, err
	}
	o := stackOptions{
		MySQLDSN: s.MySQLDSN, Database: database, Create: true, Migrate: true,
		RedisAddr: s.RedisAddr, Queue: "loadgen-" + runID + "-" + path, Path: path,
		AuthSecret: secret, DataDir: dataDir, Logger: log,
		API: roles, Worker: roles, Counter: roles, JobConcurrency: s.JobConc, EmbeddedKafka: true, PostingLimit: s.Limit,
	}
	for _, set := range extra {
		set(&o)
	}
	if st, err = startStack(ctx, o); err != nil {
		os.RemoveAll(dataDir)
		return nil, nil, err
	}
	return st, func() error {
		err := st.Close()
		os.RemoveAll(dataDir)
		return err
	}, nil
}

// loadgenServer opens the database server without a database, for its
// version and for dropping the runs' databases.
func loadgenServer(ctx context.Context, s loadgenSettings) (*migrations.DB, error) {
	cfg, err := mysql.ParseDSN(s.MySQLDSN)
	if err != nil {
		return nil, fmt.Errorf("--mysql-dsn: %w", err)
	}
	cfg.DBName = ""
	return migrations.Open(ctx, cfg.FormatDSN())
}

// loadgenServiceDB opens the database of the service at --url when the DSN
// names one, for rows written and the exactness check.
func loadgenServiceDB(ctx context.Context, dsn string, stderr io.Writer) (*migrations.DB, bool) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil || cfg.DBName == "" {
		fmt.Fprintln(stderr, "loadgen: --mysql-dsn names no database; skipping rows written and the exactness check")
		return nil, false
	}
	db, err := migrations.Open(ctx, dsn)
	if err != nil {
		fmt.Fprintf(stderr, "loadgen: %v; skipping rows written and the exactness check\n", err)
		return nil, false
	}
	return db, true
}

func loadgenDrop(server *migrations.DB, database string, keep bool, stderr io.Writer) {
	if keep || database == "" {
		return
	}
	if _, err := server.Exec("DROP DATABASE IF EXISTS `" + database + "`"); err != nil {
		fmt.Fprintf(stderr, "loadgen: dropping %s: %v\n", database, err)
	}
}

// loadgenProfile starts a CPU profile of one path's run when dir is set,
// and dumps every goroutine's stack and a heap profile after dumpAfter
// (where the service waits and what it holds, halfway through the load).
func loadgenProfile(dir, path string, dumpAfter time.Duration) (stop func(), err error) {
	if dir == "" {
		return func() {}, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.Create(filepath.Join(dir, path+".cpu.pprof"))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	dump := time.AfterFunc(max(dumpAfter, time.Second), func() {
		if g, err := os.Create(filepath.Join(dir, path+".goroutines.txt")); err == nil {
			pprof.Lookup("goroutine").WriteTo(g, 1)
			g.Close()
		}
		if h, err := os.Create(filepath.Join(dir, path+".heap.pprof")); err == nil {
			pprof.Lookup("heap").WriteTo(h, 0)
			h.Close()
		}
	})
	return func() { dump.Stop(); pprof.StopCPUProfile(); f.Close() }, nil
}

// nonZero turns an explicit 0 share into the workload's "none" (negative),
// since a zero option means the default there.
func nonZero(share float64) float64 {
	if share == 0 {
		return -1
	}
	return share
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
