package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/flags"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/poster"
)

// settings are what the service's processes share. Every flag reads
// TAGCOUNT_<NAME> (dashes as underscores) when not given.
type settings struct {
	HTTPAddr        string
	MySQLDSN        string
	RedisAddr       string
	Redis           redisConfig // --redis-url, --redis-ca-file (RedisAddr is its Addr once parsed)
	MySQLCAFile     string      // applied to MySQLDSN and ReconcileReadDSN by parse
	Kafka           kafkaSettings
	KafkaBrokers    string
	KafkaTopic      string
	CountsTopic     string
	KafkaPartitions int
	// KafkaCreateTopics false only checks the topics exist at start.
	KafkaCreateTopics bool
	AuthSecret        string
	// Token limits (httpapi.Auth).
	MaxTokenLifetime         time.Duration
	AuthIssuer, AuthAudience string
	DataDir                  string
	Queue                    string
	PostingPath              string
	UnleashURL               string
	UnleashToken             string
	UnleashRefresh           time.Duration
	FlagsBootstrap           string
	ReconcileAt              string
	// ReconcileReadDSN, if set, is a replica the reconcile reads its
	// snapshots from (corrections still go to MySQLDSN).
	ReconcileReadDSN string
	LogLevel         string
	LogFormat        string
	ShutdownTimeout  time.Duration
	// AdminAddr, ShutdownDelay and CounterFlushTimeout: see their flags.
	AdminAddr           string
	ShutdownDelay       time.Duration
	CounterFlushTimeout time.Duration
	JobPoll             time.Duration
	PostingLimit        bool
	JobConcurrency      int
	Tiers               counter.Tiers
	// PublishDropRate is fault injection for soak tests: the share of
	// announcements the worker drops as if lost.
	PublishDropRate float64
	// WrangleRowsPerTx and WrangleRowsPerSecond cap the rows a worker's
	// wrangling jobs write per transaction and per second.
	WrangleRowsPerTx, WrangleRowsPerSecond int
	Edge                                   edgeSettings
	Pools                                  poolSettings // docs/operations.md, "Connection budget"
	MaxDrafts                              int
	NewTagsPerDay                          int
	BulkAfter                              int
	Rollout                                rolloutOptions
}

