package loadgen

import (
	"context"
	"runtime/metrics"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/tagcount/tagcount/migrations"
)

// Window collects what a run's requests saw since it was last taken: the
// Post and save latencies, completions, Post → small-tag count times, and
// 5xx answers other than a 503 with Retry-After. A nil Window records
// nothing. Safe for concurrent use.
type Window struct {
	mu                         sync.Mutex
	post, save, count          *hdrhistogram.Histogram
	completed, accepted, bad5x int64
}

// NewWindow returns an empty window.
func NewWindow() *Window {
	return &Window{post: newHist(), save: newHist(), count: newHist()}
}

func (w *Window) latency(op Op, us int64) {
	if w == nil || (op != OpPost && op != OpSave) {
		return
	}
	w.mu.Lock()
	if op == OpPost {
		w.post.RecordValue(us)
	} else {
		w.save.RecordValue(us)
	}
	w.mu.Unlock()
}

// status counts a 5xx that is not a 503 with Retry-After: the answers the
// API does not allow under load.
func (w *Window) status(code int, retryAfter bool) {
	if w == nil || code < 500 || (code == 503 && retryAfter) {
		return
	}
	w.mu.Lock()
	w.bad5x++
	w.mu.Unlock()
}

func (w *Window) accept() {
	if w != nil {
		w.mu.Lock()
		w.accepted++
		w.mu.Unlock()
	}
}

func (w *Window) complete() {
	if w != nil {
		w.mu.Lock()
		w.completed++
		w.mu.Unlock()
	}
}

func (w *Window) fresh(us int64) {
	if w != nil {
		w.mu.Lock()
		w.count.RecordValue(us)
		w.mu.Unlock()
	}
}

// windowTake is a window's contents, handed over by take.
type windowTake struct {
	post, save, count          *hdrhistogram.Histogram
	completed, accepted, bad5x int64
}

// take returns the window's contents and starts it afresh.
func (w *Window) take() windowTake {
	w.mu.Lock()
	defer w.mu.Unlock()
	t := windowTake{post: w.post, save: w.save, count: w.count, completed: w.completed, accepted: w.accepted, bad5x: w.bad5x}
	w.post, w.save, w.count = newHist(), newHist(), newHist()
	w.completed, w.accepted, w.bad5x = 0, 0, 0
	return t
}

// RowsBySource is database rows written per second, by who wrote them.
type RowsBySource struct {
	// Total is every row the service's database changed
	// (information_schema.TABLE_STATISTICS.ROWS_CHANGED summed over its
	// tables: MariaDB's user statistics).
	Total float64 `json:"total"`
	// Counter: tag_counts rows written and outbox rows applied (deleted),
	// from its metrics tagcount_tag_count_writes_total and
	// tagcount_events_applied_total.
	Counter float64 `json:"counter"`
	// Reconcile: two rows per correction (the tag_counts row and its
	// reconcile_corrections record), from
	// tagcount_reconcile_corrections_total.
	Reconcile float64 `json:"reconcile"`
	// Wrangling: tagcount_wrangle_rows_written_total.
	Wrangling float64 `json:"wrangling"`
	// Posting is the rest: Total less the three above — drafts, works,
	// taggings, filings, outbox inserts, the legacy path's tag_counts
	// writes, and the rollout's samples.
	Posting float64 `json:"posting"`
}

// GuardValue is one rollout guard as the plan last evaluated it.
type GuardValue struct {
	Name    string  `json:"name"`
	Value   float64 `json:"value"`
	Bound   float64 `json:"bound"`
	Unit    string  `json:"unit"`
	Samples int64   `json:"samples"`
	OK      bool    `json:"ok"`
}

// ServiceReading is what a scenario reads of its service at a sample: the
// cumulative rows its components wrote (RowsBySource's sources), the outbox,
// the reconcile, the rollout, and the scenario's phase.
type ServiceReading struct {
	CounterRows, ReconcileRows, WranglingRows float64
	Corrections                               float64 // applied so far
	OutboxRows                                int64
	OutboxAge                                 time.Duration
	ReconcileScanned, ReconcileTotal          int64
	RolloutPercent                            int
	RolloutState                              string
	Guards                                    []GuardValue
	Phase                                     string
}

