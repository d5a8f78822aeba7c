package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/flags"
	"github.com/tagcount/tagcount/migrations"
)

// serve runs a stack with the roles picked by set until ctx ends (SIGTERM),
// then shuts it down gracefully.
func serve(ctx context.Context, name string, args []string, stdout, stderr io.Writer, set func(*stackOptions)) error {
	var s settings
	if _, err := parse(name, args, stderr, &s, nil); err != nil {
		return err
	}
	log := newLogger(stderr, s.LogLevel, s.LogFormat)
	if s.AuthSecret == "" && name == "api" {
		return fmt.Errorf("TAGCOUNT_AUTH_SECRET (or --auth-secret) is required")
	}
	o := s.stackOptions()
	o.Logger = log
	set(&o)
	st, err := startStack(ctx, o)
	if err != nil {
		return err
	}
	log.Info("tagcount started", "role", name, "url", st.URL, "admin_url", st.AdminURL,
		"shutdown_budget", shutdownBudget(name, s))
	<-ctx.Done()
	drain(log, name, st, s.ShutdownDelay)
	return st.Close()
}

// closeSlack is what closing takes after the drain and the flush: the
// publisher's last send, leaving the consumer group, closing the pools.
const closeSlack = 15 * time.Second

// shutdownBudget returns the longest a role takes from SIGTERM to exit
// with settings s: the delay, the HTTP drain (--shutdown-timeout), the
// worker's jobs (--shutdown-timeout again, after the listeners), the
// counter's flush (--counter-flush-timeout), and closeSlack. Kubernetes'
// terminationGracePeriodSeconds must be at least this, or the pod is killed
// halfway (nothing is lost, but requests and flushes are cut short).
func shutdownBudget(role string, s settings) time.Duration {
	b := s.ShutdownDelay + s.ShutdownTimeout + closeSlack
	switch role {
	case "worker", "dev":
		b += s.ShutdownTimeout
	}
	switch role {
	case "counter", "dev":
		b += s.CounterFlushTimeout
	}
	return b
}

// defaultShutdownDelay covers a few periods of a readiness probe and the
// time a load balancer takes to act on it.
const defaultShutdownDelay = 5 * time.Second

// drain makes /readyz answer 503 and keeps serving for delay, so load
// balancers (and Kubernetes endpoints) stop sending before the port closes.
// The whole way out is bounded: delay, then up to --shutdown-timeout for
// requests and jobs in flight, and --counter-flush-timeout for the counter
// (docs/operations.md, "Deploying").
func drain(log *slog.Logger, role string, st *stack, delay time.Duration) {
	st.Drain()
	log.Info("stopping: /readyz answers 503; serving on before draining", "role", role, "shutdown_delay", delay)
	time.Sleep(delay) // the delay is the point: traffic moves away meanwhile
	log.Info("shutting down", "role", role)
}

func (s *settings) stackOptions() stackOptions {
	return stackOptions{
		MySQLDSN: s.MySQLDSN, RedisAddr: s.RedisAddr, Redis: s.Redis, Kafka: s.Kafka.security, Queue: s.Queue, Path: s.PostingPath,
		AuthSecret: s.AuthSecret, MaxTokenLifetime: s.MaxTokenLifetime, AuthIssuer: s.AuthIssuer, AuthAudience: s.AuthAudience,
		DataDir: s.DataDir, HTTPAddr: s.HTTPAddr, Brokers: s.brokers(),
		NoCreateTopics: !s.KafkaCreateTopics,
		Topic:          s.KafkaTopic, CountsTopic: s.CountsTopic, Partitions: s.KafkaPartitions, ReconcileAt: s.ReconcileAt,
		ShutdownTimeout: s.ShutdownTimeout, CounterFlushTimeout: s.CounterFlushTimeout, AdminAddr: s.AdminAddr, JobPoll: s.JobPoll, JobConcurrency: s.JobConcurrency, PostingLimit: s.PostingLimit,
		Tiers: s.Tiers, PublishDropRate: s.PublishDropRate, ReconcileReadDSN: s.ReconcileReadDSN,
		WrangleRowsPerTx: s.WrangleRowsPerTx, WrangleRowsPerSecond: s.WrangleRowsPerSecond,
		Flags: flags.Config{URL: s.UnleashURL, Token: s.UnleashToken, RefreshInterval: s.UnleashRefresh,
			BootstrapFile: s.FlagsBootstrap},
		Edge: s.Edge.edge(), MaxDrafts: s.MaxDrafts, NewTagsPerDay: s.NewTagsPerDay,
		BulkAfter: s.BulkAfter, Pools: s.Pools, Rollout: s.Rollout,
	}
}

