package migrations_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// manualCommit returns a one-connection manual-commit pool on db, so every
// call reuses the connection the previous one left behind.
func manualCommit(t *testing.T, db *testdb.DB) *migrations.DB {
	t.Helper()
	w, err := migrations.OpenManualCommit(context.Background(), db.DSN)
	if err != nil {
		t.Fatal(err)
	}
	w.SetMaxOpenConns(1)
	t.Cleanup(func() { w.Close() })
	return w
}

func countTags(t *testing.T, db *testdb.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM tags").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestExecCommittedSavesAWriteAndAFailedOneLeavesNothingOpen(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	w := manualCommit(t, db)
	ctx := context.Background()
	insert := "INSERT INTO tags (type, name, name_key) VALUES (?, ?, ?), (?, ?, ?)"
	if _, err := w.ExecCommitted(ctx, insert, "fandom", "A", "a", "fandom", "B", "b"); err != nil {
		t.Fatal(err)
	}
	if n := countTags(t, db); n != 2 {
		t.Fatalf("tags seen from another pool after a committed write: %d; want 2", n)
	}
	// The second row collides: the statement fails and its first row must
	// not be committed by whatever the connection runs next.
	if _, err := w.ExecCommitted(ctx, insert, "fandom", "C", "c", "fandom", "A", "a"); err == nil {
		t.Fatal("a duplicate key was accepted")
	}
	// Nor may its locks outlive it while the connection idles in the pool.
	other, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	other.ExecContext(ctx, "SET SESSION innodb_lock_wait_timeout = 5")
	if _, err := other.ExecContext(ctx, "UPDATE tags SET name = 'A2' WHERE type = 'fandom' AND name_key = 'a'"); err != nil {
		t.Fatalf("updating the row a failed write collided with: %v; want no lock left behind", err)
	}
	if _, err := w.ExecCommitted(ctx, "INSERT INTO tags (type, name, name_key) VALUES ('fandom', 'D', 'd')"); err != nil {
		t.Fatal(err)
	}
	var c int
	db.QueryRow("SELECT COUNT(*) FROM tags WHERE name_key = 'c'").Scan(&c)
	if n := countTags(t, db); n != 3 || c != 0 {
		t.Fatalf("after a failed write and a good one: %d tags, %d of the failed write's; want 3 and 0", n, c)
	}
}

func TestExecCommittedAbandonedAtItsDeadlineSavesNothing(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	w := manualCommit(t, db)
	lock, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if _, err := lock.ExecContext(context.Background(), "LOCK TABLES tags WRITE"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = w.ExecCommitted(ctx, "INSERT INTO tags (type, name, name_key) VALUES ('fandom', 'Late', 'late')")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a write stuck behind a table lock past its deadline: %v; want the deadline's error", err)
	}
	if _, err := lock.ExecContext(context.Background(), "UNLOCK TABLES"); err != nil {
		t.Fatal(err)
	}
	// The server ran the abandoned statement once the lock went; with no
	// COMMIT it must have been rolled back with its connection.
	testdb.WaitFor(t, 30*time.Second, "the abandoned insert to end", func() bool {
		var n int
		db.QueryRow("SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE 'INSERT INTO tags%'").Scan(&n)
		return n == 0
	})
	if n := countTags(t, db); n != 0 {
		t.Fatalf("tags after a write abandoned at its deadline: %d; want 0", n)
	}
	if _, err := w.ExecCommitted(context.Background(), "INSERT INTO tags (type, name, name_key) VALUES ('fandom', 'Next', 'next')"); err != nil {
		t.Fatalf("the pool after an abandoned write: %v", err)
	}
}

func TestExecCommittedRefusesAPoolWithAutocommit(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	if _, err := db.ExecCommitted(context.Background(), "DO 1"); err == nil {
		t.Fatal("ExecCommitted on an autocommit pool succeeded")
	}
}

func TestCommitGivesUpAtItsDeadlineWhenTheServerHangs(t *testing.T) {
	t.Parallel()
	srv := testdb.StartServer(t)
	ctx := context.Background()
	db := srv.Open("tagcount")
	if _, err := db.ExecContext(ctx, "CREATE TABLE t (id INT PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	tctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	tx, err := db.BeginTx(tctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(tctx, "INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	// The server stops answering before the COMMIT: only the deadline can
	// end it (tx.Commit alone waits for the driver's read timeout).
	srv.Pause()
	err = migrations.Commit(tctx, tx)
	srv.Resume()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a COMMIT to a hung server: %v; want the deadline's error", err)
	}
}
