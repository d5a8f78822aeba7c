package counter

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/tagcount/tagcount/migrations"
)

// The statements below are the counter's side of the conservation identity
// (docs/design.md invariant 5): the stored count and the pending outbox deltas of
// a range of tags. The reconcile reads them, with the posted works' side,
// inside one consistent snapshot (q is that snapshot's connection).

// TagIDs returns up to limit tag ids greater than after, ascending.
func TagIDs(ctx context.Context, q migrations.Querier, after int64, limit int) ([]int64, error) {
	rows, err := q.QueryContext(ctx, "SELECT id FROM tags WHERE id > ? ORDER BY id LIMIT ?", after, limit)
	if err != nil {
		return nil, fmt.Errorf("tag ids: %w", err)
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("tag ids: %w", err)
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// TagExists reports whether tag id exists.
func TagExists(ctx context.Context, q migrations.Querier, id int64) (bool, error) {
	var one int
	err := q.QueryRowContext(ctx, "SELECT 1 FROM tags WHERE id = ?", id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// CountTags returns the number of tags.
func CountTags(ctx context.Context, q migrations.Querier) (int64, error) {
	var n int64
	err := q.QueryRowContext(ctx, "SELECT COUNT(*) FROM tags").Scan(&n)
	return n, err
}

// StoredCounts returns tag_counts.count of the tags in [lo, hi] that have a
// row, by tag id.
func StoredCounts(ctx context.Context, q migrations.Querier, lo, hi int64) (map[int64]int64, error) {
	return migrations.SumsByID(ctx, q, `SELECT tag_id, count FROM tag_counts WHERE tag_id BETWEEN ? AND ?`, lo, hi)
}

// PendingDeltas returns the sum of the outbox rows' deltas of the tags in
// [lo, hi] that have any, by tag id.
func PendingDeltas(ctx context.Context, q migrations.Querier, lo, hi int64) (map[int64]int64, error) {
	return migrations.SumsByID(ctx, q,
		`SELECT tag_id, CAST(SUM(delta) AS SIGNED) FROM tag_events WHERE tag_id BETWEEN ? AND ? GROUP BY tag_id`, lo, hi)
}

// CorrectCount adds drift to tag's stored count as one autocommit statement
// on q, so it holds the row lock for one statement only; hasRow says whether
// the snapshot saw a tag_counts row (an UPDATE that finds none falls back to
// an upsert). It returns the statement's error unclassified: a lock conflict
// rolled it back whole and may be retried, anything else must not be.
func CorrectCount(ctx context.Context, q migrations.Querier, tag, drift int64, hasRow bool) error {
	if hasRow {
		res, err := q.ExecContext(ctx, "UPDATE tag_counts SET count = count + ? WHERE tag_id = ?", drift, tag)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n > 0 {
			return err
		}
	}
	_, err := q.ExecContext(ctx,
		"INSERT INTO tag_counts (tag_id, count) VALUES (?, ?) ON DUPLICATE KEY UPDATE count = count + ?", tag, drift, drift)
	return err
}

// OutboxDepth returns how many outbox rows wait, and how many of them are
// of tags whose stored count is below smallBelow (small tags, which the
// counter flushes every batch).
func OutboxDepth(ctx context.Context, q migrations.Querier, smallBelow int64) (total, small int64, err error) {
	err = q.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(COALESCE(c.count, 0) < ?), 0)
		FROM tag_events e LEFT JOIN tag_counts c ON c.tag_id = e.tag_id`, smallBelow).Scan(&total, &small)
	return total, small, err
}