func (s *settings) register(fs *flag.FlagSet) {
	t := counter.DefaultTiers()
	fs.Int64Var(&s.Tiers.MediumFrom, "tier-medium-from", t.MediumFrom, "smallest count of a medium tag (deferred flush, cached reads)")
	fs.Int64Var(&s.Tiers.LargeFrom, "tier-large-from", t.LargeFrom, "smallest count of a large tag")
	fs.DurationVar(&s.Tiers.MediumMinInterval, "tier-medium-min", t.MediumMinInterval, "flush interval of the smallest medium tag")
	fs.DurationVar(&s.Tiers.MediumMaxInterval, "tier-medium-max", t.MediumMaxInterval, "flush interval of the largest medium tag")
	fs.DurationVar(&s.Tiers.LargeInterval, "tier-large-interval", t.LargeInterval, "flush interval (and read cache lifetime) of a large tag")
	registerFaults(fs, s) // only in a binary built with -tags faults (faults.go)
	fs.StringVar(&s.HTTPAddr, "http-addr", "127.0.0.1:8080", "HTTP listen address (API, /healthz, /readyz, /metrics)")
	fs.StringVar(&s.MySQLDSN, "mysql-dsn", migrations.DefaultDSN, "MySQL/MariaDB DSN (go-sql-driver format)")
	fs.StringVar(&s.RedisAddr, "redis-addr", "127.0.0.1:6379", "Redis address for the job queue; --redis-url, when set, wins")
	fs.StringVar(&s.Redis.URL, "redis-url", "", "Redis URL: redis://[user:password@]host:port/db, or rediss:// for TLS; empty = redis://<--redis-addr>")
	fs.StringVar(&s.Redis.CAFile, "redis-ca-file", "", "PEM file of the CAs that sign Redis's certificate (rediss:// only); empty = the system's roots")
	fs.StringVar(&s.MySQLCAFile, "mysql-ca-file", "", "PEM file of the CAs that sign MySQL's certificate; when set, MySQL connections use TLS and verify the server")
	s.Kafka.register(fs)
	fs.StringVar(&s.KafkaBrokers, "kafka-brokers", "", "comma-separated Kafka brokers; empty in dev = embedded broker")
	fs.StringVar(&s.CountsTopic, "kafka-counts-topic", counter.DefaultCountsTopic, "compacted Kafka topic of the count-change stream")
	fs.StringVar(&s.KafkaTopic, "kafka-topic", counter.DefaultTopic, "Kafka topic of tag-use events")
	fs.IntVar(&s.KafkaPartitions, "kafka-partitions", counter.DefaultPartitions, "partitions of the topic when tagcount creates it")
	fs.BoolVar(&s.KafkaCreateTopics, "kafka-create-topics", true, "create the Kafka topics at start when missing (needs the Create ACL; broker's default replication); false = only check they exist and refuse to start naming the one missing")
	fs.StringVar(&s.AuthSecret, "auth-secret", "", "HS256 secrets for bearer tokens, comma-separated: the first signs, all verify (to rotate, put the new one first and drop the old once its tokens expire; dev: generated and kept in the data dir)")
	fs.DurationVar(&s.MaxTokenLifetime, "max-token-lifetime", httpapi.DefaultMaxTokenLifetime, "a token whose exp is further ahead than this is refused 401")
	fs.StringVar(&s.AuthIssuer, "auth-issuer", "", "when set, the iss every token must carry")
	fs.StringVar(&s.AuthAudience, "auth-audience", "", "when set, a value every token's aud must hold")
	fs.StringVar(&s.DataDir, "data-dir", ".tagcount", "directory for the embedded broker's data, the flags backup and the dev secret")
	fs.StringVar(&s.Queue, "queue", poster.DefaultQueue, "asynq queue name")
	fs.StringVar(&s.PostingPath, "posting-path", "flag", "which path posts take: flag (ask the flags service per author), new, or legacy")
	fs.StringVar(&s.UnleashURL, "unleash-url", "", "Unleash API URL, e.g. http://unleash:4242/api; empty = bootstrap file only")
	fs.StringVar(&s.UnleashToken, "unleash-token", "", "Unleash client API token")
	fs.DurationVar(&s.UnleashRefresh, "unleash-refresh", flags.DefaultRefreshInterval, "how often flags are fetched from Unleash")
	fs.StringVar(&s.FlagsBootstrap, "flags-bootstrap", "", "flags bootstrap JSON file; empty = the one shipped in the binary")
	fs.StringVar(&s.ReconcileAt, "reconcile-at", "03:00", "UTC time of the nightly reconcile, HH:MM")
	fs.StringVar(&s.ReconcileReadDSN, "reconcile-read-dsn", "", "replica DSN the reconcile reads its snapshots from (corrections go to --mysql-dsn); empty = the primary")
	fs.StringVar(&s.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&s.LogFormat, "log-format", "text", "text or json")
	fs.IntVar(&s.JobConcurrency, "job-concurrency", poster.DefaultJobConcurrency, "jobs a worker runs at once")
	fs.BoolVar(&s.PostingLimit, "posting-limit", false, "turn on the adaptive limit on drafts posted per second, which slows posting jobs while authors' requests slow down; it trades freshness for their latency, so it is off by default (docs/benchmarks.md, issue 25)")
	fs.DurationVar(&s.JobPoll, "job-poll", poster.DefaultJobPoll, "how often an idle worker checks Redis for jobs (asynq's default of 1s adds up to a second to every post)")
	fs.DurationVar(&s.ShutdownTimeout, "shutdown-timeout", defaultShutdownTimeout, "how long SIGTERM waits for in-flight work")
	fs.StringVar(&s.AdminAddr, "admin-addr", "", "listen address of /healthz, /readyz, /metrics and /debug/pprof/, instead of --http-addr; empty = no admin listener")
	fs.DurationVar(&s.ShutdownDelay, "shutdown-delay", defaultShutdownDelay, "after SIGTERM, how long /readyz answers 503 while the process keeps serving, before it drains")
	fs.DurationVar(&s.CounterFlushTimeout, "counter-flush-timeout", counter.DefaultFlushTimeout, "how long a stopping counter may take to flush the tags it holds")
	fs.IntVar(&s.WrangleRowsPerTx, "wrangle-rows-per-tx", poster.DefaultWrangleRowsPerTx, "most rows one transaction of a wrangling job writes (work_filters and outbox rows)")
	fs.IntVar(&s.WrangleRowsPerSecond, "wrangle-rows-per-second", poster.DefaultWrangleRowsPerSecond, "most rows a worker's wrangling jobs write in any one second; above --wrangle-rows-per-tx")
	s.Edge.register(fs)
	s.Rollout.register(fs)
	s.Pools.register(fs)
	fs.IntVar(&s.MaxDrafts, "quota-drafts", drafts.DefaultMaxDrafts, "unposted drafts an author may keep; one more is refused 422 quota_exceeded (0 = no limit)")
	fs.IntVar(&s.BulkAfter, "bulk-after", poster.DefaultBulkAfter, "an author with this many posts queued has the next ones queued on the bulk queue, behind other authors' (0 = one queue, first come first served)")
	fs.IntVar(&s.NewTagsPerDay, "quota-new-tags-per-day", tags.DefaultNewTagsPerDay, "tags an author may name for the first time per UTC day; past it saves are refused 429 quota_exceeded (0 = no limit)")
}

