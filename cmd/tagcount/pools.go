package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/poster"
)

// The default pool sizes of each role (docs/operations.md, "Connection
// budget"). Two replicas of every role take 2·(16+8 + 10+8 + 6) = 96
// connections at most, leaving 55 of MariaDB's default max_connections (151)
// for migrations, operators, monitoring and a third replica during a
// rolling deploy.
const (
	// apiMainConns is the API's main pool: its requests' reads and
	// moderation writes. It is also the API's database slots
	// (httpapi.Edge.DBSlots): requests past it wait for a slot. The
	// rollout runner holds one for its lock and uses one more for a round,
	// the rollout samples' recorder one for a moment every 200 ms.
	apiMainConns = 16
	// workerMainConns is the worker's main pool: legacy-path posting jobs
	// (which queue for it), the reconcile (three connections while it
	// runs), the sweeper and the requeuer.
	workerMainConns = 10
	// counterMainConns is the counter's pool: the consumer and the count
	// stream (one connection holds its lock) use at most three at once.
	counterMainConns = 6
	// writesConns is the API's pool for authors' draft writes, each a
	// statement and its COMMIT.
	writesConns = 8
	// jobsConns is the worker's pool for posting jobs: one connection per
	// group committer, one per running wrangling job (it holds its lock),
	// and the requeuer's and failed-post marking's.
	jobsConns = poster.DefaultCommitters + 5
	// reconcileReadConns is the pool on --reconcile-read-dsn (a replica):
	// a run reads its snapshots on one connection.
	reconcileReadConns = 2
)

// poolSettings are the sizes of a process's MySQL pools. A zero size takes
// the default of the roles the process runs (the largest of them when it
// runs several, as dev does); zero idle settings take
// migrations.DefaultPool's.
type poolSettings struct {
	Main          int // every role's pool
	Writes        int // the API's pool for authors' draft writes
	Jobs          int // the worker's pool for posting and wrangling jobs
	ReconcileRead int // the pool on --reconcile-read-dsn
	MaxIdle       int // idle connections kept per pool; 0 = the pool's size
	MaxIdleTime   time.Duration
	MaxLifetime   time.Duration
}

func (p *poolSettings) register(fs *flag.FlagSet) {
	fs.IntVar(&p.Main, "mysql-max-conns", 0, fmt.Sprintf("connections of the main MySQL pool; 0 = the role's default (api %d, worker %d, counter %d; dev the largest); the API's database slots", apiMainConns, workerMainConns, counterMainConns))
	fs.IntVar(&p.Writes, "mysql-writes-max-conns", writesConns, "connections of the API's pool for authors' draft writes")
	fs.IntVar(&p.Jobs, "mysql-jobs-max-conns", jobsConns, "connections of the worker's pool for posting and wrangling jobs")
	fs.IntVar(&p.ReconcileRead, "reconcile-read-max-conns", reconcileReadConns, "connections of the pool on --reconcile-read-dsn")
	fs.IntVar(&p.MaxIdle, "mysql-max-idle-conns", 0, "idle connections each pool keeps for reuse; 0 = up to the pool's size")
	fs.DurationVar(&p.MaxIdleTime, "mysql-conn-max-idle-time", migrations.DefaultPool.MaxIdleTime, "an idle connection is closed after this long")
	fs.DurationVar(&p.MaxLifetime, "mysql-conn-max-lifetime", migrations.DefaultPool.MaxLifetime, "a connection is closed when next idle after this long")
}

// validate refuses negative sizes, naming the flag.
func (p *poolSettings) validate() error {
	for _, f := range []struct {
		name string
		n    int
	}{{"--mysql-max-conns", p.Main}, {"--mysql-writes-max-conns", p.Writes}, {"--mysql-jobs-max-conns", p.Jobs},
		{"--reconcile-read-max-conns", p.ReconcileRead}, {"--mysql-max-idle-conns", p.MaxIdle}} {
		if f.n < 0 {
			return fmt.Errorf("%s must be 0 (the default) or more, not %d", f.name, f.n)
		}
	}
	if p.MaxIdleTime < 0 || p.MaxLifetime < 0 {
		return fmt.Errorf("--mysql-conn-max-idle-time and --mysql-conn-max-lifetime must not be negative")
	}
	return nil
}

// withDefaults fills the zero sizes for a process running the roles o
// names.
func (p poolSettings) withDefaults(o stackOptions) poolSettings {
	if p.Main <= 0 {
		p.Main = counterMainConns
		if o.Worker {
			p.Main = workerMainConns
		}
		if o.API {
			p.Main = apiMainConns
		}
	}
	if p.Writes <= 0 {
		p.Writes = writesConns
	}
	if p.Jobs <= 0 {
		p.Jobs = jobsConns
	}
	if p.ReconcileRead <= 0 {
		p.ReconcileRead = reconcileReadConns
	}
	return p
}

// pool is the migrations.Pool of a pool of size connections.
func (p poolSettings) pool(size int) migrations.Pool {
	return migrations.Pool{MaxOpen: size, MaxIdle: p.MaxIdle, MaxIdleTime: p.MaxIdleTime, MaxLifetime: p.MaxLifetime}
}

// openPool opens a pool of size connections on dsn (manual-commit sessions
// when manual is set), closed with the stack, and exports its statistics
// as go_sql_* metrics labelled db_name=name.
func (s *stack) openPool(ctx context.Context, name, dsn string, size int, manual bool) (*migrations.DB, error) {
	open := migrations.Open
	if manual {
		open = migrations.OpenManualCommit
	}
	db, err := open(ctx, dsn)
	if err != nil {
		return nil, err
	}
	db.SetPool(s.opts.Pools.pool(size))
	s.closers = append(s.closers, db.Close)
	if err := s.Registry.Register(collectors.NewDBStatsCollector(db.DB, name)); err != nil {
		return nil, fmt.Errorf("pool metrics of %s: %w", name, err)
	}
	return db, nil
}
