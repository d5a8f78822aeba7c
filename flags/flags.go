// Package flags names tagcount's feature flags and their safe defaults, and
// evaluates them through an Unleash client that the rest of the service never
// sees.
//
// Per-author flags are evaluated with the author id as Unleash's userId, so a
// flexibleRollout strategy with stickiness "userId" (or "default") gives each
// author the same answer on every instance and across restarts.
//
// Flags fail safe (DESIGN invariant 9): when the Unleash server cannot be
// reached the client keeps the state it last fetched; before any fetch it uses
// its backup file (the state fetched by an earlier run) unless that backup is
// older than the bootstrap, then the bootstrap (a file, or the one embedded in
// the binary); a flag known to none of these is off.
package flags

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"time"

	unleash "github.com/Unleash/unleash-client-go/v4"
	ucontext "github.com/Unleash/unleash-client-go/v4/context"
	"github.com/prometheus/client_golang/prometheus"
)

// The service's flags. An unknown flag, or one the server, backup and
// bootstrap all lack, is off.
const (
	// NewPostingPath, on for an author, sends that author's posts down the
	// new (outbox + counter) path; off, down the legacy synchronous path.
	NewPostingPath = "tagcount.new-posting-path"
	// TierDeferral is a kill switch: off makes the counter flush every tag
	// on every batch instead of deferring medium and large tags.
	TierDeferral = "tagcount.tier-deferral"
	// ReconcileApply is a kill switch: off makes reconcile report drift
	// without writing corrections.
	ReconcileApply = "tagcount.reconcile-apply"
	// CounterPause is a switch: on makes the counter apply nothing (posts
	// go on and the outbox grows) until it is off again; the admin route
	// POST /v1/admin/counter/pause does the same.
	CounterPause = "tagcount.counter-pause"
)

// Definition describes one named flag.
type Definition struct {
	Name string
	// Default is what the flag evaluates to when nothing defines it. Always
	// false today: an unknown flag is off.
	Default bool
	// PerAuthor flags are evaluated with the author id as userId; the others
	// are instance-wide switches.
	PerAuthor   bool
	Description string
}

var definitions = []Definition{
	{Name: NewPostingPath, PerAuthor: true, Description: "on: the author's posts take the new outbox path; off: the legacy synchronous path"},
	{Name: TierDeferral, Description: "kill switch; off: the counter flushes every tag every batch"},
	{Name: ReconcileApply, Description: "kill switch; off: reconcile reports drift without writing"},
	{Name: CounterPause, Description: "on: the counter applies nothing, the outbox grows; off: it applies"},
}

// Config configures a Client. Every field may be zero: the zero Config runs
// from the embedded bootstrap, and every zero field that has a default
// takes it (WithDefaults).
type Config struct {
	// URL is the Unleash API URL, e.g. http://127.0.0.1:4242/api. Empty runs
	// from the bootstrap only, with no server and no network traffic.
	URL string
	// Token is the client (backend) API token, sent as Authorization.
	Token string
	// AppName defaults to DefaultAppName. It names the backup file too.
	AppName string
	// InstanceID identifies this process to Unleash, and buckets it when an
	// instance-wide flag is rolled out gradually; default AppName-host-pid.
	InstanceID string
	// RefreshInterval is how often definitions are fetched (default
	// DefaultRefreshInterval; negative is an error). After consecutive
	// fetch errors the client backs off, up to 10 intervals between tries.
	RefreshInterval time.Duration
	// BootstrapFile is a path to a client-features JSON document (the body of
	// GET /api/client/features); empty uses the bootstrap embedded in the
	// binary.
	BootstrapFile string
	// BackupDir is a directory the service owns (e.g. <data dir>/unleash),
	// created if missing. The last fetched state is written there and read
	// back at start when the server is unreachable. Empty keeps no backup.
	BackupDir string
	// MetricsInterval is how often evaluation counts are sent to Unleash
	// (for its UI); default DefaultMetricsInterval. Negative disables
	// sending.
	MetricsInterval time.Duration
	// HTTPTimeout bounds one request to the server; default
	// DefaultHTTPTimeout.
	HTTPTimeout time.Duration
	Logger      *slog.Logger
	// Registerer receives the package's Prometheus collectors; may be nil.
	Registerer prometheus.Registerer
}

