package reconcile_test

// Builders and a simulated archive for the reconcile tests: posts, edits and
// deletes on both paths, and an outbox applier that works like the counter.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// reconcileArchive is one test's database plus the work ids it has posted.
type reconcileArchive struct {
	t     testing.TB
	db    *testdb.DB
	draft atomic.Int64

	mu    sync.Mutex
	works []int64 // posted works, for edits and deletes to pick from
}

func newReconcileArchive(t testing.TB) *reconcileArchive {
	t.Helper()
	return &reconcileArchive{t: t, db: testdb.New(t)}
}

// newSettledReconcileArchive returns a new archive with n freeform tags
// (ascending ids) and posts works on them, settled: every count right and
// nothing pending.
func newSettledReconcileArchive(t testing.TB, n, posts int) (*reconcileArchive, []int64) {
	t.Helper()
	a := newReconcileArchive(t)
	tags := a.tags(n, "freeform")
	a.settle(context.Background(), posts, tags)
	return a, tags
}

// tags creates n tags of type typ and returns their ids in ascending order.
func (a *reconcileArchive) tags(n int, typ string) []int64 {
	a.t.Helper()
	ids := make([]int64, 0, n)
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("%s %d %d", typ, i, rand.Int64())
		res, err := a.db.Exec("INSERT INTO tags (type, name, name_key) VALUES (?, ?, ?)", typ, name, strings.ToLower(name))
		if err != nil {
			a.t.Fatalf("insert tag: %v", err)
		}
		id, _ := res.LastInsertId()
		ids = append(ids, id)
	}
	return ids
}

// reconcileRetry runs fn in a transaction at isolation iso, again while it
// fails with a deadlock or lock-wait timeout (which roll it back whole).
func reconcileRetry(ctx context.Context, db *migrations.DB, iso sql.IsolationLevel, fn func(tx *sql.Tx) error) error {
	for attempt := 1; ; attempt++ {
		tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: iso})
		if err != nil {
			return err
		}
		err = fn(tx)
		if err == nil {
			err = tx.Commit()
		} else {
			tx.Rollback()
		}
		var me *mysql.MySQLError
		if err != nil && attempt < 50 && errors.As(err, &me) && (me.Number == 1213 || me.Number == 1205) {
			continue
		}
		return err
	}
}

var errReconcileGone = errors.New("work gone")

// post posts a work using tags. New path: the work, its taggings and one
// +1 outbox row per tag in one transaction. Legacy path: the work, its
// taggings and +1 on each tag_counts row (ascending tag order) in one
// transaction.
func (a *reconcileArchive) post(ctx context.Context, legacy bool, tags []int64) (int64, error) {
	tags = slices.Clone(tags)
	slices.Sort(tags)
	tags = slices.Compact(tags)
	draft := a.draft.Add(1)
	var work int64
	err := reconcileRetry(ctx, a.db.DB, sql.LevelRepeatableRead, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "INSERT INTO works (draft_id, author_id, title, body, version) VALUES (?, ?, 'a work', 'text', 1)", draft, draft%97+1)
		if err != nil {
			return err
		}
		work, _ = res.LastInsertId()
		var tg, ev strings.Builder
		for i, tag := range tags {
			if i > 0 {
				tg.WriteByte(',')
				ev.WriteByte(',')
			}
			fmt.Fprintf(&tg, "(%d,%d,%d)", work, tag, i)
			fmt.Fprintf(&ev, "(%d,1,%d)", tag, work)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO taggings (work_id, tag_id, position) VALUES "+tg.String()); err != nil {
			return err
		}
		if legacy {
			return reconcileBump(ctx, tx, map[int64]int64{}, tags, 1)
		}
		_, err = tx.ExecContext(ctx, "INSERT INTO tag_events (tag_id, delta, work_id) VALUES "+ev.String())
		return err
	})
	if err != nil {
		return 0, err
	}
	a.mu.Lock()
	a.works = append(a.works, work)
	a.mu.Unlock()
	return work, nil
}

