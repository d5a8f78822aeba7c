package counter

import (
	"context"
	"strconv"
	"strings"

	"github.com/tagcount/tagcount/migrations"
)

// Delta is one change of a tag's numbers caused by one work: Delta for
// count (works a logged-in reader can see), PublicDelta for public_count
// (works anyone can see). +1 when the work gains the tag or becomes
// visible, -1 when it loses it or is hidden; a visibility change alone moves
// PublicDelta only.
type Delta struct {
	WorkID      int64
	TagID       int64
	Delta       int32
	PublicDelta int32
}

// Sum is a tag's two numbers, or a change of them: Count for logged-in
// readers, Public for everyone.
type Sum struct {
	Count, Public int64
}

// IsZero reports whether s changes nothing.
func (s Sum) IsZero() bool { return s.Count == 0 && s.Public == 0 }

// WriteOutbox writes one tag_events row per delta in q, the posting
// transaction, in one statement, and returns the events to announce once
// that transaction commits. It is the new path's count update: it touches no
// row another author's transaction updates.
func WriteOutbox(ctx context.Context, db *migrations.DB, q migrations.Querier, deltas []Delta) ([]Event, error) {
	if len(deltas) == 0 {
		return nil, nil
	}
	args := make([]any, 0, 4*len(deltas))
	for _, d := range deltas {
		args = append(args, d.TagID, d.Delta, d.PublicDelta, d.WorkID)
	}
	res, err := q.ExecContext(ctx, "INSERT INTO tag_events (tag_id, delta, public_delta, work_id) VALUES "+
		migrations.Placeholders("(?,?,?,?)", ",", len(deltas)), args...)
	if err != nil {
		return nil, err
	}
	first, err := res.LastInsertId()
	if err != nil {
		return nil, err
	}
	if db.ConsecutiveIDs {
		events := make([]Event, len(deltas))
		for i, d := range deltas {
			events[i] = Event{ID: first + int64(i), TagID: d.TagID, Delta: d.Delta}
		}
		return events, nil
	}
	// With innodb_autoinc_lock_mode=2 (MySQL 8's default) the ids of one
	// INSERT may interleave with another's: read them back.
	works := make([]int64, 0, len(deltas))
	for _, d := range deltas {
		works = append(works, d.WorkID)
	}
	rows, err := q.QueryContext(ctx, migrations.IDList("SELECT id, tag_id, delta FROM tag_events WHERE id >= "+
		strconv.FormatInt(first, 10)+" AND work_id IN (", works, ")"))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	events := make([]Event, 0, len(deltas))
	for rows.Next() {
		var e Event
		if err := rows.Scan(&e.ID, &e.TagID, &e.Delta); err != nil {
			return nil, err
		}
		events = append(events, e)
	}
	return events, rows.Err()
}

// BumpCounts is the legacy path's count update: one upsert of tag_counts per
// delta, in the order given, in q, the posting transaction. It is the
// hot-row locking the new path exists to avoid, kept as the rollback target
// and the benchmark baseline.
func BumpCounts(ctx context.Context, q migrations.Querier, deltas []Delta) error {
	for _, d := range deltas {
		if _, err := q.ExecContext(ctx, `INSERT INTO tag_counts (tag_id, count, public_count, version) VALUES (?, ?, ?, 1)
			ON DUPLICATE KEY UPDATE count = count + VALUES(count), public_count = public_count + VALUES(public_count),
			version = version + 1`, d.TagID, d.Delta, d.PublicDelta); err != nil {
			return err
		}
	}
	return nil
}

// upsertCounts adds sums (tag id → change) to tag_counts in q with one
// multi-row upsert, rows in ascending tag id order (tags must be sorted), so
// concurrent writers lock tag_counts rows in one order and cannot deadlock
// on them.
func upsertCounts(ctx context.Context, q migrations.Querier, tags []int64, sums map[int64]Sum) error {
	var sb strings.Builder
	sb.WriteString("INSERT INTO tag_counts (tag_id, count, public_count, version) VALUES ")
	for i, tag := range tags {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteByte('(')
		sb.WriteString(strconv.FormatInt(tag, 10))
		sb.WriteByte(',')
		sb.WriteString(strconv.FormatInt(sums[tag].Count, 10))
		sb.WriteByte(',')
		sb.WriteString(strconv.FormatInt(sums[tag].Public, 10))
		sb.WriteString(",1)")
	}
	sb.WriteString(" ON DUPLICATE KEY UPDATE count = count + VALUES(count), public_count = public_count + VALUES(public_count), version = version + 1")
	_, err := q.ExecContext(ctx, sb.String())
	return err
}
