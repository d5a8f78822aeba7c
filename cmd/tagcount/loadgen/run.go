package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/loop"
)

// Config is one run of a workload against one service.
type Config struct {
	// Path labels the run ("legacy", "new").
	Path string
	// BaseURL is the service's address, e.g. http://127.0.0.1:8080.
	BaseURL string
	// Auth signs each author's token.
	Auth     httpapi.Auth
	Workload *Workload

	// Concurrency is the number of authors writing at once (closed loop),
	// or the most works in flight (open loop). Default 64.
	Concurrency int
	// The run stops starting works after Duration or after Posts works,
	// whichever comes first (at least one must be set).
	Duration time.Duration
	Posts    int64
	// Rate limits work starts per second (0: as fast as the service goes).
	// With WeekendPeak it is the peak.
	Rate    float64
	Profile Profile
	// RateAt, if set, is the rate of work starts at each moment of the
	// run instead of Rate's profile (a scenario's shape, e.g. a spike);
	// Rate is then its peak.
	RateAt func(elapsed time.Duration) float64
	// OpenLoop starts works at Rate whether or not earlier ones finished
	// (up to Concurrency in flight; arrivals beyond are counted as missed).
	OpenLoop bool
	// ImportBatch, when set, runs the works as an importer does: it saves
	// this many drafts, then posts them all at once, Concurrency requests
	// in flight, batch after batch, until Posts works (Rate and OpenLoop
	// do not apply). A batch below the drafts quota fits in it.
	ImportBatch int
	// ImportReady, if set, is called with each batch's number (from 0)
	// once its drafts are saved, before they are posted; it may block,
	// to post them at a moment of the caller's choosing.
	ImportReady func(batch int)

	// MaxRetries is how often a 503 or a transport error is retried before
	// the work is given up (default 5; negative: never retry). MaxRetryWait
	// caps the wait a Retry-After asks for (default 1s).
	MaxRetries   int
	MaxRetryWait time.Duration
	// PollTimeout bounds the wait for a post to become a work and for a
	// probe tag's count to show it (default 30s).
	PollTimeout time.Duration
	// DrainTimeout bounds the wait for follow-ups (polls, later edits and
	// deletes) after the last work started (default 60s).
	DrainTimeout time.Duration
	// OutboxWait bounds the wait for queued drafts to be applied and the
	// outbox to drain before the exactness check (default 15s).
	OutboxWait time.Duration

	// DB is the service's database, for rows written and the exactness
	// check, and to learn when a queued post became a work; nil skips the
	// first two and polls GET /v1/drafts/{id} for the third.
	DB *migrations.DB
	// NoCheck skips the rows written, the server's counters and the
	// exactness check: another run shares the service (a scenario's other
	// class), and the caller checks once both are done (CheckCounts).
	NoCheck bool
	// PollAPI polls GET /v1/drafts/{id} for every queued post even when DB
	// is set, as a web app showing the author "posting..." would.
	PollAPI bool
	// RedisAddr is the Redis server of the service's job queue, whose
	// command counters the run reads; empty skips them.
	RedisAddr string
	// DBLink is the delay line between the service and its database when
	// the run models a network hop (nil: none); DBLinkCost prices its CPU.
	DBLink     *DelayLine
	DBLinkCost *DelayCost
	// Window, if set, sees every answer's latency and status, every
	// completion and every Post → small-tag count time as they happen, for
	// a series its owner samples during the run (SeriesSampler).
	Window *Window
	// Stop, if set, ends the load when closed, as the end of Duration does:
	// no new works, those under way finish.
	Stop <-chan struct{}
	// Progress receives a progress line every second; nil for none.
	Progress io.Writer
	// HTTPClient defaults to one with a connection pool sized for the run.
	HTTPClient *http.Client
}