// ErrConfig is wrapped by every error New returns.
var ErrConfig = errors.New("flags: bad configuration")

// ErrNoServer is returned by WaitForSync when the client runs without a server.
var ErrNoServer = errors.New("flags: no Unleash server configured")

var appNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)

// Defaults of Config.
const (
	DefaultAppName         = "tagcount"
	DefaultRefreshInterval = 15 * time.Second
	DefaultMetricsInterval = time.Minute
	DefaultHTTPTimeout     = 10 * time.Second
	// offlineRefresh is the fetch loop's interval without a server: it
	// fetches nothing, so any interval does.
	offlineRefresh = time.Hour
)

// WithDefaults returns c with every zero field that has a default set to
// it: the one place Config's defaults are applied.
func (c Config) WithDefaults() Config {
	c.AppName = cmp.Or(c.AppName, DefaultAppName)
	c.RefreshInterval = cmp.Or(c.RefreshInterval, DefaultRefreshInterval)
	if c.URL == "" {
		c.RefreshInterval = offlineRefresh
	}
	c.MetricsInterval = cmp.Or(c.MetricsInterval, DefaultMetricsInterval)
	if c.HTTPTimeout <= 0 {
		c.HTTPTimeout = DefaultHTTPTimeout
	}
	c.Logger = cmp.Or(c.Logger, slog.Default())
	if c.InstanceID == "" {
		host, _ := os.Hostname()
		c.InstanceID = fmt.Sprintf("%s-%s-%d", c.AppName, host, os.Getpid())
	}
	return c
}

// validate returns an error wrapping ErrConfig for the first field of c
// (defaults applied) the client cannot run with.
func (c Config) validate() error {
	if !appNameRE.MatchString(c.AppName) {
		return fmt.Errorf("%w: AppName %q must be 1-100 of [A-Za-z0-9._-]", ErrConfig, c.AppName)
	}
	if c.URL == "" {
		return nil
	}
	if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: URL %q is not an http(s) URL", ErrConfig, c.URL)
	}
	if c.RefreshInterval < 0 {
		return fmt.Errorf("%w: RefreshInterval must not be negative (got %v)", ErrConfig, c.RefreshInterval)
	}
	return nil
}

// Client evaluates the service's flags. It is safe for concurrent use.
type Client struct {
	cfg     Config
	log     *slog.Logger
	uc      *unleash.Client
	store   *store
	metrics *metrics
	cancel  context.CancelFunc // stops background register calls

	mu     sync.RWMutex // held for reading by evaluations; Close takes it to stop them
	closed bool
}

// New starts a client. It never waits on the network: definitions arrive in
// the background, and until the first fetch succeeds the backup, bootstrap or
// defaults apply. It returns an error (wrapping ErrConfig) only for bad
// configuration: a negative RefreshInterval with a URL, a malformed URL,
// an unreadable or malformed BootstrapFile, or a BackupDir it cannot create.
// ctx is not retained.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With("component", "flags")

	boot, err := loadBootstrap(cfg.BootstrapFile)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	backupPath := ""
	if cfg.BackupDir != "" {
		if err := os.MkdirAll(cfg.BackupDir, 0o750); err != nil {
			return nil, fmt.Errorf("%w: BackupDir: %w", ErrConfig, err)
		}
		backupPath = filepath.Join(cfg.BackupDir, backupFileName(cfg.AppName))
	}

	m := newMetrics(cfg.Registerer)
	st := newStore(log, m, boot, backupPath, cfg.URL != "")

	bg, cancel := context.WithCancel(context.Background())
	tr := &transport{
		base:    http.DefaultTransport,
		offline: cfg.URL == "",
		bg:      bg,
		timeout: cfg.HTTPTimeout,
		log:     log,
		metrics: m,
		store:   st,
	}
	serverURL := cfg.URL
	if serverURL == "" {
		// The Unleash client insists on a URL. Offline, the transport answers
		// every fetch with 304 Not Modified, so nothing leaves the process.
		serverURL = "http://unleash.offline.invalid/api/"
	}
	headers := http.Header{}
	if cfg.Token != "" {
		headers.Set("Authorization", cfg.Token)
	}
	opts := []unleash.ConfigOption{
		unleash.WithUrl(serverURL),
		unleash.WithAppName(cfg.AppName),
		unleash.WithRefreshInterval(cfg.RefreshInterval),
		unleash.WithStorage(st),
		unleash.WithListener(&listener{log: log, offline: cfg.URL == ""}),
		unleash.WithHttpClient(&http.Client{Transport: tr, Timeout: cfg.HTTPTimeout}),
		unleash.WithCustomHeaders(headers),
	}
	opts = append(opts, unleash.WithInstanceId(cfg.InstanceID))
	if cfg.URL == "" || cfg.MetricsInterval < 0 {
		opts = append(opts, unleash.WithDisableMetrics(true))
	} else {
		opts = append(opts, unleash.WithMetricsInterval(cfg.MetricsInterval))
	}
	uc, err := unleash.NewClient(opts...)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	c := &Client{cfg: cfg, log: log, uc: uc, store: st, metrics: m, cancel: cancel}
	snap := st.state()
	log.Info("flags client started", "server", redactURL(cfg.URL), "source", snap.source,
		"refresh_interval", cfg.RefreshInterval, "backup", backupPath, "bootstrap", boot.origin)
	return c, nil
}

