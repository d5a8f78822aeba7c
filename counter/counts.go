package counter

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/tagcount/tagcount/migrations"
)

// The statements below are the counter's side of the conservation identity
// (docs/design.md invariant 5): the stored count and the pending outbox deltas of
// a range of tags. The reconcile reads them, with the posted works' side,
// inside one consistent snapshot (q is that snapshot's connection).

// StoredCounts returns tag_counts' four numbers of the tags in [lo, hi]
// that have a row, by tag id.
func StoredCounts(ctx context.Context, q migrations.Querier, lo, hi int64) (map[int64]Sum, error) {
	return SumsByID(ctx, q, `SELECT tag_id, `+storedColumns+` FROM tag_counts WHERE tag_id BETWEEN ? AND ?`, lo, hi)
}

// storedColumns are a tag_counts row's numbers in Sum's order.
const storedColumns = "count, public_count, filter_count, public_filter_count"

// pendingSums are the sums of outbox deltas in Sum's order.
const pendingSums = `CAST(SUM(delta) AS SIGNED), CAST(SUM(public_delta) AS SIGNED),
	CAST(SUM(filter_delta) AS SIGNED), CAST(SUM(public_filter_delta) AS SIGNED)`

// PendingDeltas returns the sums of the outbox rows' deltas of the tags in
// [lo, hi] that have any, by tag id.
func PendingDeltas(ctx context.Context, q migrations.Querier, lo, hi int64) (map[int64]Sum, error) {
	return SumsByID(ctx, q, `SELECT tag_id, `+pendingSums+` FROM tag_events WHERE tag_id BETWEEN ? AND ? GROUP BY tag_id`, lo, hi)
}

// SumsByID runs query (which selects an id and one to four integers, in
// Sum's order: count, public, filter, public filter) on q and returns them
// by id: the shape of every per-tag aggregate. It returns an error for a
// query of any other shape.
func SumsByID(ctx context.Context, q migrations.Querier, query string, args ...any) (map[int64]Sum, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	if len(cols) < 2 || len(cols) > 5 {
		return nil, fmt.Errorf("counter: SumsByID: the query selects %d columns; want an id and 1 to 4 numbers", len(cols))
	}
	out := make(map[int64]Sum)
	for rows.Next() {
		var id int64
		var s Sum
		dest := []any{&id, &s.Count, &s.Public, &s.Filter, &s.PublicFilter}
		if err := rows.Scan(dest[:len(cols)]...); err != nil {
			return nil, err
		}
		out[id] = s
	}
	return out, rows.Err()
}

// CorrectCount adds drift (all four numbers) to tag's stored numbers in
// q, the correction's own short transaction (a *sql.Tx), through the one
// count write (so the count-change stream publishes it); a missing row is
// created (the upsert covers both). It returns the
// statement's error unclassified (a lock conflict rolled it back whole and
// may be retried, anything else must not be), or an error when q is not a
// transaction.
func CorrectCount(ctx context.Context, q migrations.Querier, tag int64, drift Sum) error {
	tx, ok := q.(*sql.Tx)
	if !ok {
		return errNotTx
	}
	return writeCounts(ctx, tx, []tagChange{{tag: tag, sum: drift}})
}

// OutboxDepth returns how many outbox rows wait, and how many of them are
// of tags whose stored count is below smallBelow (small tags, which the
// counter flushes every batch).
func OutboxDepth(ctx context.Context, q migrations.Querier, smallBelow int64) (total, small int64, err error) {
	err = q.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(COALESCE(c.count, 0) < ?), 0)
		FROM tag_events e LEFT JOIN tag_counts c ON c.tag_id = e.tag_id`, smallBelow).Scan(&total, &small)
	return total, small, err
}
