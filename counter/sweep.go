package counter

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tagcount/tagcount/migrations"
)

// SweeperConfig configures a Sweeper.
type SweeperConfig struct {
	DB        *migrations.DB
	Announcer Announcer
	// OlderThan is the age (by the database clock) past which an outbox row
	// is re-announced. It must exceed the longest deferral of a tag, the
	// medium tier's maximum interval plus jitter (default 45 min).
	OlderThan time.Duration
	// Interval is the time between sweeps (default 1 min).
	Interval time.Duration
	// ChunkSize is the number of rows read per statement (default 1,000).
	ChunkSize int
	// Rate caps re-announced events per second (default 10,000), so a
	// backlog after an outage does not flood Kafka and the counter.
	Rate       float64
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Sweeper re-announces outbox rows that have waited too long, which is how
// a lost message, a publish that failed, or a deferred event whose writer
// crashed after committing its offset still gets counted. It also reports
// the outbox depth and oldest age. Several sweepers (one per instance) are
// safe: a duplicate announcement adds nothing.
type Sweeper struct {
	cfg SweeperConfig
	log *slog.Logger

	reannounced prometheus.Counter
	depth       prometheus.Gauge
	oldestAge   prometheus.Gauge
	sweepErrors prometheus.Counter
}

// NewSweeper returns a Sweeper; cfg.DB and cfg.Announcer are required.
func NewSweeper(cfg SweeperConfig) *Sweeper {
	if cfg.OlderThan <= 0 {
		cfg.OlderThan = 45 * time.Minute
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = 1000
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 10_000
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Sweeper{
		cfg:         cfg,
		log:         log.With("component", "sweeper"),
		reannounced: metricCounter(cfg.Registerer, "tagcount_events_reannounced_total", "Outbox rows re-announced by the sweeper."),
		depth:       metricGauge(cfg.Registerer, "tagcount_outbox_depth", "Rows in the tag_events outbox at the last sweep."),
		oldestAge:   metricGauge(cfg.Registerer, "tagcount_outbox_oldest_age_seconds", "Age of the oldest tag_events outbox row at the last sweep (0 when empty)."),
		sweepErrors: metricCounter(cfg.Registerer, "tagcount_sweep_errors_total", "Sweeps that failed on a database error."),
	}
}

// Run sweeps every Interval until ctx is done, then returns nil. A failed
// sweep is logged and counted, and the next one tries again.
func (s *Sweeper) Run(ctx context.Context) error {
	if s.cfg.DB == nil || s.cfg.Announcer == nil {
		return errors.New("counter: sweeper needs a DB and an Announcer")
	}
	return Every(ctx, s.cfg.Interval, func(ctx context.Context) {
		if _, err := s.SweepOnce(ctx); err != nil && ctx.Err() == nil {
			s.sweepErrors.Inc()
			s.log.Warn("outbox sweep failed", "err", err)
		}
	})
}

// SweepOnce re-announces every outbox row older than OlderThan, in primary
// key order, ChunkSize rows per statement, at most Rate per second, and
// updates the outbox gauges. It returns the number of events re-announced
// and the first database error or ctx's error.
func (s *Sweeper) SweepOnce(ctx context.Context) (int, error) {
	if err := s.measure(ctx); err != nil {
		return 0, err
	}
	olderUS := s.cfg.OlderThan.Microseconds()
	// Bound the primary-key walk by the newest old row (found on the
	// created_at index), so a large outbox of young rows, such as the held
	// events of deferred tags, is not scanned.
	var maxID sql.NullInt64
	err := s.cfg.DB.QueryRowContext(ctx,
		"SELECT MAX(id) FROM tag_events WHERE created_at < NOW(6) - INTERVAL ? MICROSECOND", olderUS).Scan(&maxID)
	if err != nil {
		return 0, fmt.Errorf("counter: sweep: %w", err)
	}
	if !maxID.Valid {
		return 0, nil
	}
	var after int64
	total := 0
	for {
		start := time.Now()
		rows, err := s.cfg.DB.QueryContext(ctx,
			`SELECT id, tag_id, delta FROM tag_events
			 WHERE id > ? AND id <= ? AND created_at < NOW(6) - INTERVAL ? MICROSECOND
			 ORDER BY id LIMIT ?`, after, maxID.Int64, olderUS, s.cfg.ChunkSize)
		if err != nil {
			return total, fmt.Errorf("counter: sweep: %w", err)
		}
		events := make([]Event, 0, s.cfg.ChunkSize)
		for rows.Next() {
			var e Event
			if err := rows.Scan(&e.ID, &e.TagID, &e.Delta); err != nil {
				rows.Close()
				return total, fmt.Errorf("counter: sweep: %w", err)
			}
			events = append(events, e)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return total, fmt.Errorf("counter: sweep: %w", err)
		}
		if len(events) == 0 {
			break
		}
		after = events[len(events)-1].ID
		s.cfg.Announcer.Announce(ctx, events)
		s.reannounced.Add(float64(len(events)))
		total += len(events)
		if len(events) < s.cfg.ChunkSize || after >= maxID.Int64 {
			break
		}
		// Pace to Rate events per second.
		wait := time.Duration(float64(len(events))/s.cfg.Rate*float64(time.Second)) - time.Since(start)
		if wait > 0 {
			if err := Sleep(ctx, wait); err != nil {
				return total, err
			}
		}
	}
	if total > 0 {
		s.log.Info("re-announced outbox rows", "events", total, "older_than", s.cfg.OlderThan)
	}
	return total, nil
}

// measure updates the outbox depth and oldest-age gauges.
func (s *Sweeper) measure(ctx context.Context) error {
	var depth int64
	var ageUS sql.NullInt64
	err := s.cfg.DB.QueryRowContext(ctx,
		"SELECT COUNT(*), TIMESTAMPDIFF(MICROSECOND, MIN(created_at), NOW(6)) FROM tag_events").Scan(&depth, &ageUS)
	if err != nil {
		return fmt.Errorf("counter: measure outbox: %w", err)
	}
	s.depth.Set(float64(depth))
	if ageUS.Valid && ageUS.Int64 > 0 {
		s.oldestAge.Set(float64(ageUS.Int64) / 1e6)
	} else {
		s.oldestAge.Set(0)
	}
	return nil
}
