package loadgen

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/reconcile"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/loop"
	"github.com/tagcount/tagcount/poster"
)

// RowsWritten counts rows a run changed in a table, from the database's own
// counters.
type RowsWritten struct {
	Table   string  `json:"table"`
	Rows    int64   `json:"rows"`
	PerWork float64 `json:"per_posted_work"`
	// Source says which counters: "mariadb userstat", "performance_schema",
	// or "unavailable: why".
	Source string `json:"source"`
}

// rowCounter reads a table's cumulative changed-row counter.
type rowCounter struct {
	db     *migrations.DB
	schema string
	source string
	query  string // reads one table's counter, given schema and table; "" when unavailable
}

// newRowCounter picks the counters the server has: MariaDB's user
// statistics (switched on here) or MySQL's performance_schema.
func newRowCounter(ctx context.Context, db *migrations.DB) *rowCounter {
	rc := &rowCounter{db: db}
	if err := db.QueryRowContext(ctx, "SELECT DATABASE()").Scan(&rc.schema); err != nil {
		rc.source = "unavailable: " + err.Error()
		return rc
	}
	if db.MariaDB {
		if _, err := db.ExecContext(ctx, "SET GLOBAL userstat = 1"); err != nil {
			rc.source = "unavailable: SET GLOBAL userstat=1: " + err.Error()
			return rc
		}
		rc.source = "mariadb userstat (information_schema.TABLE_STATISTICS.ROWS_CHANGED)"
		rc.query = "SELECT ROWS_CHANGED FROM information_schema.TABLE_STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?"
		return rc
	}
	rc.source = "performance_schema.table_io_waits_summary_by_table"
	rc.query = "SELECT COUNT_INSERT + COUNT_UPDATE + COUNT_DELETE FROM performance_schema.table_io_waits_summary_by_table WHERE OBJECT_SCHEMA = ? AND OBJECT_NAME = ?"
	if _, err := rc.read(ctx, "tag_counts"); err != nil {
		rc.source = "unavailable: " + err.Error()
		rc.query = ""
	}
	return rc
}

// read returns table's counter; a table the server has no row for yet
// counts 0.
func (rc *rowCounter) read(ctx context.Context, table string) (int64, error) {
	var n sql.NullInt64
	err := rc.db.QueryRowContext(ctx, rc.query, rc.schema, table).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return n.Int64, err
}

// snapshot reads the counters of tables; nil when unavailable.
func (rc *rowCounter) snapshot(ctx context.Context, tables ...string) map[string]int64 {
	if rc == nil || rc.query == "" {
		return nil
	}
	m := make(map[string]int64, len(tables))
	for _, t := range tables {
		n, err := rc.read(ctx, t)
		if err != nil {
			rc.source = "unavailable: " + err.Error()
			return nil
		}
		m[t] = n
	}
	return m
}

// Check is the end-of-run exactness check.
type Check struct {
	// Exact: for every tag, COUNT(taggings of posted works) =
	// tag_counts.count + SUM(pending tag_events.delta), in one snapshot.
	Exact     bool  `json:"exact"`
	WrongTags int   `json:"wrong_tags"`
	Tags      int   `json:"tags_compared"`
	Works     int64 `json:"works"`
	// Stale counts tags whose stored count alone differs from the
	// independent count (their deltas wait in the outbox).
	StaleTags int `json:"stale_tags"`
	// OutboxPending is the number of tag_events rows left; OutboxPendingSmall
	// those of small tags, which the design flushes every batch.
	OutboxPending      int64      `json:"outbox_pending_rows"`
	OutboxPendingSmall int64      `json:"outbox_pending_small_tag_rows"`
	OutboxDrained      bool       `json:"outbox_drained"`
	QueuedDrafts       int64      `json:"queued_drafts"`
	WaitedSeconds      float64    `json:"waited_s"`
	Examples           []WrongTag `json:"examples,omitempty"`
	Error              string     `json:"error,omitempty"`
}

// WrongTag is a tag that breaks conservation.
type WrongTag struct {
	TagID       int64 `json:"tag_id"`
	Independent int64 `json:"independent"`
	Count       int64 `json:"count"`
	Pending     int64 `json:"pending"`
	PublicDrift int64 `json:"public_drift,omitempty"`
}

// waitOutbox waits up to wait for the work still owed to be done: queued
// drafts (posts, and the new path's edits and deletes, not yet applied) and
// the outbox — all of it, or at least the small tags' rows when deferred
// tags hold theirs. It returns the pending outbox rows, total and of small
// tags.
func waitOutbox(ctx context.Context, db *migrations.DB, wait time.Duration) (total, small int64, waited time.Duration, err error) {
	start := time.Now()
	store := &drafts.Store{DB: db}
	for {
		var queued int64
		if queued, err = store.CountQueued(ctx); err != nil {
			return
		}
		if total, small, err = counter.OutboxDepth(ctx, db, counter.DefaultTiers().MediumFrom); err != nil {
			return
		}
		waited = time.Since(start)
		if (total == 0 && queued == 0) || waited >= wait {
			return
		}
		// Deferred tags may hold rows for minutes: once only they are left,
		// a short grace is enough.
		if queued == 0 && small == 0 && waited >= min(wait, 3*time.Second) {
			return
		}
		if err = loop.Sleep(ctx, 200*time.Millisecond); err != nil {
			return
		}
	}
}

