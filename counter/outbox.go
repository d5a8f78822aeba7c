package counter

import (
	"context"
	"strconv"
	"strings"

	"github.com/tagcount/tagcount/migrations"
)

// Delta is one change of a tag's numbers caused by one work: Delta for
// count (works a logged-in reader can see), PublicDelta for public_count
// (works anyone can see), and the same two for the filter numbers
// (filter_count, public_filter_count: works filed under the tag, which a
// canonical tag is for the works using it or any of its synonyms). +1 when
// the work gains the tag (or is filed under it) or becomes visible, -1 when
// it loses it or is hidden; a visibility change alone moves the public
// numbers only. A row may change the filter numbers only: a work re-filed
// by wrangling.
type Delta struct {
	WorkID            int64
	TagID             int64
	Delta             int32
	PublicDelta       int32
	FilterDelta       int32
	PublicFilterDelta int32
}

// IsZero reports whether d changes nothing.
func (d Delta) IsZero() bool { return d.Sum().IsZero() }

// Sum is d's change as a Sum.
func (d Delta) Sum() Sum {
	return Sum{Count: int64(d.Delta), Public: int64(d.PublicDelta), Filter: int64(d.FilterDelta), PublicFilter: int64(d.PublicFilterDelta)}
}

// Sum is a tag's four numbers, or a change of them: Count for logged-in
// readers, Public for everyone, and Filter and PublicFilter, the same for
// the works filed under the tag.
type Sum struct {
	Count, Public, Filter, PublicFilter int64
}

// IsZero reports whether s changes nothing.
func (s Sum) IsZero() bool { return s == Sum{} }

// Add returns s + o, number by number.
func (s Sum) Add(o Sum) Sum {
	return Sum{s.Count + o.Count, s.Public + o.Public, s.Filter + o.Filter, s.PublicFilter + o.PublicFilter}
}

// Sub returns s - o, number by number.
func (s Sum) Sub(o Sum) Sum {
	return Sum{s.Count - o.Count, s.Public - o.Public, s.Filter - o.Filter, s.PublicFilter - o.PublicFilter}
}

// WriteOutbox writes one tag_events row per delta in q, the posting
// transaction, in one statement, and returns the events to announce once
// that transaction commits. It is the new path's count update: it touches no
// row another author's transaction updates.
func WriteOutbox(ctx context.Context, db *migrations.DB, q migrations.Querier, deltas []Delta) ([]Event, error) {
	if len(deltas) == 0 {
		return nil, nil
	}
	args := make([]any, 0, 6*len(deltas))
	for _, d := range deltas {
		args = append(args, d.TagID, d.Delta, d.PublicDelta, d.FilterDelta, d.PublicFilterDelta, d.WorkID)
	}
	ids, err := migrations.InsertIDs(ctx, db, q, "INSERT INTO tag_events (tag_id, delta, public_delta, filter_delta, public_filter_delta, work_id) VALUES ",
		"(?,?,?,?,?,?)", len(deltas), args...)
	if err != nil {
		return nil, err
	}
	events := make([]Event, len(deltas))
	for i, d := range deltas {
		events[i] = Event{ID: ids[i], TagID: d.TagID, Delta: d.Delta, WorkID: d.WorkID}
	}
	return events, nil
}

// BumpCounts is the legacy path's count update: one upsert of tag_counts per
// delta, in the order given, in q, the posting transaction. It is the
// hot-row locking the new path exists to avoid, kept as the rollback target
// and the benchmark baseline.
func BumpCounts(ctx context.Context, q migrations.Querier, deltas []Delta) error {
	for _, d := range deltas {
		if _, err := q.ExecContext(ctx, `INSERT INTO tag_counts (tag_id, count, public_count, filter_count, public_filter_count, version)
			VALUES (?, ?, ?, ?, ?, 1) ON DUPLICATE KEY UPDATE `+addCounts, d.TagID, d.Delta, d.PublicDelta, d.FilterDelta,
			d.PublicFilterDelta); err != nil {
			return err
		}
	}
	return nil
}

// addCounts is the ON DUPLICATE KEY UPDATE clause that adds an upsert's
// four numbers to a tag_counts row.
const addCounts = `count = count + VALUES(count), public_count = public_count + VALUES(public_count),
	filter_count = filter_count + VALUES(filter_count), public_filter_count = public_filter_count + VALUES(public_filter_count),
	version = version + 1`

// upsertCounts adds sums (tag id → change) to tag_counts in q with one
// multi-row upsert, rows in ascending tag id order (tags must be sorted), so
// concurrent writers lock tag_counts rows in one order and cannot deadlock
// on them.
func upsertCounts(ctx context.Context, q migrations.Querier, tags []int64, sums map[int64]Sum) error {
	var sb strings.Builder
	sb.WriteString("INSERT INTO tag_counts (tag_id, count, public_count, filter_count, public_filter_count, version) VALUES ")
	for i, tag := range tags {
		if i > 0 {
			sb.WriteByte(',')
		}
		s := sums[tag]
		sb.WriteByte('(')
		for _, v := range []int64{tag, s.Count, s.Public, s.Filter, s.PublicFilter} {
			sb.WriteString(strconv.FormatInt(v, 10))
			sb.WriteByte(',')
		}
		sb.WriteString("1)")
	}
	sb.WriteString(" ON DUPLICATE KEY UPDATE " + addCounts)
	_, err := q.ExecContext(ctx, sb.String())
	return err
}
