package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
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

// stackOptions says which parts of the service a process runs and where its
// dependencies are. dev runs every role; api, worker and counter run one each;
// loadgen and the end-to-end tests start whole stacks in process. Zero
// values take the domain packages' defaults.
type stackOptions struct {
	MySQLDSN   string // DSN; Database, when set, replaces its database name
	Database   string
	Create     bool // create the database if missing
	Migrate    bool // apply migrations at start
	RedisAddr  string
	Queue      string // asynq queue name (isolates runs and tests sharing a Redis)
	Path       string // "flag", "new" or "legacy"
	AuthSecret string // comma-separated: the first signs, all verify
	// Redis is the URL and CA file of the job queue's Redis; its Addr,
	// when empty, is RedisAddr.
	Redis redisConfig
	// Token checks beyond the secret (httpapi.Auth): zero values are the
	// default lifetime and no iss or aud check.
	MaxTokenLifetime         time.Duration
	AuthIssuer, AuthAudience string
	DataDir                  string
	HTTPAddr                 string // default 127.0.0.1:0
	// AdminAddr, when set, is where /healthz, /readyz, /metrics and
	// /debug/pprof/ are served instead of HTTPAddr.
	AdminAddr string
	Brokers   []string // Kafka; empty with EmbeddedKafka: start a broker in process (needs DataDir)
	// EmbeddedKafka lets a stack with no Brokers run its own in-process
	// broker: right for dev, loadgen and tests, which run every role in one
	// process; wrong for a lone worker or counter, which would talk to a
	// broker nobody else sees.
	EmbeddedKafka bool
	Kafka         counter.KafkaSecurity // SASL and TLS to Brokers
	Topic         string
	CountsTopic   string // the count-change stream's compacted topic
	// NoCreateTopics makes start only check that the topics exist
	// (--kafka-create-topics=false); false creates them when missing.
	NoCreateTopics bool
	Partitions     int
	GroupID        string

	API, Worker, Counter bool

	Flags       flags.Config
	ReconcileAt string // HH:MM UTC; empty = no nightly schedule
	// ReconcileReadDSN, if set, is the replica reconcile snapshots are read from.
	ReconcileReadDSN string
	// Pools sizes the MySQL pools; zero sizes take the defaults of the
	// roles the stack runs (poolSettings.withDefaults).
	Pools poolSettings
	// RequeueAfter and SweepAfter override the worker's defaults (tests).
	RequeueAfter    time.Duration
	SweepAfter      time.Duration
	ShutdownTimeout time.Duration
	// CounterFlushTimeout bounds the counter's final flush when it stops
	// (counter.ConsumerConfig.FlushTimeout; zero takes its default).
	CounterFlushTimeout time.Duration
	JobPoll             time.Duration // how often an idle worker checks for jobs
	JobConcurrency      int           // jobs run at once
	PostingLimit        bool          // the adaptive limit on posting (poster.AIMDConfig); off unless set
	Tiers               counter.Tiers // zero fields take counter.DefaultTiers
	PublishDropRate     float64       // fault injection (soak tests)
	// WrangleRowsPerTx and WrangleRowsPerSecond cap the worker's wrangling
	// jobs; OnWrangleCommit sees each of their transactions (loadgen).
	WrangleRowsPerTx, WrangleRowsPerSecond int
	OnWrangleCommit                        func(poster.WrangleCommit)
	Logger                                 *slog.Logger
	// Edge is the HTTP layer's deadlines, timeouts and limits; the serving
	// commands fill it from settings, whose defaults are httpapi's. The
	// load generator and the tests start stacks in process and measure the
	// service, not its guards: zero rate limits are off, and a zero request
	// timeout is the driver's I/O timeout, past InnoDB's lock wait timeout,
	// so a post stuck behind locks is reported as the database reports it;
	// a zero queue wait is that timeout too, so a load larger than the
	// pool waits for a database slot instead of being shed.
	Edge httpapi.Edge
	// MaxDrafts and NewTagsPerDay are the quotas (unposted drafts per
	// author, new tags per author per day); 0 turns one off, as in the
	// stacks loadgen and the tests start. The serving commands fill them
	// from settings, whose defaults are the domain packages'.
	MaxDrafts, NewTagsPerDay int
	// BulkAfter is fair posting's threshold (poster.Config.BulkAfter): 0
	// puts every post on one queue, first come first served, as in the
	// stacks loadgen and the tests start; the serving commands fill it
	// from --bulk-after, whose default is poster.DefaultBulkAfter.
	BulkAfter int
	// Rollout configures the guarded rollout's runner (API role).
	Rollout rolloutOptions
}