// CheckCounts is the exactness check of a run, for runs that share a
// service (Config.NoCheck): it waits up to outboxWait for the queued
// drafts and the outbox to drain, then compares every tag's count with
// the independent count.
func CheckCounts(ctx context.Context, db *migrations.DB, outboxWait time.Duration) Check {
	return checkCounts(ctx, db, outboxWait)
}

// checkCounts compares every tag's count with the independent count (the
// reconcile's conservation snapshot) once the outbox has drained.
func checkCounts(ctx context.Context, db *migrations.DB, outboxWait time.Duration) Check {
	var c Check
	pending, small, waited, err := waitOutbox(ctx, db, outboxWait)
	c.WaitedSeconds = round3(waited.Seconds())
	if err != nil {
		c.Error = err.Error()
		return c
	}
	c.OutboxPending, c.OutboxPendingSmall, c.OutboxDrained = pending, small, pending == 0
	if err := c.compare(ctx, db); err != nil {
		c.Error = err.Error()
	}
	return c
}

func (c *Check) compare(ctx context.Context, db *migrations.DB) error {
	err := reconcile.Walk(ctx, db, func(st reconcile.TagState) {
		if st.Works.IsZero() && st.Stored.IsZero() && st.Pending.IsZero() {
			return // a tag no posted work uses: nothing to compare
		}
		c.Tags++
		if !st.Drift().IsZero() {
			c.WrongTags++
			if len(c.Examples) < 10 {
				c.Examples = append(c.Examples, WrongTag{TagID: st.TagID, Independent: st.Works.Count, Count: st.Stored.Count,
					Pending: st.Pending.Count, PublicDrift: st.Drift().Public})
			}
		}
		if st.Works != st.Stored {
			c.StaleTags++
		}
	})
	if err != nil {
		return err
	}
	if c.Works, err = poster.CountWorks(ctx, db); err != nil {
		return err
	}
	if c.QueuedDrafts, err = (&drafts.Store{DB: db}).CountQueued(ctx); err != nil {
		return err
	}
	c.Exact = c.WrongTags == 0
	return nil
}

// ServerWork is what the database server did during a run, from its global
// status counters. They count the whole server: other clients' work shows
// up too.
type ServerWork struct {
	Statements      int64   `json:"statements"`          // Questions
	Commits         int64   `json:"commits"`             // Com_commit
	Prepares        int64   `json:"prepared_statements"` // Com_stmt_prepare: server-side prepares
	Fsyncs          int64   `json:"innodb_data_fsyncs"`
	RowLockWaits    int64   `json:"innodb_row_lock_waits"`
	StatementsPerWk float64 `json:"statements_per_posted_work"`
	PreparesPerWk   float64 `json:"prepares_per_posted_work"`
	FsyncsPerWk     float64 `json:"fsyncs_per_posted_work"`
}

var serverStatusVars = []string{"Questions", "Com_commit", "Com_stmt_prepare", "Innodb_data_fsyncs", "Innodb_row_lock_waits"}

// serverStatus reads the global status counters of serverStatusVars.
func serverStatus(ctx context.Context, db *migrations.DB) map[string]int64 {
	rows, err := db.QueryContext(ctx, "SHOW GLOBAL STATUS WHERE Variable_name IN ('"+strings.Join(serverStatusVars, "','")+"')")
	if err != nil {
		return nil
	}
	defer rows.Close()
	m := map[string]int64{}
	for rows.Next() {
		var k string
		var v int64
		if rows.Scan(&k, &v) == nil {
			m[k] = v
		}
	}
	return m
}

func serverWork(before, after map[string]int64, works int64) *ServerWork {
	if before == nil || after == nil {
		return nil
	}
	d := func(k string) int64 { return after[k] - before[k] }
	w := &ServerWork{Statements: d("Questions"), Commits: d("Com_commit"), Prepares: d("Com_stmt_prepare"),
		Fsyncs: d("Innodb_data_fsyncs"), RowLockWaits: d("Innodb_row_lock_waits")}
	if works > 0 {
		w.StatementsPerWk = round3(float64(w.Statements) / float64(works))
		w.PreparesPerWk = round3(float64(w.Prepares) / float64(works))
		w.FsyncsPerWk = round3(float64(w.Fsyncs) / float64(works))
	}
	return w
}
