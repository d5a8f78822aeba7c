package rollout

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/tagcount/tagcount/migrations"
)

// Defaults of RecorderConfig.
const (
	DefaultFlushEvery = 200 * time.Millisecond
	DefaultBuffer     = 50_000
)

// RecorderConfig configures a Recorder. DB is required; every other zero
// field takes its default (WithDefaults).
type RecorderConfig struct {
	DB         *migrations.DB
	FlushEvery time.Duration // default DefaultFlushEvery
	// Buffer bounds the samples held between flushes; past it samples are
	// dropped (the guards then see fewer, never wrong ones).
	Buffer int
	Logger *slog.Logger
}

// Recorder writes Post samples to rollout_samples in batches, off the
// Post's own path: a Post never waits for it, and a sample lost in a crash
// only leaves the guards one sample short.
type Recorder struct {
	cfg     RecorderConfig
	log     *slog.Logger
	mu      sync.Mutex
	pending []sample
	dropped int64
}

type sample struct {
	path    string
	ok      bool
	draftID int64
	at      time.Time
	took    time.Duration
}

// WithDefaults returns c with its zero FlushEvery, Buffer and Logger set to
// their defaults: the one place RecorderConfig's defaults are applied.
func (c RecorderConfig) WithDefaults() RecorderConfig {
	c.FlushEvery = cmp.Or(c.FlushEvery, DefaultFlushEvery)
	c.Buffer = cmp.Or(c.Buffer, DefaultBuffer)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c
}

// NewRecorder returns a Recorder for cfg with its defaults (Run writes what
// it records), or an error when cfg.DB is missing.
func NewRecorder(cfg RecorderConfig) (*Recorder, error) {
	cfg = cfg.WithDefaults()
	if cfg.DB == nil {
		return nil, errors.New("rollout: RecorderConfig needs a DB")
	}
	return &Recorder{cfg: cfg, log: cfg.Logger.With("component", "rollout")}, nil
}

// ObservePost records a Post of draftID on path ("legacy" or "new")
// answered after took, failed when err is not nil. It never blocks on I/O.
func (r *Recorder) ObservePost(_ context.Context, draftID int64, path string, start time.Time, took time.Duration, err error) {
	if path != "legacy" && path != "new" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.pending) >= r.cfg.Buffer {
		r.dropped++
		return
	}
	r.pending = append(r.pending, sample{path: path, ok: err == nil, draftID: draftID, at: start, took: took})
}

// Run writes the recorded samples every FlushEvery until ctx ends, then
// once more, and returns nil.
func (r *Recorder) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.FlushEvery)
	defer t.Stop()
	prune := time.NewTicker(time.Minute)
	defer prune.Stop()
	for {
		select {
		case <-prune.C:
			if err := r.Prune(ctx, time.Now().Add(-SampleRetention)); err != nil && ctx.Err() == nil {
				r.log.Warn("old rollout samples not deleted; the next minute tries again", "err", err)
			}
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			r.Flush(fctx)
			return nil
		case <-t.C:
			r.Flush(ctx)
		}
	}
}

// Prune deletes up to 5,000 samples of Posts made before cutoff. It
// returns the database's error.
func (r *Recorder) Prune(ctx context.Context, cutoff time.Time) error {
	old, err := migrations.Collect(ctx, r.cfg.DB, migrations.ScanInt64, "SELECT id FROM rollout_samples WHERE requested_at < ? LIMIT 5000", cutoff)
	if err != nil || len(old) == 0 {
		return err
	}
	_, err = r.cfg.DB.ExecContext(ctx, migrations.IDList("DELETE FROM rollout_samples WHERE id IN (", old, ")"))
	return err
}

// Flush writes the samples recorded so far; on an error they are dropped
// and the error logged.
func (r *Recorder) Flush(ctx context.Context) {
	r.mu.Lock()
	batch, dropped := r.pending, r.dropped
	r.pending, r.dropped = nil, 0
	r.mu.Unlock()
	if dropped > 0 {
		r.log.Warn("rollout samples dropped: the buffer was full", "dropped", dropped)
	}
	for len(batch) > 0 {
		n := min(len(batch), 1000)
		args := make([]any, 0, 5*n)
		for _, s := range batch[:n] {
			args = append(args, s.path, s.ok, s.draftID, s.at.UTC(), s.took.Microseconds())
		}
		if _, err := migrations.InsertRows(ctx, r.cfg.DB, "INSERT INTO rollout_samples (path, ok, draft_id, requested_at, answer_us) VALUES ",
			"(?, ?, ?, ?, ?)", n, args...); err != nil {
			r.log.Warn("rollout samples not written", "samples", n, "err", err)
		}
		batch = batch[n:]
	}
}
