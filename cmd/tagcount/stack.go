package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/drafts/api"
	"github.com/tagcount/tagcount/flags"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/poster"
)

// stackOptions says which parts of the service a process runs and where its
// dependencies are. dev runs every role; api, worker and counter run one each;
// loadgen and the end-to-end tests start whole stacks in process.
type stackOptions struct {
	MySQLDSN   string // DSN; Database, when set, replaces its database name
	Database   string
	Create     bool // create the database if missing
	Migrate    bool // apply migrations at start
	RedisAddr  string
	Queue      string // asynq queue name (isolates runs and tests sharing a Redis)
	Path       string // "flag", "new" or "legacy"
	AuthSecret string
	DataDir    string
	HTTPAddr   string   // default 127.0.0.1:0
	Brokers    []string // Kafka; empty with EmbeddedKafka: start a broker in process (needs DataDir)
	// EmbeddedKafka lets a stack with no Brokers run its own in-process
	// broker: right for dev, loadgen and tests, which run every role in one
	// process; wrong for a lone worker or counter, which would talk to a
	// broker nobody else sees.
	EmbeddedKafka bool
	Topic         string
	Partitions    int
	GroupID       string

	API, Worker, Counter bool

	Flags       flags.Config
	ReconcileAt string // HH:MM UTC; empty = no nightly schedule
	// RequeueAfter and SweepAfter override the worker's defaults (tests).
	RequeueAfter    time.Duration
	SweepAfter      time.Duration
	ShutdownTimeout time.Duration
	JobPoll         time.Duration // how often an idle worker checks for jobs; default 20ms
	JobConcurrency  int           // jobs run at once; default 64
	Logger          *slog.Logger
}

// stack is a running set of tagcount roles.
type stack struct {
	URL      string
	DSN      string
	DB       *sql.DB
	Auth     api.Auth
	Poster   *poster.Poster
	Flags    *flags.Client
	Registry *prometheus.Registry
	Brokers  []string

	log       *slog.Logger
	opts      stackOptions
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closers   []func() error
	errMu     sync.Mutex
	err       error
	closeOnce sync.Once
}