// defaultShutdownTimeout is how long SIGTERM waits for in-flight work.
const defaultShutdownTimeout = 20 * time.Second

func (o stackOptions) withDefaults() stackOptions {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	// Every line logged with a request's (or a posting job's) context names it.
	o.Logger = slog.New(httpapi.LogHandler(o.Logger.Handler()))
	if o.HTTPAddr == "" {
		o.HTTPAddr = "127.0.0.1:0"
	}
	// Names the stack uses itself (the job server's queues, the topics it
	// creates) are resolved by their packages' defaults functions; fields
	// it only hands to a package's Config stay zero for that package to
	// fill, and Partitions zero is counter's default where topics are made.
	o.Queue = poster.Config{QueueName: o.Queue}.WithDefaults().QueueName
	o.Topic = counter.PublisherConfig{Topic: o.Topic}.WithDefaults().Topic
	o.CountsTopic = counter.StreamConfig{Topic: o.CountsTopic}.WithDefaults().Topic
	js := poster.JobServer{Concurrency: o.JobConcurrency, Poll: o.JobPoll}.WithDefaults()
	o.JobConcurrency, o.JobPoll = js.Concurrency, js.Poll
	o.ShutdownTimeout = loop.OrDefault(o.ShutdownTimeout, defaultShutdownTimeout)
	o.Pools = o.Pools.withDefaults(o)
	if o.Flags.BackupDir == "" && o.DataDir != "" {
		o.Flags.BackupDir = filepath.Join(o.DataDir, "unleash")
	}
	return o
}

// stack is a running set of tagcount roles.
type stack struct {
	URL      string // the API's listener, or the admin listener when that is the only one
	AdminURL string // the admin listener's, when AdminAddr is set
	DSN      string
	DB       *migrations.DB
	Auth     httpapi.Auth
	Poster   *poster.Poster
	Flags    *flags.Client
	Registry *prometheus.Registry
	Brokers  []string

	log        *slog.Logger
	opts       stackOptions
	writes     *migrations.DB // authors' draft writes (API role)
	edge       httpapi.Edge   // the HTTP layer's limits, defaults filled
	runCtx     context.Context
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	closers    []func() error
	errMu      sync.Mutex
	err        error
	closeOnce  sync.Once
	queue      *asynq.Client
	inspector  *asynq.Inspector
	redis      *redis.Client  // the API's rate limiter and the readiness check
	redisOpt   *redis.Options // every Redis client's settings (API and worker roles)
	newTags    *tags.Quota    // the API's new-tag quota (nil in other roles)
	publisher  *counter.Publisher
	reconciler *reconcile.Reconciler
	stopping   atomic.Bool       // set by Drain: /readyz answers 503
	recorder   *rollout.Recorder // the API's Post samples for the rollout's guards
}

// startStack connects to the dependencies, migrates if asked, and starts the
// roles in o. It returns an error naming any dependency it cannot reach.
func startStack(ctx context.Context, o stackOptions) (*stack, error) {
	o = o.withDefaults()
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &stack{opts: o, log: o.Logger, runCtx: runCtx, cancel: cancel, Registry: prometheus.NewRegistry(),
		Auth: o.auth()}
	s.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildInfo())
	steps := []func(context.Context) error{
		s.openDatabase, s.openQueue, s.startFlags, s.startKafka, s.startRollout, s.buildPoster, s.buildReconciler,
		s.serveHTTP, s.startWorker, s.startCounter,
	}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// openDatabase creates (if asked), opens and migrates (if asked) MySQL.