// Works counts what happened to the run's works.
type Works struct {
	Started      int64 `json:"started"`
	Created      int64 `json:"drafts_created"`
	Accepted     int64 `json:"posts_accepted"`
	Completed    int64 `json:"posts_completed"`
	NotCompleted int64 `json:"posts_not_completed"` // accepted, never seen posted
	Failed       int64 `json:"works_failed"`        // given up or rejected on the way
	Edited       int64 `json:"works_edited"`
	Deleted      int64 `json:"works_deleted"`
	ProbeTimeout int64 `json:"probe_timeouts"`
	Missed       int64 `json:"missed_arrivals"`
}

// Errors counts failed requests by kind; retries count again.
type Errors struct {
	Deadlock int64 `json:"deadlock"`
	LockWait int64 `json:"lock_wait_timeout"`
	Other5xx int64 `json:"other_5xx"`
	Other    int64 `json:"other"`
	GaveUp   int64 `json:"gave_up"`
}

// Result is what a run measured.
type Result struct {
	Path        string    `json:"path"`
	Started     time.Time `json:"started"`
	LoadSeconds float64   `json:"load_s"`   // from start to the last work started
	Seconds     float64   `json:"window_s"` // from start to the last post completed
	Concurrency int       `json:"concurrency"`
	Rate        float64   `json:"rate"`
	Profile     Profile   `json:"profile"`
	OpenLoop    bool      `json:"open_loop"`

	Works           Works                     `json:"works"`
	PostsPerSec     float64                   `json:"posts_per_s"` // completed posts over the window
	AcceptedPerSec  float64                   `json:"accepted_per_s"`
	CeilingFraction float64                   `json:"ceiling_fraction,omitempty"`
	Latency         map[string]LatencySummary `json:"latency"`
	PostToPosted    LatencySummary            `json:"post_to_posted"`
	PostToCount     LatencySummary            `json:"post_to_small_tag_count"`
	Errors          Errors                    `json:"errors"`
	Rows            []RowsWritten             `json:"rows_written,omitempty"`
	Resources       Resources                 `json:"resources"`
	Check           *Check                    `json:"check,omitempty"`
	Server          *ServerWork               `json:"db_server,omitempty"` // server-wide status counters during the run
	DBLink          *DBLinkUse                `json:"db_link,omitempty"`
	// Redis is the commands the Redis server ran during the run, from
	// INFO commandstats. Server-wide: the machine's Redis is shared, so
	// other clients' commands (other tests, other services) count too.
	Redis  *RedisWork    `json:"redis_server,omitempty"`
	Series []SeriesPoint `json:"series"`
	// Statuses counts every answer by HTTP status, retries included
	// ("transport": none came).
	Statuses map[string]int64 `json:"statuses"`
	// MissingRetryAfter counts 429 and 503 answers without Retry-After.
	MissingRetryAfter int64 `json:"missing_retry_after"`
}

// RowsOf returns the rows written to table, or false.
func (r *Result) RowsOf(table string) (RowsWritten, bool) {
	for _, w := range r.Rows {
		if w.Table == table {
			return w, true
		}
	}
	return RowsWritten{}, false
}

func (c *Config) defaults() error {
	if c.Workload == nil {
		return errors.New("loadgen: no workload")
	}
	if c.BaseURL == "" {
		return errors.New("loadgen: no base URL")
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 64
	}
	if c.Duration <= 0 && c.Posts <= 0 {
		return errors.New("loadgen: set a duration or a number of posts")
	}
	if c.Profile == "" {
		c.Profile = Steady
	}
	if c.Profile == WeekendPeak && c.Rate <= 0 {
		return errors.New("loadgen: the weekend-peak profile needs a (peak) rate")
	}
	if c.OpenLoop && c.Rate <= 0 {
		return errors.New("loadgen: an open loop needs a rate")
	}
	if c.ImportBatch > 0 && c.Posts <= 0 {
		return errors.New("loadgen: an import needs a number of posts")
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = 5
	}
	c.MaxRetries = max(c.MaxRetries, 0)
	if c.MaxRetryWait <= 0 {
		c.MaxRetryWait = time.Second
	}
	if c.PollTimeout <= 0 {
		c.PollTimeout = 30 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 60 * time.Second
	}
	if c.OutboxWait <= 0 {
		c.OutboxWait = 15 * time.Second
	}
	if c.HTTPClient == nil {
		c.HTTPClient = NewHTTPClient(c.Concurrency)
	}
	return nil
}