// SeriesSample is one interval of a scenario's series (every 10 s by
// default): the authors' figures over the interval, the database's and the
// process's, and the service's state at its end.
type SeriesSample struct {
	T               float64      `json:"t_s"` // end of the interval, seconds since the series began
	Seconds         float64      `json:"interval_s"`
	Phase           string       `json:"phase"`
	PostsPerSec     float64      `json:"posts_per_s"` // completed
	AcceptedPerSec  float64      `json:"accepted_per_s"`
	PostP99Ms       float64      `json:"post_p99_ms"`
	SaveP99Ms       float64      `json:"save_p99_ms"`
	CountP99Ms      float64      `json:"post_to_small_tag_count_p99_ms"`
	PostRequests    int64        `json:"post_requests"`
	Other5xx        int64        `json:"other_5xx"` // not a 503 with Retry-After
	Rows            RowsBySource `json:"db_rows_written_per_s"`
	DBCores         float64      `json:"db_cpu_cores"` // -1: unknown
	ProcessCores    float64      `json:"process_cpu_cores"`
	OutboxRows      int64        `json:"outbox_rows"`
	OutboxAgeS      float64      `json:"outbox_oldest_age_s"`
	RSSMiB          float64      `json:"process_rss_mib"`
	HeapMiB         float64      `json:"go_heap_mib"`
	ReconcileDone   float64      `json:"reconcile_progress"` // tags scanned / tags at its start, 0..1
	CorrectionsPerS float64      `json:"corrections_per_s"`
	RolloutPercent  int          `json:"rollout_percent"`
	RolloutState    string       `json:"rollout_state,omitempty"`
	Guards          []GuardValue `json:"guards,omitempty"`
}

// SeriesConfig configures a SeriesSampler.
type SeriesConfig struct {
	Every  time.Duration  // default 10 s
	DB     *migrations.DB // the service's database: its rows changed
	Window *Window        // the run's Config.Window
	Probe  func(context.Context) ServiceReading
}

// SeriesSampler samples a scenario every interval until stopped.
type SeriesSampler struct {
	cfg    SeriesConfig
	cancel context.CancelFunc
	done   chan struct{}
	start  time.Time

	mu      sync.Mutex
	samples []SeriesSample
	// phases are each phase's latencies, merged as the samples come (a
	// histogram a sample would be megabytes over a long run).
	phases map[string]*phaseHists
	last   counters
	dbPID  int
}

// counters are the cumulative figures a sample is a difference of.
type counters struct {
	at                                       time.Time
	rows, counter, reconcile, wrangle, corrs float64
	db, cpu                                  float64
}

// StartSeries starts sampling; Stop takes the last sample and ends it.
func StartSeries(ctx context.Context, cfg SeriesConfig) *SeriesSampler {
	if cfg.Every <= 0 {
		cfg.Every = 10 * time.Second
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &SeriesSampler{cfg: cfg, cancel: cancel, done: make(chan struct{}), start: time.Now(), dbPID: findServer("mariadbd", "mysqld"),
		phases: map[string]*phaseHists{}}
	s.last = s.read(ctx, ServiceReading{})
	go func() {
		defer close(s.done)
		t := time.NewTicker(cfg.Every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.sample(ctx)
			}
		}
	}()
	return s
}

// read returns the cumulative counters now.
func (s *SeriesSampler) read(ctx context.Context, r ServiceReading) counters {
	return counters{at: time.Now(), rows: float64(tableRowsChanged(ctx, s.cfg.DB)), counter: r.CounterRows,
		reconcile: r.ReconcileRows, wrangle: r.WranglingRows, corrs: r.Corrections, db: procCPU(s.dbPID), cpu: processCPU()}
}

