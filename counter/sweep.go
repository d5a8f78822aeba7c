package counter

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/loop"
)

// Defaults of SweeperConfig.
const (
	// DefaultSweepAfter is the age past which an outbox row's announcement
	// counts as lost. With DefaultSweepInterval it makes the recovery
	// budget: a lost announcement is counted within about 10 s.
	DefaultSweepAfter    = 7 * time.Second
	DefaultSweepInterval = 2 * time.Second
	// DefaultFullSweepEvery is how often the sweeper looks at every old
	// row again, not only those that crossed the age since the last sweep:
	// the last resort for an announcement lost twice.
	DefaultFullSweepEvery = time.Minute
)

// SyncAnnouncer announces events and says whether the broker took them.
type SyncAnnouncer interface {
	AnnounceSync(ctx context.Context, events []Event) error
}

// SweeperConfig configures a Sweeper. DB and Announcer are required; every
// other zero field takes its default (WithDefaults).
type SweeperConfig struct {
	DB        *migrations.DB
	Announcer SyncAnnouncer
	// After is the age (by the database clock) past which a row whose tag
	// was not flushed is announced again (default DefaultSweepAfter).
	After time.Duration
	// Interval is the time between sweeps (default DefaultSweepInterval).
	Interval time.Duration
	// FullEvery is how often a sweep looks at every old row (default
	// DefaultFullSweepEvery).
	FullEvery time.Duration
	// Logger defaults to slog.Default(); a nil Registerer registers nothing.
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// WithDefaults returns c with every zero (or negative) duration and a nil
// Logger set to its default: the one place SweeperConfig's defaults are
// applied.
func (c SweeperConfig) WithDefaults() SweeperConfig {
	c.After = loop.OrDefault(c.After, DefaultSweepAfter)
	c.Interval = loop.OrDefault(c.Interval, DefaultSweepInterval)
	c.FullEvery = loop.OrDefault(c.FullEvery, DefaultFullSweepEvery)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c
}

func (c SweeperConfig) validate() error {
	if c.DB == nil || c.Announcer == nil {
		return errors.New("counter: SweeperConfig needs a DB and an Announcer")
	}
	return nil
}

// Sweeper announces again the tags whose outbox rows have waited past the
// recovery budget: a publish that failed, the messages a killed worker had
// buffered, a message lost on the way. It announces one event per tag (the
// counter flushes every row of a tag it is told of), dated by the tag's
// oldest row, so a deferred tag's flush stays due when it was due. Each
// sweep looks at the rows that crossed the age since the last successful
// sweep; every FullEvery it looks at all old rows. It also reports the
// outbox depth and oldest age. Several sweepers (one per instance) are
// safe: a duplicate announcement adds nothing.
type Sweeper struct {
	cfg SweeperConfig
	log *slog.Logger

	// since is the database time up to which rows were announced by the
	// last successful sweep; zero: look at every old row.
	since    time.Time
	lastFull time.Time

	reannounced prometheus.Counter
	depth       prometheus.Gauge
	oldestAge   prometheus.Gauge
	sweepErrors prometheus.Counter
}

// NewSweeper returns a Sweeper for cfg with its defaults, or an error when
// cfg.DB or cfg.Announcer is missing.
func NewSweeper(cfg SweeperConfig) (*Sweeper, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Sweeper{
		cfg:         cfg,
		log:         cfg.Logger.With("component", "sweeper"),
		reannounced: metricCounter(cfg.Registerer, "tagcount_events_reannounced_total", "Tags announced again by the sweeper because their outbox rows waited past the recovery budget."),
		depth:       metricGauge(cfg.Registerer, "tagcount_outbox_depth", "Rows in the tag_events outbox at the last sweep."),
		oldestAge:   metricGauge(cfg.Registerer, "tagcount_outbox_oldest_age_seconds", "Age of the oldest tag_events outbox row at the last sweep (0 when empty)."),
		sweepErrors: metricCounter(cfg.Registerer, "tagcount_sweep_errors_total", "Sweeps that failed on a database or broker error."),
	}, nil
}

// Run sweeps every Interval until ctx is done, then returns nil. A failed
// sweep is logged and counted, and the next one tries the same rows again.
func (s *Sweeper) Run(ctx context.Context) error {
	if s.cfg.DB == nil || s.cfg.Announcer == nil {
		return errors.New("counter: sweeper needs a DB and an Announcer")
	}
	return loop.Every(ctx, s.cfg.Interval, func(ctx context.Context) {
		if _, err := s.SweepOnce(ctx); err != nil && ctx.Err() == nil {
			s.sweepErrors.Inc()
			s.log.Warn("outbox sweep failed", "err", err)
		}
	})
}

// SweepOnce announces again every tag with outbox rows older than After
// that it has not looked at yet (or, on a full sweep, every such tag), and
// updates the outbox gauges. It returns the number of tags announced and the
// first database or broker error; after an error the next sweep looks at the
// same rows again.
func (s *Sweeper) SweepOnce(ctx context.Context) (int, error) {
	if err := s.measure(ctx); err != nil {
		return 0, err
	}
	var cutoff time.Time
	if err := s.cfg.DB.QueryRowContext(ctx, "SELECT NOW(6) - INTERVAL ? MICROSECOND", s.cfg.After.Microseconds()).Scan(&cutoff); err != nil {
		return 0, fmt.Errorf("counter: sweep: %w", err)
	}
	since := s.since
	if time.Since(s.lastFull) >= s.cfg.FullEvery {
		since = time.Time{}
	}
	events, err := staleTags(ctx, s.cfg.DB, since, cutoff)
	if err != nil {
		return 0, fmt.Errorf("counter: sweep: %w", err)
	}
	if len(events) > 0 {
		if err := s.cfg.Announcer.AnnounceSync(ctx, events); err != nil {
			return 0, fmt.Errorf("counter: sweep: announce %d tags: %w", len(events), err)
		}
		s.reannounced.Add(float64(len(events)))
		s.log.Info("announced tags whose outbox rows waited past the recovery budget", "tags", len(events), "older_than", s.cfg.After)
	}
	if since.IsZero() {
		s.lastFull = time.Now()
	}
	s.since = cutoff
	return len(events), nil
}

// staleTags returns, for each tag with outbox rows created in [since,
// cutoff), an event naming its newest such row, dated by its oldest.
func staleTags(ctx context.Context, q migrations.Querier, since, cutoff time.Time) ([]Event, error) {
	return migrations.Collect(ctx, q, func(rows *sql.Rows) (e Event, err error) {
		err = rows.Scan(&e.TagID, &e.ID, &e.Time)
		return e, err
	}, `SELECT tag_id, MAX(id), MIN(created_at) FROM tag_events
		WHERE created_at >= ? AND created_at < ? GROUP BY tag_id`, since, cutoff)
}

// measure updates the outbox depth and oldest-age gauges.
func (s *Sweeper) measure(ctx context.Context) error {
	var depth int64
	var ageUS *int64
	err := s.cfg.DB.QueryRowContext(ctx,
		"SELECT COUNT(*), TIMESTAMPDIFF(MICROSECOND, MIN(created_at), NOW(6)) FROM tag_events").Scan(&depth, &ageUS)
	if err != nil {
		return fmt.Errorf("counter: measure outbox: %w", err)
	}
	s.depth.Set(float64(depth))
	s.oldestAge.Set(0)
	if ageUS != nil && *ageUS > 0 {
		s.oldestAge.Set(float64(*ageUS) / 1e6)
	}
	return nil
}
