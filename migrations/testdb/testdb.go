// Package testdb gives each test its own freshly migrated MariaDB database on
// the machine's server, dropped when the test ends, so tests run in parallel
// and never see each other's rows.
package testdb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/tagcount/tagcount/migrations"
)

// ServerDSN returns the DSN (without a database) of the server tests use:
// TAGCOUNT_TEST_MYSQL_DSN, or root on 127.0.0.1:3306.
func ServerDSN() string {
	if v := os.Getenv("TAGCOUNT_TEST_MYSQL_DSN"); v != "" {
		return v
	}
	return "root@tcp(127.0.0.1:3306)/?parseTime=true"
}

// pool is the pool of a test's database: at most 16 connections, as
// migrations.Open's, of which it keeps 4 idle. go test runs as many test
// binaries, and parallel tests in each, as the machine has cores, and all
// share one server: a test's idle connections count against its
// max_connections while other tests need theirs. A test that needs more
// at once sizes its own pool, and says why.
var pool = migrations.Pool{MaxOpen: migrations.DefaultMaxOpenConns, MaxIdle: 4}

// DB is a test's own database.
type DB struct {
	*migrations.DB
	Name string
	DSN  string // DSN of this database, for code that opens its own pool
}

// New creates a database named after the test, migrates it, and registers its
// removal. It fails the test (never skips) when MariaDB is unreachable.
func New(t testing.TB) *DB {
	t.Helper()
	ctx := context.Background()
	cfg, err := mysql.ParseDSN(ServerDSN())
	if err != nil {
		t.Fatalf("testdb: bad DSN: %v", err)
	}
	var b [4]byte
	rand.Read(b[:])
	name := "tc_" + sanitize(t.Name()) + "_" + hex.EncodeToString(b[:])
	cfg.DBName = name
	dsn := cfg.FormatDSN()
	if err := migrations.CreateDatabase(ctx, dsn); err != nil {
		t.Fatalf("testdb: %v", err)
	}
	db, err := migrations.Open(ctx, dsn)
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	db.SetPool(pool)
	t.Cleanup(func() {
		db.Exec("DROP DATABASE IF EXISTS `" + name + "`")
		db.Close()
	})
	if err := migrations.Up(ctx, db); err != nil {
		t.Fatalf("testdb: %v", err)
	}
	return &DB{DB: db, Name: name, DSN: dsn}
}

func sanitize(s string) string {
	var sb strings.Builder
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			sb.WriteRune(r)
		} else {
			sb.WriteByte('_')
		}
		if sb.Len() >= 40 {
			break
		}
	}
	return sb.String()
}

// MinWait is the shortest deadline WaitFor gives a condition. A deadline
// bounds how long a failing test takes, never how fast the code must be,
// and a machine busy with other work can be many times slower than a quiet
// one: the d a test names is what it expects, MinWait what it tolerates.
const MinWait = time.Minute

// WaitFor polls cond until it holds, failing the test with what when it does
// not hold within d (at least MinWait). It is how a test waits for
// something asynchronous to happen; it never stands in for a fixed sleep.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	d = max(d, MinWait)
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not a wait for an event
	}
}