// reconcileBump adds delta to each tag's tag_counts row (legacy path), in
// ascending tag order, plus extra per-tag deltas.
func reconcileBump(ctx context.Context, tx *sql.Tx, deltas map[int64]int64, tags []int64, delta int64) error {
	for _, tag := range tags {
		deltas[tag] += delta
	}
	keys := make([]int64, 0, len(deltas))
	for k, d := range deltas {
		if d != 0 {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, tag := range keys {
		if _, err := tx.ExecContext(ctx, "INSERT INTO tag_counts (tag_id, count) VALUES (?, ?) ON DUPLICATE KEY UPDATE count = count + ?",
			tag, deltas[tag], deltas[tag]); err != nil {
			return err
		}
	}
	return nil
}

func (a *reconcileArchive) randomWork() (int64, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.works) == 0 {
		return 0, false
	}
	return a.works[rand.IntN(len(a.works))], true
}

func (a *reconcileArchive) forget(work int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if i := slices.Index(a.works, work); i >= 0 {
		a.works[i] = a.works[len(a.works)-1]
		a.works = a.works[:len(a.works)-1]
	}
}

// edit replaces one of the work's tags among candidates by another candidate
// it does not have: -1 for the old tag, +1 for the new, as outbox rows or as
// count bumps.
func (a *reconcileArchive) edit(ctx context.Context, legacy bool, work int64, candidates []int64) error {
	return reconcileRetry(ctx, a.db.DB, sql.LevelRepeatableRead, func(tx *sql.Tx) error {
		have, err := reconcileLockWork(ctx, tx, work)
		if err != nil {
			return err
		}
		var removable, addable []int64
		for _, c := range candidates {
			if slices.Contains(have, c) {
				removable = append(removable, c)
			} else {
				addable = append(addable, c)
			}
		}
		if len(removable) == 0 || len(addable) == 0 {
			return nil
		}
		old, nu := removable[rand.IntN(len(removable))], addable[rand.IntN(len(addable))]
		if _, err := tx.ExecContext(ctx, "DELETE FROM taggings WHERE work_id = ? AND tag_id = ?", work, old); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO taggings (work_id, tag_id, position) VALUES (?, ?, 99)", work, nu); err != nil {
			return err
		}
		if legacy {
			return reconcileBump(ctx, tx, map[int64]int64{old: -1, nu: 1}, nil, 0)
		}
		_, err = tx.ExecContext(ctx, "INSERT INTO tag_events (tag_id, delta, work_id) VALUES (?, -1, ?), (?, 1, ?)", old, work, nu, work)
		return err
	})
}

// remove deletes a posted work: its taggings go and each tag gets -1.
func (a *reconcileArchive) remove(ctx context.Context, legacy bool, work int64) error {
	err := reconcileRetry(ctx, a.db.DB, sql.LevelRepeatableRead, func(tx *sql.Tx) error {
		have, err := reconcileLockWork(ctx, tx, work)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM taggings WHERE work_id = ?", work); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM works WHERE id = ?", work); err != nil {
			return err
		}
		if legacy {
			return reconcileBump(ctx, tx, map[int64]int64{}, have, -1)
		}
		for _, tag := range have {
			if _, err := tx.ExecContext(ctx, "INSERT INTO tag_events (tag_id, delta, work_id) VALUES (?, -1, ?)", tag, work); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		a.forget(work)
	}
	return err
}

// reconcileLockWork locks a posted work's row and returns its tags in
// ascending order, or errReconcileGone if the work has been deleted.
func reconcileLockWork(ctx context.Context, tx *sql.Tx, work int64) ([]int64, error) {
	var id int64
	if err := tx.QueryRowContext(ctx, "SELECT id FROM works WHERE id = ? FOR UPDATE", work).Scan(&id); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, errReconcileGone
		}
		return nil, err
	}
	rows, err := tx.QueryContext(ctx, "SELECT tag_id FROM taggings WHERE work_id = ? ORDER BY tag_id", work)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var tags []int64
	for rows.Next() {
		var t int64
		if err := rows.Scan(&t); err != nil {
			return nil, err
		}
		tags = append(tags, t)
	}
	return tags, rows.Err()
}