// NewPostingPath reports whether the author's posts take the new path.
func (c *Client) NewPostingPath(authorID int64) bool { return c.Enabled(NewPostingPath, authorID) }

// TierDeferral reports whether the counter may defer medium and large tags.
func (c *Client) TierDeferral() bool { return c.Enabled(TierDeferral, 0) }

// ReconcileApply reports whether reconcile writes its corrections.
func (c *Client) ReconcileApply() bool { return c.Enabled(ReconcileApply, 0) }

// CounterPaused reports whether the counter is paused by the flag.
func (c *Client) CounterPaused() bool { return c.Enabled(CounterPause, 0) }

// Enabled evaluates the named flag for the author (authorID <= 0: no author;
// the instance id then stands in for the userId). It returns false for an
// unknown flag, for a definition that cannot be evaluated, and after Close.
func (c *Client) Enabled(name string, authorID int64) bool {
	on := c.evaluate(name, authorID)
	c.metrics.evaluated(name, on)
	return on
}

func (c *Client) evaluate(name string, authorID int64) (on bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return false
	}
	defer func() {
		// The Unleash client's strategies use unchecked type assertions; the
		// store repairs the ones it knows of, this catches the rest.
		if r := recover(); r != nil {
			c.metrics.evalErrors.Inc()
			c.log.Error("flag evaluation failed; using off", "flag", name, "panic", fmt.Sprint(r))
			on = false
		}
	}()
	// Without an author, the instance stands in for the user, so that an
	// instance-wide flag at 100% is on whatever stickiness ops chose, and a
	// partial rollout buckets instances.
	uctx := ucontext.Context{UserId: c.cfg.InstanceID, SessionId: c.cfg.InstanceID}
	if authorID > 0 {
		uctx.UserId = strconv.FormatInt(authorID, 10)
	}
	return c.uc.IsEnabled(name, unleash.WithContext(uctx), unleash.WithFallback(false))
}

// WaitForSync blocks until definitions have been fetched from the server at
// least once. It returns ctx's error if that does not happen before ctx is
// done, and ErrNoServer at once when no URL is configured.
func (c *Client) WaitForSync(ctx context.Context) error {
	if c.cfg.URL == "" {
		return ErrNoServer
	}
	select {
	case <-c.store.synced:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops fetching. Evaluations after Close return false. It never fails.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	c.cancel()
	_ = c.uc.Close()
	c.log.Info("flags client closed")
	return nil
}

func redactURL(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable)"
	}
	u.User = nil
	u.RawQuery = ""
	return u.String()
}

// listener routes the Unleash client's events to the log.
type listener struct {
	log     *slog.Logger
	offline bool // no server: the client's "ready" follows the offline transport's 304
}

func (l *listener) OnError(err error)   { l.log.Warn("unleash client error", "err", err) }
func (l *listener) OnWarning(err error) { l.log.Warn("unleash client warning", "err", err) }
func (l *listener) OnReady() {
	if l.offline {
		l.log.Info("flag definitions ready without an unleash server (bootstrap, else defaults)")
		return
	}
	l.log.Info("flag definitions fetched from unleash server")
}
func (l *listener) OnUpdate() { l.log.Info("flag definitions changed on unleash server") }