// NewHTTPClient returns a client whose pool keeps a connection per
// concurrent request instead of net/http's default two per host.
func NewHTTPClient(concurrency int) *http.Client {
	t := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: 4 * concurrency,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	// The timeout is past every deadline the service answers within (the
	// in-process stacks': the driver's 60 s I/O timeout; production's
	// --request-timeout), so the service, not the client, ends a slow
	// request: its 503 says nothing was applied and is retried, while a
	// client that gives up first cannot know and counts the work failed.
	return &http.Client{Transport: t, Timeout: clientTimeout}
}

// clientTimeout bounds one request of the load generator's client.
const clientTimeout = 2 * time.Minute

// run is the state of one Run.
type run struct {
	cfg     Config
	c       *client
	rec     *recorder
	tokens  []string
	follow  sync.WaitGroup
	fctx    context.Context // follow-ups' context, cancelled after the drain timeout
	watcher *postWatcher    // nil: poll the API
	stopped atomic.Bool     // no new works
	next    atomic.Int64    // next slot (open loop)
	started atomic.Int64
	failed  atomic.Int64
	created atomic.Int64
	notDone atomic.Int64
	edited  atomic.Int64
	deleted atomic.Int64
	probeTO atomic.Int64
}

// Run drives cfg's workload against the service and returns what it
// measured. It fails only when the run cannot start (bad config, tokens);
// failed requests are counted, not returned.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	r, err := newRun(cfg)
	if err != nil {
		return nil, err
	}
	m := startMeters(ctx, cfg)
	start := time.Now()
	r.rec = newRecorder(start)
	r.rec.window = cfg.Window
	r.c = &client{base: cfg.BaseURL, hc: cfg.HTTPClient, rec: r.rec, maxRetries: cfg.MaxRetries, maxWait: cfg.MaxRetryWait}
	fctx, cancelFollow := context.WithCancel(ctx)
	defer cancelFollow()
	r.fctx = fctx
	if cfg.DB != nil && !cfg.PollAPI {
		r.watcher = newPostWatcher(cfg.DB)
		go r.watcher.run(fctx)
	}
	m.res = startResources(250*time.Millisecond, cfg.DB)

	stopProgress := r.progress(start)
	loadEnd := r.load(ctx, start)
	r.drain(ctx, cancelFollow)
	stopProgress()

	out := r.result(start, loadEnd)
	m.stop(ctx, out)
	return out, nil
}

// newRun returns the state of a run of cfg, with a token for every author.
func newRun(cfg Config) (*run, error) {
	authors := cfg.Workload.Options().Authors
	base := cfg.Workload.Options().AuthorBase
	r := &run{cfg: cfg, tokens: make([]string, authors+1)}
	for a := 1; a <= authors; a++ {
		tok, err := cfg.Auth.IssueToken(base+int64(a), httpapi.RoleAuthor, 24*time.Hour)
		if err != nil {
			return nil, fmt.Errorf("loadgen: issuing a token: %w", err)
		}
		r.tokens[a] = tok
	}
	return r, nil
}

// token is the token of author (an id of the run's workload).
func (r *run) token(author int64) string {
	return r.tokens[author-r.cfg.Workload.Options().AuthorBase]
}

// drain waits for the follow-ups (polls, later edits and deletes), and cuts
// them off after the drain timeout or when ctx ends.
func (r *run) drain(ctx context.Context, cancelFollow context.CancelFunc) {
	drained := make(chan struct{})
	go func() { r.follow.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(r.cfg.DrainTimeout):
		cancelFollow()
		<-drained
	case <-ctx.Done():
		cancelFollow()
		<-drained
	}
}