func (s *stack) openDatabase(ctx context.Context) error {
	dsn, err := migrations.WithDatabase(s.opts.MySQLDSN, s.opts.Database)
	if err != nil {
		return err
	}
	s.DSN = dsn
	// Named for the operator: a refused login or certificate is a setting to fix.
	if s.opts.Create {
		if err := migrations.CreateDatabase(ctx, dsn); err != nil {
			return fmt.Errorf("mysql: --mysql-dsn: %w", err)
		}
	}
	if s.DB, err = s.openPool(ctx, "main", dsn, s.opts.Pools.Main, false); err != nil {
		return fmt.Errorf("mysql: --mysql-dsn: %w", err)
	}
	if s.opts.Migrate {
		if err := migrations.Up(ctx, s.DB); err != nil {
			return err
		}
	}
	// Refuse to serve against a schema older than the code.
	if err := checkSchema(ctx, s.DB, s.log); err != nil {
		return err
	}
	if s.opts.API {
		// Authors' own writes take one round trip fewer on their own pool.
		if s.writes, err = s.openPool(ctx, "writes", dsn, s.opts.Pools.Writes, true); err != nil {
			return err
		}
	}
	return nil
}

// openQueue connects the job queue's client, for the roles that enqueue.
func (s *stack) openQueue(ctx context.Context) error {
	if !s.opts.API && !s.opts.Worker {
		return nil
	}
	rc := s.opts.Redis
	rc.Addr = cmp.Or(rc.Addr, s.opts.RedisAddr)
	var err error
	if s.redisOpt, err = rc.options(); err != nil {
		return err
	}
	if err := pingRedis(ctx, rc, s.redisOpt); err != nil {
		return err
	}
	s.queue = asynq.NewClient(asynqOpt(s.redisOpt))
	s.inspector = asynq.NewInspector(asynqOpt(s.redisOpt))
	s.closers = append(s.closers, s.queue.Close, s.inspector.Close)
	return nil
}

func (s *stack) startFlags(ctx context.Context) error {
	fc := s.opts.Flags
	fc.Logger = s.log
	fc.Registerer = s.Registry
	var err error
	if s.Flags, err = flags.New(ctx, fc); err != nil {
		return err
	}
	s.closers = append(s.closers, s.Flags.Close)
	return nil
}

// startKafka finds (or, embedded, starts) the brokers the worker and the
// counter share, and makes the worker's publisher.
func (s *stack) startKafka(ctx context.Context) error {
	o := s.opts
	if !o.Worker && !o.Counter {
		return nil
	}
	s.Brokers = o.Brokers
	switch {
	case len(s.Brokers) > 0:
		if err := s.ensureTopic(ctx, o.Topic, o.Kafka.EnsureTopic); err != nil {
			return fmt.Errorf("Kafka at %v: %w", s.Brokers, err)
		}
	case !o.EmbeddedKafka:
		return errors.New("TAGCOUNT_KAFKA_BROKERS (or --kafka-brokers) is required: the worker and the counter must share one Kafka (only `tagcount dev` embeds one)")
	case o.DataDir == "":
		return errors.New("no Kafka brokers given and no data dir for the embedded broker")
	default:
		b, err := counter.StartEmbeddedBroker(ctx, filepath.Join(o.DataDir, "kafka"), o.Partitions, o.Topic, 0)
		if err != nil {
			return fmt.Errorf("embedded Kafka: %w", err)
		}
		s.closers = append(s.closers, func() error { b.Close(); return nil })
		s.Brokers = b.Addrs()
	}
	if o.Counter {
		if err := s.ensureTopic(ctx, o.CountsTopic, o.Kafka.EnsureCountsTopic); err != nil {
			return fmt.Errorf("Kafka at %v: %w", s.Brokers, err)
		}
	}
	if o.Worker {
		var err error
		if s.publisher, err = counter.NewPublisher(counter.PublisherConfig{Brokers: s.Brokers, Security: o.Kafka, Topic: o.Topic,
			Logger: s.log, Registerer: s.Registry, DropRate: o.PublishDropRate}); err != nil {
			return err
		}
	}
	return nil
}