// sample records one interval.
func (s *SeriesSampler) sample(ctx context.Context) {
	r := s.cfg.Probe(ctx)
	now := s.read(ctx, r)
	w := s.cfg.Window.take()
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.last
	s.last = now
	secs := now.at.Sub(prev.at).Seconds()
	per := func(a, b float64) float64 { return round3(max(b-a, 0) / secs) }
	rows := RowsBySource{Total: per(prev.rows, now.rows), Counter: per(prev.counter, now.counter),
		Reconcile: per(prev.reconcile, now.reconcile), Wrangling: per(prev.wrangle, now.wrangle)}
	rows.Posting = round3(max(rows.Total-rows.Counter-rows.Reconcile-rows.Wrangling, 0))
	sm := SeriesSample{
		T: round3(now.at.Sub(s.start).Seconds()), Seconds: round3(secs), Phase: r.Phase,
		PostsPerSec: round3(float64(w.completed) / secs), AcceptedPerSec: round3(float64(w.accepted) / secs),
		PostP99Ms: p99Ms(w.post), SaveP99Ms: p99Ms(w.save), CountP99Ms: p99Ms(w.count), PostRequests: w.post.TotalCount(),
		Other5xx: w.bad5x, Rows: rows, DBCores: -1, ProcessCores: per(prev.cpu, now.cpu),
		OutboxRows: r.OutboxRows, OutboxAgeS: round3(r.OutboxAge.Seconds()), CorrectionsPerS: per(prev.corrs, now.corrs),
		RolloutPercent: r.RolloutPercent, RolloutState: r.RolloutState, Guards: r.Guards,
	}
	if now.db >= 0 && prev.db >= 0 {
		sm.DBCores = per(prev.db, now.db)
	}
	if r.ReconcileTotal > 0 {
		sm.ReconcileDone = round3(min(float64(r.ReconcileScanned)/float64(r.ReconcileTotal), 1))
	}
	sm.RSSMiB, sm.HeapMiB = memoryMiB()
	s.samples = append(s.samples, sm)
	ph := s.phases[sm.Phase]
	if ph == nil {
		ph = &phaseHists{post: newHist(), save: newHist()}
		s.phases[sm.Phase] = ph
	}
	ph.post.Merge(w.post)
	ph.save.Merge(w.save)
}

// phaseHists are one phase's Post and save latencies.
type phaseHists struct{ post, save *hdrhistogram.Histogram }

// Stop takes the last sample and returns the series.
func (s *SeriesSampler) Stop(ctx context.Context) *Series {
	s.cancel()
	<-s.done
	s.sample(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	return &Series{Samples: s.samples, phases: s.phases}
}

// Series is a scenario's samples.
type Series struct {
	Samples []SeriesSample
	phases  map[string]*phaseHists
}

// PhaseLatency is the Post and save p99 over the samples of some phases.
type PhaseLatency struct {
	PostP99Ms   float64 `json:"post_p99_ms"`
	SaveP99Ms   float64 `json:"save_p99_ms"`
	Posts       int64   `json:"post_requests"`
	RowsPerSec  float64 `json:"db_rows_written_per_s"` // mean over the phase
	PostsPerSec float64 `json:"posts_per_s"`           // mean completed posts per second
}

// Over returns the latencies and rows written over the samples whose
// phase in reports true, merged (not a mean of the samples' p99s).
func (s *Series) Over(in func(phase string) bool) PhaseLatency {
	post, save := newHist(), newHist()
	for phase, h := range s.phases {
		if in(phase) {
			post.Merge(h.post)
			save.Merge(h.save)
		}
	}
	var rows, posts, secs float64
	for _, sm := range s.Samples {
		if !in(sm.Phase) {
			continue
		}
		rows += sm.Rows.Total * sm.Seconds
		posts += sm.PostsPerSec * sm.Seconds
		secs += sm.Seconds
	}
	out := PhaseLatency{PostP99Ms: p99Ms(post), SaveP99Ms: p99Ms(save), Posts: post.TotalCount()}
	if secs > 0 {
		out.RowsPerSec, out.PostsPerSec = round3(rows/secs), round3(posts/secs)
	}
	return out
}

func p99Ms(h *hdrhistogram.Histogram) float64 {
	if h.TotalCount() == 0 {
		return 0
	}
	return round3(float64(h.ValueAtQuantile(99)) / 1000)
}

// memoryMiB returns this process's RSS and its Go heap objects, in MiB.
func memoryMiB() (rss, heap float64) {
	ms := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(ms)
	if ms[0].Value.Kind() == metrics.KindUint64 {
		heap = float64(ms[0].Value.Uint64()) / (1 << 20)
	}
	return round3(float64(procStatusBytes("VmRSS:")) / (1 << 20)), round3(heap)
}

// tableRowsChanged is the rows changed in every table of db's database so
// far, from MariaDB's user statistics (0 when unavailable).
func tableRowsChanged(ctx context.Context, db *migrations.DB) int64 {
	if db == nil {
		return 0
	}
	var n int64
	db.QueryRowContext(ctx, `SELECT CAST(COALESCE(SUM(ROWS_CHANGED), 0) AS SIGNED) FROM information_schema.TABLE_STATISTICS
		WHERE TABLE_SCHEMA = DATABASE()`).Scan(&n)
	return n
}