// result is what the recorder and the counters measured, timed from start
// to the end of the load or the last completion, whichever is later.
func (r *run) result(start, loadEnd time.Time) *Result {
	cfg, rec := r.cfg, r.rec
	out := &Result{
		Path: cfg.Path, Started: start, Concurrency: cfg.Concurrency, Rate: cfg.Rate, Profile: cfg.Profile, OpenLoop: cfg.OpenLoop,
		LoadSeconds: round3(loadEnd.Sub(start).Seconds()),
	}
	rec.mu.Lock()
	window := loadEnd.Sub(start)
	if rec.lastCompletion.After(loadEnd) {
		window = rec.lastCompletion.Sub(start)
	}
	out.Seconds = round3(window.Seconds())
	if window > 0 {
		out.PostsPerSec = round3(float64(rec.completed) / window.Seconds())
		out.AcceptedPerSec = round3(float64(rec.accepted) / loadEnd.Sub(start).Seconds())
	}
	out.Latency = map[string]LatencySummary{}
	for op := range numOps {
		out.Latency[op.String()] = summarize(rec.ops[op])
	}
	out.PostToPosted = summarize(rec.postToPosted)
	out.PostToCount = summarize(rec.postToCount)
	out.Errors = rec.errorCounts()
	out.Statuses, out.MissingRetryAfter = rec.statusCounts(), rec.noRetryAfter
	out.Works = Works{
		Started: r.started.Load(), Created: r.created.Load(), Accepted: rec.accepted, Completed: rec.completed,
		NotCompleted: r.notDone.Load(), Failed: r.failed.Load(), Edited: r.edited.Load(), Deleted: r.deleted.Load(),
		ProbeTimeout: r.probeTO.Load(), Missed: rec.missedArrivals,
	}
	rec.mu.Unlock()
	out.Series = rec.series()
	return out
}

// meters are the run's measurements from outside the HTTP client: the
// database's row and status counters, and the machine's resources.
type meters struct {
	db      *migrations.DB
	wait    time.Duration // OutboxWait
	rows    *rowCounter
	before  map[string]int64 // rows changed per table
	status0 map[string]int64 // server status counters
	res     *resourceSampler
	link    *DelayLine
	cost    *DelayCost
	link0   DelayStats
	redis   *redisCounter
	calls0  int64 // Redis commands so far
	redisOK bool
}

// startMeters reads the counters a run's figures are differences of.
func startMeters(ctx context.Context, cfg Config) *meters {
	m := &meters{db: cfg.DB, wait: cfg.OutboxWait, link: cfg.DBLink, cost: cfg.DBLinkCost}
	if cfg.NoCheck {
		m.db = nil
	}
	if m.link != nil {
		m.link0 = m.link.Stats()
	}
	m.redis = newRedisCounter(cfg.RedisAddr)
	m.calls0, m.redisOK = m.redis.calls(ctx)
	if cfg.DB != nil && !cfg.NoCheck {
		m.rows = newRowCounter(ctx, cfg.DB)
		m.before = m.rows.snapshot(ctx, "tag_counts", "tag_events", "taggings")
		m.status0 = serverStatus(ctx, cfg.DB)
	}
	return m
}

