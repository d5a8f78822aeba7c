package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// runMigrateCmd runs `tagcount migrate` with args on dsn and returns its
// output and error.
func runMigrateCmd(dsn string, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), append([]string{"migrate", "--mysql-dsn", dsn}, args...), &stdout, &stderr)
	return stdout.String() + stderr.String(), err
}

// emptyDatabase names a database that does not exist yet, dropped when the
// test ends, and returns its DSN.
func emptyDatabase(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("tc_migrate_%s", randomHex(6))
	dsn, err := migrations.WithDatabase(testdb.ServerDSN(), name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if db, _ := sqlOpen(testdb.ServerDSN()); db != nil {
			db.Exec("DROP DATABASE IF EXISTS `" + name + "`")
			db.Close()
		}
	})
	return dsn
}

func TestEveryRoleRefusesToStartOnASchemaBehindItsMigrations(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	if out, err := runMigrateCmd(db.DSN, "--force", "down"); err != nil {
		t.Fatalf("migrate --force down: %v\n%s", err, out)
	}
	for _, role := range []string{"api", "worker", "counter"} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), []string{role, "--mysql-dsn", db.DSN, "--auth-secret", randomHex(32),
			"--kafka-brokers", "127.0.0.1:1", "--http-addr", "127.0.0.1:0", "--data-dir", t.TempDir()}, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), "behind this binary's migrations") || !strings.Contains(err.Error(), "migrate up") {
			t.Errorf("tagcount %s on a schema one migration behind: %v, want a refusal saying to run migrate up", role, err)
		}
	}
}

func TestAProcessWarnsOnASchemaAheadOfItsMigrations(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	_, latest, err := migrations.Versions(context.Background(), db.DB)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("INSERT INTO goose_db_version (version_id, is_applied) VALUES (?, 1)", latest+1); err != nil {
		t.Fatal(err)
	}
	var logs testdb.Buffer
	st, err := startStack(context.Background(), stackOptions{MySQLDSN: db.DSN, DataDir: t.TempDir(),
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("a schema ahead of the binary must not stop it: %v", err)
	}
	st.Close()
	if !strings.Contains(logs.String(), "ahead of this binary's migrations") {
		t.Fatalf("no warning about the schema ahead; logs:\n%s", logs.String())
	}
}

func TestMigrateDownAsksForForce(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	before, err := migrations.Version(context.Background(), db.DB)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := runMigrateCmd(db.DSN, "down"); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("migrate down without --force: %v\n%s, want a refusal naming --force", err, out)
	}
	if v, _ := migrations.Version(context.Background(), db.DB); v != before {
		t.Fatalf("refused migrate down changed the schema version from %d to %d", before, v)
	}
	// The flag is read after the verb too, as people type it.
	if out, err := runMigrateCmd(db.DSN, "down", "--force"); err != nil || !strings.Contains(out, fmt.Sprintf("schema version %d", before-1)) {
		t.Fatalf("migrate down --force: %v\n%s", err, out)
	}
}

func TestMigrateUpWaitsForTheMigrateLock(t *testing.T) {
	t.Parallel()
	dsn := emptyDatabase(t)
	if err := migrations.CreateDatabase(context.Background(), dsn); err != nil {
		t.Fatal(err)
	}
	holder, err := sqlOpen(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	conn, err := holder.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var got int
	if err := conn.QueryRowContext(context.Background(), "SELECT GET_LOCK("+migrateLock+", 0)").Scan(&got); err != nil || got != 1 {
		t.Fatalf("taking the migrate lock: %d %v", got, err)
	}
	out, err := runMigrateCmd(dsn, "--lock-timeout", "1s", "up")
	if err == nil || !strings.Contains(err.Error(), "another `tagcount migrate` is running") {
		t.Fatalf("migrate up while another holds the lock: %v\n%s, want a refusal", err, out)
	}
	if _, err := conn.ExecContext(context.Background(), "DO RELEASE_LOCK("+migrateLock+")"); err != nil {
		t.Fatal(err)
	}
	if out, err := runMigrateCmd(dsn, "up"); err != nil {
		t.Fatalf("migrate up once the lock is free: %v\n%s", err, out)
	}
}

func TestTwoMigrateUpsAtOnceBothSucceed(t *testing.T) {
	t.Parallel()
	dsn := emptyDatabase(t)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	outs := make([]string, 2)
	for i := range 2 {
		wg.Go(func() { outs[i], errs[i] = runMigrateCmd(dsn, "up") })
	}
	wg.Wait()
	db, err := migrations.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	current, latest, err := migrations.Versions(context.Background(), db)
	for i, e := range errs {
		if e != nil {
			t.Errorf("migrate up %d: %v\n%s", i, e, outs[i])
		}
	}
	if err != nil || current != latest {
		t.Fatalf("after two migrate ups: version %d of %d (%v)", current, latest, err)
	}
}
