// Package migrations holds tagcount's versioned schema and applies it.
//
// The SQL lives in sql/ as goose migrations (up and down in one file) and is
// embedded in the binary, so `tagcount migrate` and `tagcount dev` need no
// files on disk. The schema runs on MariaDB >= 10.6 and MySQL 8.
package migrations

import (
	"context"
	"embed"
	"fmt"
	"io/fs"

	"github.com/pressly/goose/v3"
)

//go:embed sql/*.sql
var files embed.FS

func provider(db *DB) (*goose.Provider, error) {
	sub, err := fs.Sub(files, "sql")
	if err != nil {
		return nil, err
	}
	return goose.NewProvider(goose.DialectMySQL, db.DB, sub)
}

// Up applies every migration not yet applied. It returns an error naming the
// migration that failed.
func Up(ctx context.Context, db *DB) error {
	return migrate(db, "up", func(p *goose.Provider) error {
		_, err := p.Up(ctx)
		return err
	})
}

// Down rolls back the most recent migration.
func Down(ctx context.Context, db *DB) error {
	return migrate(db, "down", func(p *goose.Provider) error {
		_, err := p.Down(ctx)
		return err
	})
}

// migrate runs step (named by what in its error) on db's provider.
func migrate(db *DB, what string, step func(*goose.Provider) error) error {
	p, err := provider(db)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	if err := step(p); err != nil {
		return fmt.Errorf("migrations: %s: %w", what, err)
	}
	return nil
}

// Version returns the current schema version (0 for an empty database).
func Version(ctx context.Context, db *DB) (int64, error) {
	p, err := provider(db)
	if err != nil {
		return 0, fmt.Errorf("migrations: %w", err)
	}
	return p.GetDBVersion(ctx)
}

// Versions returns the database's schema version (0 for an empty database)
// and the version of the newest migration embedded in the binary, so a
// process can tell whether the database is behind or ahead of it.
func Versions(ctx context.Context, db *DB) (current, latest int64, err error) {
	p, err := provider(db)
	if err != nil {
		return 0, 0, fmt.Errorf("migrations: %w", err)
	}
	if current, err = p.GetDBVersion(ctx); err != nil {
		return 0, 0, fmt.Errorf("migrations: schema version: %w", err)
	}
	sources := p.ListSources()
	if len(sources) == 0 {
		return current, 0, nil
	}
	return current, sources[len(sources)-1].Version, nil
}