// startStack connects to the dependencies, migrates if asked, and starts the
// roles in o. It returns an error naming any dependency it cannot reach.
func startStack(ctx context.Context, o stackOptions) (_ *stack, err error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.HTTPAddr == "" {
		o.HTTPAddr = "127.0.0.1:0"
	}
	if o.Queue == "" {
		o.Queue = "tagcount"
	}
	if o.Topic == "" {
		o.Topic = "tag-uses"
	}
	if o.Partitions <= 0 {
		o.Partitions = 8
	}
	if o.GroupID == "" {
		o.GroupID = "tagcount-counter"
	}
	if o.JobConcurrency <= 0 {
		o.JobConcurrency = 64
	}
	if o.JobPoll <= 0 {
		o.JobPoll = 20 * time.Millisecond
	}
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 20 * time.Second
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &stack{opts: o, log: o.Logger, cancel: cancel, Registry: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	s.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.Auth = api.Auth{Secret: []byte(o.AuthSecret)}

	// MySQL.
	dsn, err := withDatabase(o.MySQLDSN, o.Database)
	if err != nil {
		return nil, err
	}
	s.DSN = dsn
	if o.Create {
		if err := migrations.CreateDatabase(ctx, dsn); err != nil {
			return nil, err
		}
	}
	if s.DB, err = migrations.Open(ctx, dsn); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, s.DB.Close)
	if o.Migrate {
		if err := migrations.Up(ctx, s.DB); err != nil {
			return nil, err
		}
	}

	// Redis, for the job queue.
	var queue *asynq.Client
	redisOpt := asynq.RedisClientOpt{Addr: o.RedisAddr}
	if o.API || o.Worker {
		if err := pingRedis(ctx, o.RedisAddr); err != nil {
			return nil, err
		}
		queue = asynq.NewClient(redisOpt)
		s.closers = append(s.closers, queue.Close)
	}

	// Flags.
	fc := o.Flags
	if fc.BackupDir == "" && o.DataDir != "" {
		fc.BackupDir = filepath.Join(o.DataDir, "unleash")
	}
	fc.Logger = o.Logger
	fc.Registerer = s.Registry
	if s.Flags, err = flags.New(ctx, fc); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, s.Flags.Close)

	// Kafka.
	needKafka := o.Worker || o.Counter
	s.Brokers = o.Brokers
	if needKafka && len(s.Brokers) == 0 {
		if !o.EmbeddedKafka {
			return nil, errors.New("TAGCOUNT_KAFKA_BROKERS (or --kafka-brokers) is required: the worker and the counter must share one Kafka (only `tagcount dev` embeds one)")
		}
		if o.DataDir == "" {
			return nil, errors.New("no Kafka brokers given and no data dir for the embedded broker")
		}
		b, err := counter.StartEmbeddedBroker(ctx, filepath.Join(o.DataDir, "kafka"), o.Partitions, o.Topic, 0)
		if err != nil {
			return nil, fmt.Errorf("embedded Kafka: %w", err)
		}
		s.closers = append(s.closers, func() error { b.Close(); return nil })
		s.Brokers = b.Addrs()
	} else if needKafka {
		if err := counter.EnsureTopic(ctx, s.Brokers, o.Topic, o.Partitions); err != nil {
			return nil, fmt.Errorf("Kafka at %v: %w", s.Brokers, err)
		}
	}
	var publisher *counter.Publisher
	if o.Worker {
		publisher = counter.NewPublisher(counter.PublisherConfig{Brokers: s.Brokers, Topic: o.Topic, Logger: o.Logger, Registerer: s.Registry})
	}

	// Poster.
	var paths poster.PathChooser
	switch o.Path {
	case "new":
		paths = poster.FixedPath(true)
	case "legacy":
		paths = poster.FixedPath(false)
	default:
		paths = s.Flags
	}
	pcfg := poster.Config{DB: s.DB, Queue: queue, QueueName: o.Queue, Paths: paths, RequeueAfter: o.RequeueAfter,
		Logger: o.Logger, Registerer: s.Registry}
	if publisher != nil {
		pcfg.Announcer = publisher
	}
	s.Poster = poster.New(pcfg)
	jobPoster := s.Poster
	if o.Worker {
		// Posting jobs get a pool of their own, so authors' requests never
		// wait for a connection behind a backlog of jobs.
		jobDB, err := migrations.Open(ctx, dsn)
		if err != nil {
			return nil, err
		}
		jobDB.SetMaxOpenConns(o.JobConcurrency + 4)
		jobDB.SetMaxIdleConns(o.JobConcurrency + 4)
		s.closers = append(s.closers, jobDB.Close)
		pcfg.DB = jobDB
		jobPoster = poster.New(pcfg)
	}

	reconciler := counter.NewReconciler(counter.ReconcileConfig{DB: s.DB, ReconcileApply: s.Flags.ReconcileApply,
		Logger: o.Logger, Registerer: s.Registry})
	// Closers run in reverse: runs started over HTTP stop before the pool closes.
	s.closers = append(s.closers, reconciler.Close)

	// HTTP: every role serves /healthz, /readyz and /metrics; the API role
	// adds /v1.
	ln, err := net.Listen("tcp", o.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", o.HTTPAddr, err)
	}
	s.URL = "http://" + ln.Addr().String()
	var handler http.Handler
	if o.API {
		reader := counter.NewReader(s.DB, counter.DefaultTiers(), counter.ReaderLogger(o.Logger), counter.ReaderRegisterer(s.Registry))
		// Large tags' cached counts are refreshed before they expire, so no
		// reader waits on one.
		s.goRun("count-refresh", func(ctx context.Context) error { return reader.Run(ctx, 10*time.Second) }, runCtx)
		handler = s.routes(&drafts.Handlers{Store: &drafts.Store{DB: s.DB}, Poster: s.Poster}, reader, reconciler)
	} else {
		handler = s.opsRoutes()
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	s.goRun("http", func(ctx context.Context) error {
		go func() {
			<-ctx.Done()
			sctx, c := context.WithTimeout(context.Background(), o.ShutdownTimeout)
			defer c()
			srv.Shutdown(sctx)
		}()
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}, runCtx)

	if o.Worker {
		if err := s.startWorker(runCtx, redisOpt, publisher, reconciler, jobPoster); err != nil {
			return nil, err
		}
	}
	if o.Counter {
		cons, err := counter.NewConsumer(counter.ConsumerConfig{Brokers: s.Brokers, Topic: o.Topic, GroupID: o.GroupID,
			DB: s.DB, Tiers: counter.DefaultTiers(), TierDeferral: s.Flags.TierDeferral, Logger: o.Logger, Registerer: s.Registry})
		if err != nil {
			return nil, err
		}
		s.goRun("counter", cons.Run, runCtx)
	}
	return s, nil
}

