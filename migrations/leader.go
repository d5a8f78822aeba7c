package migrations

import (
	"context"
	"database/sql"
)

// Leader holds a server-wide advisory lock (GET_LOCK) on a connection of
// its own, so that one process of many does a job: the count stream's
// publisher, the rollout runner. The lock goes with the session, so a
// holder that dies frees it for the next one to take. A Leader is for one
// goroutine.
type Leader struct {
	db   *DB
	lock string // an SQL expression naming the lock
	conn *sql.Conn
}

// NewLeader returns a Leader of the lock the SQL expression lockExpr names
// (lock names are server-wide: give it a digest of the database). It holds
// nothing until Held takes the lock.
func NewLeader(db *DB, lockExpr string) *Leader {
	return &Leader{db: db, lock: lockExpr}
}

// Held reports whether this Leader holds the lock now: it checks that the
// session holding it is alive and, when it holds nothing, tries once to
// take the lock without waiting. taken is true only on the call that took
// the lock.
func (l *Leader) Held(ctx context.Context) (held, taken bool) {
	if l.conn != nil && l.conn.PingContext(ctx) != nil {
		l.Close() // the lock went with the session
	}
	if l.conn != nil {
		return true, false
	}
	conn, err := l.db.Conn(ctx)
	if err != nil {
		return false, false
	}
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK("+l.lock+", 0)").Scan(&got); err != nil || got.Int64 != 1 {
		conn.Close()
		return false, false
	}
	l.conn = conn
	return true, true
}

// Close gives up the lock, closing the connection that holds it.
func (l *Leader) Close() {
	if l.conn != nil {
		l.conn.Close()
		l.conn = nil
	}
}