// edgeSettings are the HTTP layer's deadlines, limits and rate limits
// (docs/operations.md, "Limits and timeouts").
type edgeSettings struct {
	RequestTimeout    time.Duration
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	MaxInFlight       int
	QueueWait         time.Duration
	BodyBytesInFlight int64

	Writes, Reads, Admin, Anonymous httpapi.RateLimit
	RateLimitPrefix                 string
	RateLimitTimeout                time.Duration
	TrustedProxies                  string
	trustedProxies                  []netip.Prefix // parsed by validate
}

func (e *edgeSettings) register(fs *flag.FlagSet) {
	fs.DurationVar(&e.RequestTimeout, "request-timeout", httpapi.DefaultRequestTimeout, "every API request's deadline; past it the answer is 503 timeout")
	fs.DurationVar(&e.ReadHeaderTimeout, "http-read-header-timeout", httpapi.DefaultReadHeaderTimeout, "how long a client may take to send a request's headers")
	fs.DurationVar(&e.ReadTimeout, "http-read-timeout", httpapi.DefaultReadTimeout, "how long a client may take to send a whole request")
	fs.DurationVar(&e.WriteTimeout, "http-write-timeout", httpapi.DefaultWriteTimeout, "how long a request may take from its headers to the end of its answer; longer than --request-timeout")
	fs.DurationVar(&e.IdleTimeout, "http-idle-timeout", httpapi.DefaultIdleTimeout, "how long an idle keep-alive connection is kept")
	fs.IntVar(&e.MaxHeaderBytes, "http-max-header-bytes", httpapi.DefaultMaxHeaderBytes, "largest request header block")
	fs.IntVar(&e.MaxInFlight, "max-in-flight", httpapi.DefaultMaxInFlight, "API requests served at once; more are answered 503 overloaded")
	fs.DurationVar(&e.QueueWait, "queue-wait", httpapi.DefaultQueueWait, "longest wait for a database slot or body memory before 503 overloaded")
	fs.Int64Var(&e.BodyBytesInFlight, "body-bytes-in-flight", httpapi.DefaultBodyBytesInFlight, "bytes of request bodies held in memory at once")
	for _, l := range []struct {
		name, who string
		limit     *httpapi.RateLimit
		def       httpapi.RateLimit
	}{
		{"writes", "an author's writes (POST, PUT, DELETE)", &e.Writes, httpapi.DefaultWriteLimit},
		{"reads", "an author's reads (GET)", &e.Reads, httpapi.DefaultReadLimit},
		{"admin", "an admin's requests to admin routes", &e.Admin, httpapi.DefaultAdminLimit},
		{"anonymous", "requests without a valid token, per client address", &e.Anonymous, httpapi.DefaultAnonymousLimit},
	} {
		fs.Float64Var(&l.limit.PerSecond, "rate-limit-"+l.name, l.def.PerSecond, "requests a second allowed for "+l.who+"; 0 = unlimited")
		fs.IntVar(&l.limit.Burst, "rate-limit-"+l.name+"-burst", l.def.Burst, "requests at once allowed for "+l.who+" after a quiet spell")
	}
	fs.StringVar(&e.RateLimitPrefix, "rate-limit-prefix", httpapi.DefaultRateLimitPrefix, "prefix of the rate limiter's Redis keys; replicas sharing it share the limits")
	fs.DurationVar(&e.RateLimitTimeout, "rate-limit-timeout", httpapi.DefaultRateLimitTimeout, "longest wait for the rate limiter's and the new-tag quota's Redis; past it the request is served")
	fs.StringVar(&e.TrustedProxies, "trusted-proxies", "", "comma-separated CIDRs of proxies whose X-Forwarded-For names the client address")
}