// stop adds to out what the meters measured, and the exactness check once
// the work still owed is done.
func (m *meters) stop(ctx context.Context, out *Result) {
	completed := out.Works.Completed
	out.Resources = m.res.stop(completed)
	if m.link != nil {
		out.DBLink = linkUse(m.link, m.cost, m.link0, m.link.Stats(), completed, out.Resources.CPUSeconds)
	}
	if calls, ok := m.redis.calls(ctx); ok && m.redisOK {
		out.Redis = redisWork(m.calls0, calls, completed)
	}
	m.redis.close()
	if m.db == nil {
		return
	}
	out.Server = serverWork(m.status0, serverStatus(ctx, m.db), completed)
	chk := checkCounts(ctx, m.db, m.wait)
	out.Check = &chk
	after := m.rows.snapshot(ctx, "tag_counts", "tag_events", "taggings")
	for _, t := range []string{"tag_counts", "tag_events"} {
		w := RowsWritten{Table: t, Source: m.rows.source}
		if m.before != nil && after != nil {
			w.Rows = after[t] - m.before[t]
			if completed > 0 {
				w.PerWork = round3(float64(w.Rows) / float64(completed))
			}
		} else {
			w.Rows = -1
		}
		out.Rows = append(out.Rows, w)
	}
}

// load starts works until the run's end, waits for the works under way to
// be posted (their follow-ups may still run), and returns when it stopped
// starting works.
func (r *run) load(ctx context.Context, start time.Time) time.Time {
	cfg := r.cfg
	lctx := ctx
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		lctx, cancel = context.WithDeadline(ctx, start.Add(cfg.Duration))
		defer cancel()
	}
	if cfg.Stop != nil {
		var cancel context.CancelFunc
		lctx, cancel = context.WithCancel(lctx)
		defer cancel()
		go func() {
			select {
			case <-cfg.Stop:
				cancel()
			case <-lctx.Done():
			}
		}()
	}
	lim := cfg.limiter()
	if lim != nil && (cfg.Profile == WeekendPeak || cfg.RateAt != nil) {
		go r.followProfile(lctx, lim, start)
	}
	var wg sync.WaitGroup
	switch {
	case cfg.ImportBatch > 0:
		r.loadImport(ctx, lctx)
	case cfg.OpenLoop:
		r.loadOpen(ctx, lctx, lim, &wg)
	default:
		r.loadClosed(ctx, lctx, lim, &wg)
	}
	<-waitCh(&wg, lctx)
	end := time.Now()
	r.stopped.Store(true)
	wg.Wait()
	return end
}

// followProfile sets lim to the profile's rate ten times a second until
// lctx ends.
func (r *run) followProfile(lctx context.Context, lim *rate.Limiter, start time.Time) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-lctx.Done():
			return
		case now := <-t.C:
			lim.SetLimit(rate.Limit(r.cfg.rateAt(now.Sub(start))))
		}
	}
}

// loadOpen starts a work at every arrival of lim until lctx ends, with at
// most Concurrency in flight; arrivals beyond are counted as missed. Works
// run under ctx, so those under way when the load stops finish.
func (r *run) loadOpen(ctx, lctx context.Context, lim *rate.Limiter, wg *sync.WaitGroup) {
	sem := make(chan struct{}, r.cfg.Concurrency)
	for slot := int64(0); r.cfg.Posts <= 0 || slot < r.cfg.Posts; slot++ {
		if err := lim.Wait(lctx); err != nil {
			return
		}
		select {
		case sem <- struct{}{}:
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				r.work(ctx, slot)
			}()
		default:
			r.rec.count(&r.rec.missedArrivals)
		}
	}
}

// loadClosed runs Concurrency authors, each starting its next work when
// the last one was posted (and lim allows), until lctx ends.
func (r *run) loadClosed(ctx, lctx context.Context, lim *rate.Limiter, wg *sync.WaitGroup) {
	c := int64(r.cfg.Concurrency)
	for w := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for slot := w; r.cfg.Posts <= 0 || slot < r.cfg.Posts; slot += c {
				if lctx.Err() != nil {
					return
				}
				if lim != nil && lim.Wait(lctx) != nil {
					return
				}
				r.work(ctx, slot)
			}
		}()
	}
}