func (s *stack) startWorker(ctx context.Context, redisOpt asynq.RedisClientOpt, publisher *counter.Publisher, rec *counter.Reconciler, jobs *poster.Poster) error {
	o := s.opts
	srv := asynq.NewServer(redisOpt, asynq.Config{
		Concurrency:     o.JobConcurrency,
		Queues:          map[string]int{o.Queue: 1},
		ShutdownTimeout: o.ShutdownTimeout,
		// asynq's default 1s idle poll would add up to a second to a post.
		TaskCheckInterval: o.JobPoll,
		ErrorHandler:      asynq.ErrorHandlerFunc(jobs.HandleTaskError),
		Logger:            asynqLogger{s.log},
		LogLevel:          asynq.WarnLevel,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc(poster.TypeSyncDraft, jobs.HandleSyncDraftTask)
	mux.HandleFunc(counter.TypeReconcile, rec.HandleReconcileTask)
	if err := srv.Start(mux); err != nil {
		return fmt.Errorf("job server: %w", err)
	}
	// Closers run in reverse: jobs in flight finish (and announce) before the
	// publisher flushes and closes.
	s.closers = append(s.closers, publisher.Close, func() error { srv.Shutdown(); return nil })
	if o.ReconcileAt != "" {
		h, m, err := parseClock(o.ReconcileAt)
		if err != nil {
			return err
		}
		sched := asynq.NewScheduler(redisOpt, &asynq.SchedulerOpts{Location: time.UTC, Logger: asynqLogger{s.log}, LogLevel: asynq.WarnLevel})
		if _, err := sched.Register(counter.ReconcileSchedule(h, m), counter.NewReconcileTask(counter.ReconcileOptions{}), asynq.Queue(o.Queue),
			// Every worker registers the schedule; one task per night is enough.
			asynq.Unique(time.Hour)); err != nil {
			return fmt.Errorf("schedule reconcile: %w", err)
		}
		if err := sched.Start(); err != nil {
			return fmt.Errorf("scheduler: %w", err)
		}
		s.closers = append(s.closers, func() error { sched.Shutdown(); return nil })
	}
	s.goRun("requeuer", func(ctx context.Context) error { return jobs.RunRequeuer(ctx, 5*time.Second) }, ctx)
	sweeper := counter.NewSweeper(counter.SweeperConfig{DB: s.DB, Announcer: publisher, OlderThan: o.SweepAfter,
		Logger: s.log, Registerer: s.Registry})
	s.goRun("sweeper", sweeper.Run, ctx)
	return nil
}

// goRun runs fn until ctx ends; an error from fn is logged and returned by Close.
func (s *stack) goRun(name string, fn func(context.Context) error, ctx context.Context) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := fn(ctx); err != nil && !errors.Is(err, context.Canceled) {
			s.log.Error("component stopped", "component", name, "err", err)
			s.errMu.Lock()
			if s.err == nil {
				s.err = fmt.Errorf("%s: %w", name, err)
			}
			s.errMu.Unlock()
		}
	}()
}

// Close stops every role, waiting for in-flight work (HTTP requests, jobs,
// the counter's held events), then closes the connections.
func (s *stack) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		s.wg.Wait()
		for i := len(s.closers) - 1; i >= 0; i-- {
			if err := s.closers[i](); err != nil {
				s.log.Warn("close", "err", err)
			}
		}
	})
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

func withDatabase(dsn, database string) (string, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return "", fmt.Errorf("bad MySQL DSN: %w", err)
	}
	if database != "" {
		cfg.DBName = database
	}
	if cfg.DBName == "" {
		return "", fmt.Errorf("the MySQL DSN names no database")
	}
	return cfg.FormatDSN(), nil
}

func pingRedis(ctx context.Context, addr string) error {
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := c.Ping(pctx).Err(); err != nil {
		return fmt.Errorf("Redis at %s is unreachable (%w); start it (e.g. `redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\"`) or set TAGCOUNT_REDIS_ADDR", addr, err)
	}
	return nil
}

func devSecret(dataDir string) (string, error) {
	p := filepath.Join(dataDir, "auth-secret")
	if b, err := os.ReadFile(p); err == nil && len(b) >= 32 {
		return string(b), nil
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", err
	}
	secret := randomHex(32)
	return secret, os.WriteFile(p, []byte(secret), 0o600)
}

// asynqLogger routes asynq's logs through slog.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Fatal(args ...any) { a.l.Error(fmt.Sprint(args...), "component", "asynq") }

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