// newTagQuota returns the API's new-tag quota, which the domain calls that
// save content charge (drafts.Store.Admit), or nil outside the API role.
func (s *stack) newTagQuota() (*tags.Quota, error) {
	if !s.opts.API || s.redis == nil {
		return nil, nil
	}
	limits := s.opts.Edge.WithDefaults().RateLimits // the quota waits for Redis as long as the rate limiter
	return tags.NewQuota(tags.QuotaConfig{Tags: tags.NewResolver(s.DB), Redis: s.redis, PerDay: s.opts.NewTagsPerDay,
		Prefix: limits.Prefix, Timeout: limits.Timeout, Logger: s.log, Registerer: s.Registry})
}

// buildPoster makes the process's one Poster. Posting jobs get a pool of
// their own, so authors' requests never wait for a connection behind a
// backlog of jobs.
func (s *stack) buildPoster(ctx context.Context) error {
	if s.opts.API || s.opts.Worker {
		// One long-lived client with short timeouts and no retries: a slow
		// or absent Redis must not hold requests (the limiter fails open at
		// once) or readiness probes.
		ro := *s.redisOpt
		ro.ContextTimeoutEnabled, ro.DialTimeout, ro.ReadTimeout, ro.WriteTimeout = true, time.Second, time.Second, time.Second
		ro.MaxRetries, ro.DialerRetries = -1, 1
		s.redis = redis.NewClient(&ro)
		s.closers = append(s.closers, s.redis.Close)
	}
	var err error
	if s.newTags, err = s.newTagQuota(); err != nil {
		return err
	}
	var paths poster.PathChooser
	switch s.opts.Path {
	case "new":
		paths = poster.FixedPath(true)
	case "legacy":
		paths = poster.FixedPath(false)
	default:
		paths = s.Flags
	}
	cfg := poster.Config{DB: s.DB, Writes: s.writes, Queue: s.queue, Inspector: s.inspector, QueueName: s.opts.Queue, Paths: paths,
		RequeueAfter: s.opts.RequeueAfter, BulkAfter: s.opts.BulkAfter, Logger: s.log, Registerer: s.Registry,
		WrangleRowsPerTx: s.opts.WrangleRowsPerTx, WrangleRowsPerSecond: s.opts.WrangleRowsPerSecond, OnWrangleCommit: s.opts.OnWrangleCommit,
		NewTags: s.newTags, Limit: poster.AIMDConfig{Off: !s.opts.PostingLimit}}
	if s.publisher != nil {
		cfg.Announcer = s.publisher
	}
	if s.recorder != nil {
		cfg.Observer = s.recorder
	}
	if s.opts.Worker {
		jobDB, err := s.openPool(ctx, "jobs", s.DSN, s.opts.Pools.Jobs, false)
		if err != nil {
			return err
		}
		cfg.JobDB = jobDB
	}
	s.Poster, err = poster.New(cfg)
	return err
}

func (s *stack) buildReconciler(ctx context.Context) error {
	cfg := reconcile.Config{DB: s.DB, ReconcileApply: s.Flags.ReconcileApply, Logger: s.log, Registerer: s.Registry}
	if s.opts.ReconcileReadDSN != "" {
		read, err := s.openPool(ctx, "reconcile_read", s.opts.ReconcileReadDSN, s.opts.Pools.ReconcileRead, false)
		if err != nil {
			return fmt.Errorf("--reconcile-read-dsn: %w", err)
		}
		cfg.ReadDB = read
	}
	var err error
	if s.reconciler, err = reconcile.New(cfg); err != nil {
		return err
	}
	// Closers run in reverse: runs started over HTTP stop before the pool closes.
	s.closers = append(s.closers, s.reconciler.Close)
	return nil
}