// applyOutbox applies up to limit outbox rows the way the counter does: at
// READ COMMITTED, lock the rows by id (FOR UPDATE), add their deltas to
// tag_counts in ascending tag order, delete them, commit. skip, if set,
// defers the tags it returns true for (the counter's deferred tiers). It
// returns the number of rows applied.
func (a *reconcileArchive) applyOutbox(ctx context.Context, limit int, skip func(tag int64) bool) (int, error) {
	rows, err := a.db.QueryContext(ctx, "SELECT id, tag_id FROM tag_events ORDER BY id LIMIT ?", limit)
	if err != nil {
		return 0, err
	}
	var ids []string
	for rows.Next() {
		var id, tag int64
		if err := rows.Scan(&id, &tag); err != nil {
			rows.Close()
			return 0, err
		}
		if skip == nil || !skip(tag) {
			ids = append(ids, strconv.FormatInt(id, 10))
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if len(ids) == 0 {
		return 0, nil
	}
	var applied int
	err = reconcileRetry(ctx, a.db.DB, sql.LevelReadCommitted, func(tx *sql.Tx) error {
		applied = 0
		list := strings.Join(ids, ",")
		rows, err := tx.QueryContext(ctx, "SELECT id, tag_id, delta FROM tag_events WHERE id IN ("+list+") FOR UPDATE")
		if err != nil {
			return err
		}
		sums := map[int64]int64{}
		var found []string
		for rows.Next() {
			var id, tag, delta int64
			if err := rows.Scan(&id, &tag, &delta); err != nil {
				rows.Close()
				return err
			}
			sums[tag] += delta
			found = append(found, strconv.FormatInt(id, 10))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(found) == 0 {
			return nil
		}
		if err := reconcileBump(ctx, tx, sums, nil, 0); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM tag_events WHERE id IN ("+strings.Join(found, ",")+")"); err != nil {
			return err
		}
		applied = len(found)
		return nil
	})
	return applied, err
}

// drain applies the whole outbox.
func (a *reconcileArchive) drain(ctx context.Context) {
	a.t.Helper()
	for {
		n, err := a.applyOutbox(ctx, 1000, nil)
		if err != nil {
			a.t.Fatalf("drain outbox: %v", err)
		}
		if n == 0 {
			var left int
			if err := a.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM tag_events").Scan(&left); err != nil {
				a.t.Fatalf("count outbox: %v", err)
			}
			if left == 0 {
				return
			}
		}
	}
}

// trueCounts is the independent count: posted works per tag, for every tag.
func (a *reconcileArchive) trueCounts() map[int64]int64 {
	a.t.Helper()
	return a.countMap(`SELECT t.id, (SELECT COUNT(*) FROM taggings tg JOIN works w ON w.id = tg.work_id WHERE tg.tag_id = t.id) FROM tags t`)
}

// storedCounts is tag_counts.count for every tag, 0 without a row.
func (a *reconcileArchive) storedCounts() map[int64]int64 {
	a.t.Helper()
	return a.countMap(`SELECT t.id, COALESCE(c.count, 0) FROM tags t LEFT JOIN tag_counts c ON c.tag_id = t.id`)
}

func (a *reconcileArchive) countMap(q string) map[int64]int64 {
	a.t.Helper()
	rows, err := a.db.Query(q)
	if err != nil {
		a.t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	m := map[int64]int64{}
	for rows.Next() {
		var id, n int64
		if err := rows.Scan(&id, &n); err != nil {
			a.t.Fatal(err)
		}
		m[id] = n
	}
	if err := rows.Err(); err != nil {
		a.t.Fatal(err)
	}
	return m
}

// settle posts works on the new path and drains the outbox, so every count
// is right and nothing is pending.
func (a *reconcileArchive) settle(ctx context.Context, posts int, tags []int64) {
	a.t.Helper()
	for i := 0; i < posts; i++ {
		pick := []int64{tags[i%len(tags)], tags[(i*7+3)%len(tags)]}
		if _, err := a.post(ctx, i%3 == 0, pick); err != nil {
			a.t.Fatalf("post: %v", err)
		}
	}
	a.drain(ctx)
}

// tagCountsSnapshot returns every tag_counts row as text, to compare before
// and after something that must not write.
func (a *reconcileArchive) tagCountsSnapshot() string {
	a.t.Helper()
	rows, err := a.db.Query("SELECT tag_id, count, updated_at FROM tag_counts ORDER BY tag_id")
	if err != nil {
		a.t.Fatal(err)
	}
	defer rows.Close()
	var sb strings.Builder
	for rows.Next() {
		var id, n int64
		var at time.Time
		if err := rows.Scan(&id, &n, &at); err != nil {
			a.t.Fatal(err)
		}
		fmt.Fprintf(&sb, "%d=%d@%s\n", id, n, at.Format(time.RFC3339Nano))
	}
	return sb.String()
}

// correctionStamps returns, in order, the updated_at of every tag_counts row
// written since since: when the database applied each correction.
func (a *reconcileArchive) correctionStamps(since time.Time) []time.Time {
	a.t.Helper()
	rows, err := a.db.Query("SELECT updated_at FROM tag_counts WHERE updated_at >= ? ORDER BY updated_at", since)
	if err != nil {
		a.t.Fatal(err)
	}
	defer rows.Close()
	var stamps []time.Time
	for rows.Next() {
		var at time.Time
		if err := rows.Scan(&at); err != nil {
			a.t.Fatal(err)
		}
		stamps = append(stamps, at)
	}
	return stamps
}

// shift adds delta to a tag's stored count: an injected drift of -delta.
func (a *reconcileArchive) shift(tag, delta int64) {
	a.t.Helper()
	if _, err := a.db.Exec("INSERT INTO tag_counts (tag_id, count) VALUES (?, ?) ON DUPLICATE KEY UPDATE count = count + ?", tag, delta, delta); err != nil {
		a.t.Fatalf("inject drift: %v", err)
	}
}

// reconcileEventually polls cond until it holds or the deadline passes.
func reconcileEventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
