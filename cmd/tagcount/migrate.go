package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"time"

	"github.com/tagcount/tagcount/migrations"
)

// migrateOptions are `tagcount migrate`'s own flags.
type migrateOptions struct {
	Create bool
	// Force confirms `migrate down`, which drops what the newest migration
	// made (columns, tables, their rows).
	Force bool
	// LockTimeout is how long `up` and `down` wait for another migrate to
	// finish before giving up.
	LockTimeout time.Duration
}

// defaultMigrateLockTimeout is longer than any migration of ours takes, so
// a second `migrate up` (two Jobs, a Job and a person) waits for the first
// and then finds nothing to do.
const defaultMigrateLockTimeout = 5 * time.Minute

func (m *migrateOptions) register(fs *flag.FlagSet) {
	fs.BoolVar(&m.Create, "create", true, "create the database if it does not exist")
	fs.BoolVar(&m.Force, "force", false, "confirm `migrate down`, which rolls back the newest migration and what it holds")
	fs.DurationVar(&m.LockTimeout, "lock-timeout", defaultMigrateLockTimeout, "how long up and down wait for another migrate to finish")
}

// errDownNeedsForce is what `migrate down` without --force returns.
var errDownNeedsForce = errors.New("migrate down rolls back the newest migration and drops what it holds: run `tagcount migrate --force down` to confirm")

// migrate runs `tagcount migrate [up|down|version]`. Up and down hold a
// database lock (GET_LOCK, one per database) while they run, so two cannot
// run at once; down refuses to run without --force.
func migrate(ctx context.Context, dsn string, m migrateOptions, args []string, stdout io.Writer) error {
	verb := "up"
	if len(args) > 0 {
		verb = args[0]
	}
	if len(args) > 1 {
		// `migrate down --force`: flags after the verb are read too.
		fs := flag.NewFlagSet("tagcount migrate "+verb, flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		m.register(fs)
		if err := fs.Parse(args[1:]); err != nil || fs.NArg() > 0 {
			return fmt.Errorf("migrate %s: unexpected arguments %q", verb, args[1:])
		}
	}
	var step func(context.Context, *migrations.DB) error
	switch verb {
	case "up":
		step = migrations.Up
	case "down":
		if !m.Force {
			return errDownNeedsForce
		}
		step = migrations.Down
	case "version":
	default:
		return fmt.Errorf("migrate: unknown verb %q (up, down, version)", verb)
	}
	db, err := openCreating(ctx, dsn, m.Create && verb == "up")
	if err != nil {
		return err
	}
	defer db.Close()
	if step != nil {
		if err := withMigrateLock(ctx, db, m.LockTimeout, func() error { return step(ctx, db) }); err != nil {
			return err
		}
	}
	v, err := migrations.Version(ctx, db)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "schema version %d\n", v)
	return nil
}

// migrateLock names the lock of the connection's database: GET_LOCK is
// server-wide, and databases on one server migrate independently.
const migrateLock = "CONCAT('tagcount.migrate.', DATABASE())"

// withMigrateLock runs fn holding the database's migrate lock, waiting up
// to wait for it. It returns an error saying another migrate holds the lock
// when wait passes. The lock is the session's, so it goes with the
// connection if this process dies.
func withMigrateLock(ctx context.Context, db *migrations.DB, wait time.Duration, fn func() error) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("migrate lock: %w", err)
	}
	defer conn.Close()
	var got sql.NullInt64
	// GET_LOCK waits in whole seconds on MySQL.
	secs := int64(math.Ceil(wait.Seconds()))
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK("+migrateLock+", ?)", secs).Scan(&got); err != nil {
		return fmt.Errorf("migrate lock: %w", err)
	}
	if got.Int64 != 1 {
		return fmt.Errorf("another `tagcount migrate` is running on this database (it holds the migrate lock); waited %v (--lock-timeout)", wait)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "DO RELEASE_LOCK("+migrateLock+")")
	return fn()
}

// checkSchema compares the database's schema version with the binary's
// migrations. It returns an error when the database is behind (the binary
// would use tables or columns that are not there yet), and logs a warning
// when it is ahead (the binary was rolled back after a newer release
// migrated: whether it still works depends on what those migrations
// changed, which the warning leaves to the operator).
func checkSchema(ctx context.Context, db *migrations.DB, log *slog.Logger) error {
	current, latest, err := migrations.Versions(ctx, db)
	if err != nil {
		return err
	}
	switch {
	case current < latest:
		return fmt.Errorf("the database schema is at version %d, behind this binary's migrations (%d): run `tagcount migrate up` (the migrate Job) first", current, latest)
	case current > latest:
		log.Warn("the database schema is ahead of this binary's migrations; a newer release migrated it", "schema_version", current, "binary_version", latest)
	}
	return nil
}

// openCreating opens dsn's database, creating it first when create is set;
// it returns the creation's or the open's error.
func openCreating(ctx context.Context, dsn string, create bool) (*migrations.DB, error) {
	if create {
		if err := migrations.CreateDatabase(ctx, dsn); err != nil {
			return nil, err
		}
	}
	return migrations.Open(ctx, dsn)
}