// serveHTTP serves /healthz, /readyz and /metrics in every role, and the
// API in the API role: all on HTTPAddr, or the operational routes and Go's
// profiler on AdminAddr when set (a role without the API then serves nothing
// on HTTPAddr). On Close, requests in flight finish (up to the shutdown
// timeout) before anything they use is closed.
func (s *stack) serveHTTP(context.Context) error {
	if s.opts.API {
		if err := s.Auth.Check(); err != nil {
			return err
		}
	}
	edge := s.opts.Edge
	if edge.RequestTimeout == 0 {
		edge.RequestTimeout = migrations.DefaultIOTimeout // see stackOptions.Edge
	}
	if edge.QueueWait == 0 {
		edge.QueueWait = edge.RequestTimeout // see stackOptions.Edge
	}
	// The API's database slots are its main pool: a request past them
	// waits (up to the queue wait) instead of holding a goroutine on the
	// pool.
	edge.DBSlots = s.DB.Stats().MaxOpenConnections
	edge.RateLimits.Redis = s.redis
	edge = edge.WithDefaults()
	s.edge = edge
	deps := httpapi.Deps{Logger: s.log, Auth: s.Auth, Registry: s.Registry, Ready: s.readyChecks(), Edge: edge,
		Stopping: s.stopping.Load}
	var handler, admin http.Handler
	switch {
	case !s.opts.API && s.opts.AdminAddr != "":
		admin = httpapi.NewAdminServer(deps)
	case !s.opts.API:
		handler = httpapi.NewOpsServer(deps)
	default:
		if err := s.apiDeps(&deps); err != nil {
			return err
		}
		if s.opts.AdminAddr != "" {
			handler, admin = httpapi.NewServers(deps)
		} else {
			handler = httpapi.NewServer(deps)
		}
	}
	if handler != nil {
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: edge.ReadHeaderTimeout, ReadTimeout: edge.ReadTimeout,
			WriteTimeout: edge.WriteTimeout, IdleTimeout: edge.IdleTimeout, MaxHeaderBytes: edge.MaxHeaderBytes}
		if err := s.listen("http", s.opts.HTTPAddr, srv, &s.URL); err != nil {
			return err
		}
	}
	if admin != nil {
		// No write timeout: a CPU profile or trace takes as long as asked.
		srv := &http.Server{Handler: admin, ReadHeaderTimeout: edge.ReadHeaderTimeout, IdleTimeout: edge.IdleTimeout}
		if err := s.listen("admin", s.opts.AdminAddr, srv, &s.AdminURL); err != nil {
			return err
		}
	}
	if s.URL == "" {
		s.URL = s.AdminURL
	}
	return nil
}

// apiDeps fills in what the API role's handlers call, and starts the
// background loops the API role runs.
func (s *stack) apiDeps(deps *httpapi.Deps) error {
	reader, err := counter.NewReader(counter.ReaderConfig{DB: s.DB, Tiers: s.opts.Tiers, WorkUses: s.Poster, Logger: s.log,
		Registerer: s.Registry})
	if err != nil {
		return err
	}
	// Large tags' cached counts are refreshed before they expire, so no
	// reader waits on one.
	s.goRun("count-refresh", reader.Run)
	// Posts this process accepted while Redis was down are enqueued
	// once it answers, whether or not a worker runs here.
	s.goRun("owed-posts", s.Poster.RunOwed)
	deps.Drafts = &drafts.Store{DB: s.DB, Writes: s.writes, MaxDrafts: s.opts.MaxDrafts, NewTags: s.newTags}
	deps.Poster, deps.Counts = s.Poster, reader
	deps.Reconciler, deps.Flags, deps.Control = s.reconciler, s.Flags, counter.Control{DB: s.DB}
	deps.Rollout = rollout.Plans{DB: s.DB}
	return nil
}

