package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/flags"
	"github.com/tagcount/tagcount/flags/rollout"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/poster"
)

// rolloutOptions configure the guarded rollout's runner in a process with
// the API role (docs/operations.md, "Guarded rollout"). Zero values take
// package rollout's defaults.
type rolloutOptions struct {
	// AdminToken (or the first line of AdminTokenFile) is an Unleash admin
	// API token. With an Unleash URL and no admin token, this process runs
	// no plan (another one with a token does).
	AdminToken, AdminTokenFile string
	// Environment is the Unleash environment the flag is moved in; default
	// the one the client token names ("project:environment.secret"), else
	// "production".
	Environment string
	Interval    time.Duration
	Guards      rollout.Guards
	// Measures replaces the database's measures (tests that inject faults
	// into the measures themselves); nil reads the database.
	Measures rollout.Measures
}

func (o *rolloutOptions) register(fs *flag.FlagSet) {
	g := &o.Guards
	fs.StringVar(&o.AdminToken, "unleash-admin-token", "", "Unleash admin API token the guarded rollout moves the new-path flag with")
	fs.StringVar(&o.AdminTokenFile, "unleash-admin-token-file", "", "file holding the Unleash admin API token (instead of --unleash-admin-token)")
	fs.StringVar(&o.Environment, "unleash-environment", "", "Unleash environment the rollout moves the flag in (default: the client token's, else production)")
	fs.DurationVar(&o.Interval, "rollout-interval", rollout.DefaultInterval, "how often the rollout runner reads its guards")
	fs.Float64Var(&g.ErrorMargin, "rollout-error-margin", rollout.DefaultErrorMargin, "how far the new path's Post error ratio may exceed legacy's")
	fs.DurationVar(&g.PostP99, "rollout-post-p99", rollout.DefaultPostP99, "bound of the new path's Post answer p99")
	fs.DurationVar(&g.FreshnessP99, "rollout-freshness-p99", rollout.DefaultFreshnessP99, "bound of the new path's Post → small-tag count p99")
	fs.DurationVar(&g.OutboxAge, "rollout-outbox-age", rollout.DefaultOutboxAge, "bound of the oldest outbox row's age (above the large tier's interval)")
	fs.Int64Var(&g.ConsumerLag, "rollout-consumer-lag", rollout.DefaultConsumerLag, "bound of the outbox rows the counter has not applied")
	fs.Int64Var(&g.BacklogGrowth, "rollout-backlog-growth", rollout.DefaultBacklogGrowth, "how many more drafts may wait for posting than when a step began")
	fs.Int64Var(&g.MinPosts, "rollout-min-posts", rollout.DefaultMinPosts, "new-path Posts a step's window needs before the per-post guards decide")
	fs.Int64Var(&g.MinEvaluations, "rollout-min-evaluations", rollout.DefaultMinEvaluations, "reads a step's window needs before the outbox and backlog guards decide")
	fs.Float64Var(&g.SevereFactor, "rollout-severe-factor", rollout.DefaultSevereFactor, "a guard this many times over its bound rolls back to 0 % instead of the last step")
}

// startRollout records the API's Posts for the guards and runs the plan's
// runner, moving the flag where this process can: through the Unleash admin
// API, or in its own flag source when it runs on the bootstrap.
func (s *stack) startRollout(context.Context) error {
	if !s.opts.API {
		return nil
	}
	var err error
	if s.recorder, err = rollout.NewRecorder(rollout.RecorderConfig{DB: s.DB, Logger: s.log}); err != nil {
		return err
	}
	s.goRun("rollout-samples", s.recorder.Run)
	setter, why, err := s.rolloutSetter()
	if err != nil {
		return err
	}
	if setter == nil {
		s.log.Info("this process runs no rollout plan; it reports the latest in its metrics", "why", why)
	}
	o := s.opts.Rollout
	var measures rollout.Measures = rollout.DBMeasures{DB: s.DB, SmallBelow: s.opts.Tiers.WithDefaults().MediumFrom,
		Retrying: poster.Retrying{Inspector: s.inspector, Queue: s.opts.Queue}}
	if o.Measures != nil {
		measures = o.Measures
	}
	runner, err := rollout.NewRunner(rollout.RunnerConfig{DB: s.DB, Setter: setter, Measures: measures, Guards: o.Guards,
		Interval: o.Interval, Logger: s.log, Registerer: s.Registry})
	if err != nil {
		return err
	}
	s.goRun("rollout", runner.Run)
	return nil
}