// validate parses the trusted proxies and checks the timeouts fit together.
func (e *edgeSettings) validate() error {
	e.trustedProxies = nil
	for _, c := range strings.Split(e.TrustedProxies, ",") {
		if c = strings.TrimSpace(c); c == "" {
			continue
		}
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return fmt.Errorf("--trusted-proxies: %q is not a CIDR such as 10.0.0.0/8", c)
		}
		e.trustedProxies = append(e.trustedProxies, p.Masked())
	}
	if e.WriteTimeout <= e.RequestTimeout {
		return fmt.Errorf("--http-write-timeout (%v) must be longer than --request-timeout (%v), or a timed-out request's 503 is never sent",
			e.WriteTimeout, e.RequestTimeout)
	}
	return nil
}

func (e *edgeSettings) edge() httpapi.Edge {
	return httpapi.Edge{RequestTimeout: e.RequestTimeout, MaxInFlight: e.MaxInFlight, QueueWait: e.QueueWait,
		BodyBytesInFlight: e.BodyBytesInFlight, ReadHeaderTimeout: e.ReadHeaderTimeout, ReadTimeout: e.ReadTimeout,
		WriteTimeout: e.WriteTimeout, IdleTimeout: e.IdleTimeout, MaxHeaderBytes: e.MaxHeaderBytes,
		RateLimits: httpapi.RateLimits{Prefix: e.RateLimitPrefix, Timeout: e.RateLimitTimeout,
			Writes: e.Writes, Reads: e.Reads, Admin: e.Admin, Anonymous: e.Anonymous, TrustedProxies: e.trustedProxies}}
}