// loadImport saves ImportBatch works, then posts them all, Concurrency
// requests in flight, batch after batch until Posts works or lctx ends.
func (r *run) loadImport(ctx, lctx context.Context) {
	batch := int64(r.cfg.ImportBatch)
	for first := int64(0); first < r.cfg.Posts && lctx.Err() == nil; first += batch {
		saved := make([]savedWork, min(batch, r.cfg.Posts-first))
		ok := make([]bool, len(saved))
		r.each(len(saved), func(i int) { saved[i], ok[i] = r.save(ctx, first+int64(i)) })
		if r.cfg.ImportReady != nil {
			r.cfg.ImportReady(int(first / batch))
		}
		r.each(len(saved), func(i int) {
			if ok[i] {
				r.post(ctx, saved[i])
			}
		})
	}
}

// each calls fn(0..n-1) with Concurrency calls at once, and returns when
// all returned.
func (r *run) each(n int, fn func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(r.cfg.Concurrency, n) {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
				fn(int(i))
			}
		})
	}
	wg.Wait()
}

// limiter returns the limiter of work starts, at the profile's rate at the
// start of the run, or nil when starts are not limited.
func (c *Config) limiter() *rate.Limiter {
	if c.Rate <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(c.rateAt(0)), max(1, int(c.Rate/100)))
}

// rateAt is the rate of work starts the profile asks for at elapsed into
// the run; without a duration the weekend peak repeats every minute.
func (c *Config) rateAt(elapsed time.Duration) float64 {
	if c.RateAt != nil {
		return c.RateAt(elapsed)
	}
	period := c.Duration
	if period <= 0 {
		period = time.Minute
	}
	return c.Rate * c.Profile.factor(elapsed, period)
}

// waitCh closes when wg is done or, whichever first, ctx ends.
func waitCh(wg *sync.WaitGroup, ctx context.Context) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
		}
		close(ch)
	}()
	return ch
}

// work runs one work slot as an author would: save a draft, edit it once,
// post it; then, without holding up the author, see it posted, watch its
// probe tag's count, and later edit or delete it.
func (r *run) work(ctx context.Context, slot int64) {
	if sw, ok := r.save(ctx, slot); ok {
		r.post(ctx, sw)
	}
}

// savedWork is a work slot saved as a draft, not yet posted.
type savedWork struct {
	w   Work
	tok string
	id  int64
}

// save starts work slot: saves its draft and edits it once. It reports
// false when the work failed on the way.
func (r *run) save(ctx context.Context, slot int64) (savedWork, bool) {
	r.started.Add(1)
	w := r.cfg.Workload.Work(slot)
	tok := r.token(w.AuthorID)
	create, err := httpapi.ContentBody(w.Draft)
	edit, editErr := httpapi.ContentBody(w.Posted)
	if err != nil || editErr != nil {
		r.failed.Add(1)
		return savedWork{}, false
	}
	var d draftResponse
	if _, err := r.c.do(ctx, OpSave, http.MethodPost, "/v1/drafts", tok, create, []int{http.StatusCreated, http.StatusOK}, &d); err != nil || d.ID <= 0 {
		r.failed.Add(1)
		return savedWork{}, false
	}
	r.created.Add(1)
	id := int64(d.ID)
	if _, err := r.c.do(ctx, OpSave, http.MethodPut, idPath("/v1/drafts/", id, ""), tok, edit, []int{http.StatusOK}, nil); err != nil {
		r.failed.Add(1)
		return savedWork{}, false
	}
	return savedWork{w: w, tok: tok, id: id}, true
}

// post posts a saved work and follows it up in the background.
func (r *run) post(ctx context.Context, sw savedWork) {
	postStart := time.Now()
	var p draftResponse
	if _, err := r.c.do(ctx, OpPost, http.MethodPost, idPath("/v1/drafts/", sw.id, "/post"), sw.tok, nil, []int{http.StatusAccepted, http.StatusCreated, http.StatusOK}, &p); err != nil {
		r.failed.Add(1)
		return
	}
	now := time.Now()
	r.rec.postAccepted(now)
	workID := int64(p.WorkID)
	if workID > 0 {
		r.rec.postCompleted(now, now.Sub(postStart), false)
	}
	r.follow.Add(1)
	go func() {
		defer r.follow.Done()
		r.followUp(sw.w, sw.tok, sw.id, workID, postStart)
	}()
}