// listen serves srv on addr until the stack closes, setting *url to the
// address it listens on. On Close the requests in flight finish, up to the
// shutdown timeout.
func (s *stack) listen(name, addr string, srv *http.Server, url *string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	*url = "http://" + ln.Addr().String()
	s.goRun(name, func(ctx context.Context) error {
		drained := make(chan struct{})
		go func() {
			defer close(drained)
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownTimeout)
			defer cancel()
			srv.Shutdown(sctx)
		}()
		// Listener: net/http's own 431 and 400 in the error shape.
		err := srv.Serve(httpapi.Listener(ln))
		<-drained // Serve returns at once on Shutdown; the requests in flight are still running
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	})
	return nil
}

// readyChecks lists the dependencies this process's roles use. Redis is
// optional for the API alone: a Post is recorded on the draft row and
// enqueued once Redis is back, so the API still serves its role.
func (s *stack) readyChecks() []httpapi.Check {
	checks := []httpapi.Check{{Name: "mysql", Err: s.DB.PingContext}}
	if s.redis != nil {
		checks = append(checks, httpapi.Check{Name: "redis", Optional: !s.opts.Worker,
			Err: func(ctx context.Context) error { return s.redis.Ping(ctx).Err() }})
	}
	if s.opts.Worker || s.opts.Counter {
		checks = append(checks, httpapi.Check{Name: "kafka", Err: s.dialBroker})
	}
	return checks
}

func (s *stack) dialBroker(ctx context.Context) error {
	var d net.Dialer
	err := errors.New("no Kafka broker configured")
	for _, b := range s.Brokers {
		var c net.Conn
		if c, err = d.DialContext(ctx, "tcp", b); err == nil {
			return c.Close()
		}
	}
	return err
}

