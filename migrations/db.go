package migrations

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/go-sql-driver/mysql"
)

// DefaultDSN is the DSN of the machine's local MariaDB used by `tagcount dev`
// and the tests.
const DefaultDSN = "root@tcp(127.0.0.1:3306)/tagcount?parseTime=true"

// Open opens a pool on dsn with the settings every tagcount process needs
// (parseTime, UTC, client-side interpolation) and pings it. The returned error
// names the address and how to start MariaDB when the server is unreachable.
func Open(ctx context.Context, dsn string) (*sql.DB, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("bad MySQL DSN: %w", err)
	}
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	// Interpolate arguments client-side: a server-side prepared statement
	// costs three round trips (prepare, execute, close) and a parse for every
	// query, which dominated the posting path's database time. Safe with the
	// utf8mb4 connection charset; the driver refuses it for unsafe charsets.
	cfg.InterpolateParams = true
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	// Every session reads and writes UTC, whatever the server's zone.
	cfg.Params["time_zone"] = "'+00:00'"
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("bad MySQL DSN: %w", err)
	}
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(64)
	db.SetMaxIdleConns(64)
	db.SetConnMaxLifetime(30 * time.Minute)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("MySQL at %s is unreachable (%w); start it (e.g. `start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd`) or set TAGCOUNT_MYSQL_DSN", cfg.Addr, err)
	}
	return db, nil
}

// CreateDatabase creates the database named in dsn if it does not exist,
// connecting without a database first.
func CreateDatabase(ctx context.Context, dsn string) error {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return fmt.Errorf("bad MySQL DSN: %w", err)
	}
	name := cfg.DBName
	if name == "" {
		return fmt.Errorf("MySQL DSN %q names no database", dsn)
	}
	cfg.DBName = ""
	db, err := Open(ctx, cfg.FormatDSN())
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.ExecContext(ctx, "CREATE DATABASE IF NOT EXISTS `"+name+"` CHARACTER SET utf8mb4")
	return err
}