func runAPI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return serve(ctx, "api", args, stdout, stderr, func(o *stackOptions) { o.API = true })
}

func runWorker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return serve(ctx, "worker", args, stdout, stderr, func(o *stackOptions) { o.Worker = true })
}

func runCounter(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return serve(ctx, "counter", args, stdout, stderr, func(o *stackOptions) { o.Counter = true })
}

// runDev runs every role in one process on the local services, with an
// embedded Kafka broker, and prints how to try it.
func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var s settings
	if _, err := parse("dev", args, stderr, &s, nil); err != nil {
		return err
	}
	log := newLogger(stderr, s.LogLevel, s.LogFormat)
	if s.AuthSecret == "" {
		secret, err := devSecret(s.DataDir)
		if err != nil {
			return fmt.Errorf("dev secret in %s: %w", s.DataDir, err)
		}
		s.AuthSecret = secret
	}
	o := s.stackOptions()
	o.Logger = log
	o.Create, o.Migrate = true, true
	o.API, o.Worker, o.Counter = true, true, true
	o.EmbeddedKafka = true
	st, err := startStack(ctx, o)
	if err != nil {
		return err
	}
	ttl := 30 * 24 * time.Hour
	if l := st.Auth.MaxLifetime; l > 0 {
		ttl = min(ttl, l)
	}
	tok, _ := st.Auth.IssueToken(42, httpapi.RoleAuthor, ttl)
	adminTok, _ := st.Auth.IssueToken(1, httpapi.RoleAdmin, ttl)
	fmt.Fprintf(stdout, `tagcount dev is running at %[1]s  (MySQL %[2]s, Redis %[3]s, Kafka %[4]v)

An author token (author 42) and an admin token:
  export TOKEN=%[5]s
  export ADMIN=%[6]s

Write a draft, post it, and read the work and a tag count:
  D=$(curl -s -X POST %[1]s/v1/drafts -H "Authorization: Bearer $TOKEN" -d '{"title":"First","body":"Hello","tags":{"rating":"General Audiences","warnings":["No Archive Warnings Apply"],"fandoms":["Star Trek"],"freeforms":["Fluff"]}}' | sed -E 's/.*"id":([0-9]+).*/\1/'); echo "draft $D"
  curl -s -X POST %[1]s/v1/drafts/$D/post -H "Authorization: Bearer $TOKEN"
  W=$(curl -s %[1]s/v1/drafts/$D -H "Authorization: Bearer $TOKEN" | sed -E 's/.*"work_id":([0-9]+).*/\1/'); echo "work $W"
  curl -s %[1]s/v1/works/$W -H "Authorization: Bearer $TOKEN"
  curl -s "%[1]s/v1/tags?type=fandom&name=Star%%20Trek" -H "Authorization: Bearer $TOKEN"

Ctrl-C stops it.
`, st.URL, migrations.RedactDSN(st.DSN), s.RedisAddr, st.Brokers, tok, adminTok)
	<-ctx.Done()
	log.Info("shutting down")
	return st.Close()
}

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var s settings
	var m migrateOptions
	rest, err := parse("migrate", args, stderr, &s, m.register)
	if err != nil {
		return err
	}
	return migrate(ctx, s.MySQLDSN, m, rest, stdout)
}

func runToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		authorID int64
		admin    bool
		ttl      time.Duration
		secret   string
		dataDir  string
		issuer   string
		audience string
	)
	if _, err := parse("token", args, stderr, nil, func(fs *flag.FlagSet) {
		fs.Int64Var(&authorID, "author", 42, "author id (the token's sub)")
		fs.BoolVar(&admin, "admin", false, "give the token the admin role")
		fs.DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid")
		fs.StringVar(&secret, "auth-secret", "", "HS256 secrets, comma-separated; the first signs (default: the dev secret in the data dir)")
		fs.StringVar(&issuer, "auth-issuer", "", "the token's iss, when the API asks for one")
		fs.StringVar(&audience, "auth-audience", "", "the token's aud, when the API asks for one")
		fs.StringVar(&dataDir, "data-dir", ".tagcount", "data dir holding the dev secret")
	}); err != nil {
		return err
	}
	if authorID <= 0 {
		return fmt.Errorf("--author must be a positive id")
	}
	if secret == "" {
		var err error
		if secret, err = devSecret(dataDir); err != nil {
			return err
		}
	}
	role := httpapi.RoleAuthor
	if admin {
		role = httpapi.RoleAdmin
	}
	auth := httpapi.AuthWithSecrets(secret)
	auth.Issuer, auth.Audience = issuer, audience
	tok, err := auth.IssueToken(authorID, role, ttl)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