// startWorker runs the posting jobs, the nightly reconcile's schedule, the
// requeuer, the wrangling jobs and the outbox sweeper.
func (s *stack) startWorker(context.Context) error {
	o := s.opts
	if !o.Worker {
		return nil
	}
	redisOpt := asynqOpt(s.redisOpt)
	srv := asynq.NewServer(redisOpt, asynq.Config{
		Concurrency:       o.JobConcurrency,
		Queues:            poster.JobQueues(o.Queue), // fair posting: the interactive and the bulk queue
		ShutdownTimeout:   o.ShutdownTimeout,
		TaskCheckInterval: o.JobPoll,
		RetryDelayFunc:    retryDelay,
		ErrorHandler:      asynq.ErrorHandlerFunc(s.Poster.HandleTaskError),
		Logger:            asynqLogger{s.log},
		LogLevel:          asynq.WarnLevel,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc(poster.TypeSyncDraft, s.Poster.HandleSyncDraftTask)
	mux.HandleFunc(reconcile.TypeRun, s.reconciler.HandleTask)
	if err := srv.Start(mux); err != nil {
		return fmt.Errorf("job server: %w", err)
	}
	// Closers run in reverse: jobs in flight finish (and announce), then the
	// group commit stops, before the publisher flushes and closes.
	s.closers = append(s.closers, s.publisher.Close, s.Poster.Close, func() error { srv.Shutdown(); return nil })
	if err := s.scheduleReconcile(redisOpt); err != nil {
		return err
	}
	s.goRun("requeuer", s.Poster.RunRequeuer)
	s.goRun("wrangler", s.Poster.RunWrangler)
	sweeper, err := counter.NewSweeper(counter.SweeperConfig{DB: s.DB, Announcer: s.publisher, After: o.SweepAfter,
		Logger: s.log, Registerer: s.Registry})
	if err != nil {
		return err
	}
	s.goRun("sweeper", sweeper.Run)
	return nil
}

// retryDelay is how long each kind of job waits before a retry.
func retryDelay(n int, err error, t *asynq.Task) time.Duration {
	switch t.Type() {
	case poster.TypeSyncDraft:
		return poster.RetryDelay(n)
	case reconcile.TypeRun:
		return reconcile.RetryDelay(n)
	}
	return asynq.DefaultRetryDelayFunc(n, err, t)
}

// scheduleReconcile registers the nightly reconcile with asynq's scheduler.
func (s *stack) scheduleReconcile(redisOpt asynq.RedisClientOpt) error {
	if s.opts.ReconcileAt == "" {
		return nil
	}
	h, m, err := parseClock(s.opts.ReconcileAt)
	if err != nil {
		return err
	}
	sched := asynq.NewScheduler(redisOpt, &asynq.SchedulerOpts{Location: time.UTC, Logger: asynqLogger{s.log}, LogLevel: asynq.WarnLevel})
	if _, err := sched.Register(reconcile.Schedule(h, m), reconcile.NewTask(reconcile.Options{}), asynq.Queue(s.opts.Queue),
		// Every worker registers the schedule; one task per night is enough.
		asynq.Unique(time.Hour)); err != nil {
		return fmt.Errorf("schedule reconcile: %w", err)
	}
	if err := sched.Start(); err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	s.closers = append(s.closers, func() error { sched.Shutdown(); return nil })
	return nil
}

func (s *stack) startCounter(context.Context) error {
	if !s.opts.Counter {
		return nil
	}
	cons, err := counter.NewConsumer(counter.ConsumerConfig{Brokers: s.Brokers, Security: s.opts.Kafka, Topic: s.opts.Topic, GroupID: s.opts.GroupID,
		DB: s.DB, Tiers: s.opts.Tiers, TierDeferral: s.Flags.TierDeferral, Paused: s.Flags.CounterPaused,
		FlushTimeout: s.opts.CounterFlushTimeout, Logger: s.log, Registerer: s.Registry})
	if err != nil {
		return err
	}
	s.goRun("counter", cons.Run)
	stream, err := counter.NewStream(counter.StreamConfig{DB: s.DB, Brokers: s.Brokers, Security: s.opts.Kafka, Topic: s.opts.CountsTopic,
		Logger: s.log, Registerer: s.Registry})
	if err != nil {
		return err
	}
	s.goRun("count-stream", stream.Run)
	return nil
}

// goRun runs fn until the stack closes; an error from fn is logged and
// returned by Close.
func (s *stack) goRun(name string, fn func(context.Context) error) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := fn(s.runCtx); err != nil && !errors.Is(err, context.Canceled) {
			s.log.Error("component stopped", "component", name, "err", err)
			s.errMu.Lock()
			if s.err == nil {
				s.err = fmt.Errorf("%s: %w", name, err)
			}
			s.errMu.Unlock()
		}
	}()
}

// Drain makes /readyz answer 503 "stopping" from now on, while everything
// keeps serving: load balancers stop sending before Close closes the port.
func (s *stack) Drain() { s.stopping.Store(true) }

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

// auth is how the API checks tokens: the secrets of AuthSecret and the
// token limits.
func (o stackOptions) auth() httpapi.Auth {
	a := httpapi.AuthWithSecrets(o.AuthSecret)
	a.MaxLifetime, a.Issuer, a.Audience = o.MaxTokenLifetime, o.AuthIssuer, o.AuthAudience
	return a
}

// ensureTopic creates topic on s.Brokers with create, or with
// NoCreateTopics only checks it exists; the error names the topic.
func (s *stack) ensureTopic(ctx context.Context, topic string, create func(context.Context, []string, string, int) error) error {
	if s.opts.NoCreateTopics {
		return s.opts.Kafka.VerifyTopic(ctx, s.Brokers, topic)
	}
	return create(ctx, s.Brokers, topic, s.opts.Partitions)
}