// parse parses args into a new flag set named name, with s registered and
// extra adding command-specific flags. It returns the positional arguments,
// which only migrate accepts, or flag.ErrHelp after printing the flags when
// args ask for help.
func parse(name string, args []string, stderr io.Writer, s *settings, extra func(fs *flag.FlagSet)) ([]string, error) {
	fs := flag.NewFlagSet("tagcount "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: tagcount %s [flags]\n\nflags (each also read from TAGCOUNT_<NAME>):\n", name)
		fs.PrintDefaults()
	}
	// Every shared setting is known, accepted here or not, so a variable
	// set for all roles is not reported as unknown in one.
	var known []string
	if s != nil {
		known = s.registerFor(fs, name)
	} else {
		known = new(settings).registerFor(flag.NewFlagSet("", flag.ContinueOnError), "")
	}
	if extra != nil {
		extra(fs)
	}
	readSecretFiles := registerSecretFiles(fs)
	strict := fs.Bool("strict-env", false, "refuse to start when a TAGCOUNT_ environment variable names no flag (default: warn)")
	if err := ff.Parse(fs, args, ff.WithEnvVarPrefix("TAGCOUNT")); err != nil {
		return nil, err
	}
	if err := readSecretFiles(); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 && name != "migrate" {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	fs.VisitAll(func(f *flag.Flag) { known = append(known, f.Name) })
	for _, name := range secretFlags {
		known = append(known, name+"-file")
	}
	if err := checkEnv(os.Environ(), known, *strict, settingsLogger(stderr, s)); err != nil {
		return nil, err
	}
	return fs.Args(), nil
}

// validate returns an error naming the flag of the first setting in s that
// holds a value the service cannot use; a nil s is valid.
func (s *settings) validate() error {
	if s == nil {
		return nil
	}
	if s.PostingPath != "flag" && s.PostingPath != "new" && s.PostingPath != "legacy" {
		return fmt.Errorf("--posting-path must be flag, new or legacy, not %q", s.PostingPath)
	}
	if _, _, err := parseClock(s.ReconcileAt); err != nil {
		return err
	}
	if err := s.Edge.validate(); err != nil {
		return err
	}
	if err := s.Pools.validate(); err != nil {
		return err
	}
	if err := s.secure(); err != nil {
		return err
	}
	if s.WrangleRowsPerTx < 4 || s.WrangleRowsPerSecond <= s.WrangleRowsPerTx {
		return fmt.Errorf("--wrangle-rows-per-tx must be at least 4 (one work's re-filing) and below --wrangle-rows-per-second (%d, %d)",
			s.WrangleRowsPerTx, s.WrangleRowsPerSecond)
	}
	return s.validateBasics()
}

// validateBasics refuses the values that used to fall back silently (a
// mistyped --log-level became info) or that no role can run with.
func (s *settings) validateBasics() error {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s.LogLevel)); err != nil {
		return fmt.Errorf("--log-level must be debug, info, warn or error, not %q", s.LogLevel)
	}
	if s.LogFormat != "text" && s.LogFormat != "json" {
		return fmt.Errorf("--log-format must be text or json, not %q", s.LogFormat)
	}
	for _, c := range []struct {
		name string
		v    int
	}{{"--kafka-partitions", s.KafkaPartitions}, {"--job-concurrency", s.JobConcurrency}, {"--max-in-flight", s.Edge.MaxInFlight}} {
		if c.v < 1 {
			return fmt.Errorf("%s must be at least 1, not %d", c.name, c.v)
		}
	}
	// A zero would silently take the default further down (stackOptions'
	// zero values), so the flag refuses it.
	for _, c := range []struct {
		name string
		v    time.Duration
	}{{"--job-poll", s.JobPoll}, {"--shutdown-timeout", s.ShutdownTimeout}, {"--counter-flush-timeout", s.CounterFlushTimeout},
		{"--request-timeout", s.Edge.RequestTimeout}, {"--unleash-refresh", s.UnleashRefresh}} {
		if c.v <= 0 {
			return fmt.Errorf("%s must be positive, not %v", c.name, c.v)
		}
	}
	if s.ShutdownDelay < 0 {
		return fmt.Errorf("--shutdown-delay must not be negative, not %v", s.ShutdownDelay)
	}
	if s.PublishDropRate < 0 || s.PublishDropRate > 1 {
		return fmt.Errorf("--fault-publish-drop-rate must be between 0 and 1, not %v", s.PublishDropRate)
	}
	return nil
}

func (s *settings) brokers() []string {
	var out []string
	for _, b := range strings.Split(s.KafkaBrokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

func parseClock(hhmm string) (hour, minute int, err error) {
	t, err := time.Parse("15:04", hhmm)
	if err != nil {
		return 0, 0, fmt.Errorf("--reconcile-at must be HH:MM (UTC), not %q", hhmm)
	}
	return t.Hour(), t.Minute(), nil
}

func newLogger(w io.Writer, level, format string) *slog.Logger {
	// parse refused any level UnmarshalText does not know.
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: l}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if format == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	// Every line logged with a request's context names the request.
	return slog.New(httpapi.LogHandler(h))
}