func (r *run) followUp(w Work, tok string, draftID, workID int64, postStart time.Time) {
	ctx := r.fctx
	var probe sync.WaitGroup
	if w.Probe != "" {
		probe.Add(1)
		go func() {
			defer probe.Done()
			if !r.pollProbe(ctx, w.Probe, tok, postStart) {
				r.probeTO.Add(1)
			}
		}()
	}
	defer probe.Wait()
	if workID <= 0 {
		workID = r.pollPosted(ctx, tok, draftID, postStart)
		if workID <= 0 {
			r.notDone.Add(1)
			return
		}
	}
	if w.Later == LaterNone {
		return
	}
	if loop.Sleep(ctx, w.Delay) != nil {
		return
	}
	switch w.Later {
	case LaterEdit:
		body, err := httpapi.ContentBody(w.Edit)
		if err != nil {
			return
		}
		if _, err := r.c.do(ctx, OpWorkEdit, http.MethodPut, idPath("/v1/works/", workID, ""), tok, body, []int{http.StatusOK, http.StatusAccepted}, nil); err == nil {
			r.edited.Add(1)
		}
	case LaterDelete:
		if _, err := r.c.do(ctx, OpWorkDelete, http.MethodDelete, idPath("/v1/works/", workID, ""), tok, nil, []int{http.StatusNoContent, http.StatusAccepted, http.StatusOK}, nil); err == nil {
			r.deleted.Add(1)
		}
	}
}

// pollPosted waits until the draft is posted and returns its work id, or 0
// when it failed or the wait timed out.
func (r *run) pollPosted(ctx context.Context, tok string, draftID int64, postStart time.Time) int64 {
	deadline := postStart.Add(r.cfg.PollTimeout)
	if r.watcher != nil {
		ch := r.watcher.watch(draftID)
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		select {
		case id := <-ch:
			if id > 0 {
				now := time.Now()
				r.rec.postCompleted(now, now.Sub(postStart), true)
			}
			return id
		case <-t.C:
		case <-ctx.Done():
		}
		r.watcher.forget(draftID)
		return 0
	}
	path := idPath("/v1/drafts/", draftID, "")
	for wait := 5 * time.Millisecond; ; wait = min(wait*3/2, 250*time.Millisecond) {
		if loop.Sleep(ctx, wait) != nil || time.Now().After(deadline) {
			return 0
		}
		var d draftResponse
		if _, err := r.c.do(ctx, OpRead, http.MethodGet, path, tok, nil, []int{http.StatusOK}, &d); err != nil {
			continue
		}
		switch {
		case d.State == "posted" && d.WorkID > 0:
			now := time.Now()
			r.rec.postCompleted(now, now.Sub(postStart), true)
			return int64(d.WorkID)
		case d.State == "failed":
			return 0
		}
	}
}

// pollProbe polls, as the work's author (tok), the probe tag's count until
// it shows the work, and reports whether it did before the poll timeout.
func (r *run) pollProbe(ctx context.Context, name, tok string, postStart time.Time) bool {
	deadline := postStart.Add(r.cfg.PollTimeout)
	path := tagPath(name, tags.TypeFreeform)
	for wait := 10 * time.Millisecond; ; wait = min(wait*3/2, 200*time.Millisecond) {
		if loop.Sleep(ctx, wait) != nil || time.Now().After(deadline) {
			return false
		}
		var t tagResponse
		status, err := r.c.do(ctx, OpRead, http.MethodGet, path, tok, nil, []int{http.StatusOK, http.StatusNotFound}, &t)
		if err == nil && status == http.StatusOK && t.Count >= 1 {
			r.rec.countVisible(time.Since(postStart))
			return true
		}
	}
}