func (s *stack) rolloutSetter() (rollout.Setter, string, error) {
	o, fc := s.opts.Rollout, s.opts.Flags
	switch {
	case s.opts.Path != "" && s.opts.Path != "flag":
		return nil, "--posting-path is " + s.opts.Path + ", so the flag decides nothing", nil
	case fc.URL == "":
		return rollout.LocalFlags{Client: s.Flags}, "", nil
	}
	token := o.AdminToken
	if o.AdminTokenFile != "" {
		b, err := os.ReadFile(o.AdminTokenFile)
		if err != nil {
			return nil, "", fmt.Errorf("--unleash-admin-token-file: %w", err)
		}
		token, _, _ = strings.Cut(strings.TrimSpace(string(b)), "\n")
	}
	if token == "" {
		return nil, "no --unleash-admin-token (or -file) to move the flag with", nil
	}
	env := o.Environment
	if env == "" {
		env = "production"
		if _, rest, ok := strings.Cut(fc.Token, ":"); ok {
			if e, _, ok := strings.Cut(rest, "."); ok && e != "" && e != "*" {
				env = e
			}
		}
	}
	return rollout.UnleashAdmin{URL: fc.URL, Token: token, Environment: env, Flag: flags.NewPostingPath}, "", nil
}

// runRollout is `tagcount rollout start|status|pause|resume|abort|history`:
// it changes and reads the plan in the database; the runner of a process
// with the API role carries it out.
func runRollout(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stderr, "usage: tagcount rollout start|status|pause|resume|abort|history [flags]")
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			return flag.ErrHelp
		}
		return errUsage
	}
	sub := args[0]
	var dsn, steps, reason string
	var hold time.Duration
	var limit int
	if _, err := parse("rollout "+sub, args[1:], stderr, nil, func(fs *flag.FlagSet) {
		fs.StringVar(&dsn, "mysql-dsn", migrations.DefaultDSN, "MySQL/MariaDB DSN (go-sql-driver format)")
		if sub == "start" {
			fs.StringVar(&steps, "steps", "1,5,25,50,100", "rollout percentages, comma-separated, increasing")
			fs.DurationVar(&hold, "hold", 10*time.Minute, "how long each step is held while its guards hold")
		}
		if sub == "abort" {
			fs.StringVar(&reason, "reason", "aborted by an operator", "why, for the plan's history")
		}
		if sub == "history" {
			fs.IntVar(&limit, "limit", 20, "most recent plans shown")
		}
	}); err != nil {
		return err
	}
	db, err := migrations.Open(ctx, dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	plans := rollout.Plans{DB: db}
	who := cliActor()
	var p rollout.Plan
	switch sub {
	case "start":
		pcts, perr := parseSteps(steps)
		if perr != nil {
			return perr
		}
		p, err = plans.Start(ctx, pcts, hold, who)
	case "status":
		p, err = plans.Latest(ctx)
	case "pause":
		p, err = plans.Pause(ctx, who)
	case "resume":
		p, err = plans.Resume(ctx, who)
	case "abort":
		p, err = plans.Abort(ctx, who, reason)
	case "history":
		return printHistory(ctx, plans, limit, stdout)
	default:
		return fmt.Errorf("unknown rollout command %q: start, status, pause, resume, abort or history", sub)
	}
	if err != nil {
		return err
	}
	return printJSON(stdout, httpapi.NewRolloutJSON(p, nil))
}

func printHistory(ctx context.Context, plans rollout.Plans, limit int, stdout io.Writer) error {
	list, decisions, err := plans.History(ctx, limit)
	if err != nil {
		return err
	}
	out := make([]httpapi.RolloutJSON, 0, len(list))
	for _, p := range list {
		out = append(out, httpapi.NewRolloutJSON(p, decisions[p.ID]))
	}
	return printJSON(stdout, map[string]any{"plans": out})
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// parseSteps parses "1,5,25" and checks it as a plan's steps.
func parseSteps(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("--steps: %q is not a whole percentage", f)
		}
		out = append(out, n)
	}
	if err := rollout.ValidateSteps(out); err != nil {
		return nil, fmt.Errorf("--steps: %w", err)
	}
	return out, nil
}

// cliActor names the operator for a plan's history: cli:<user>@<host>.
func cliActor() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return "cli:" + name + "@" + host
}
