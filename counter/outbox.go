package counter

import (
	"context"
	"database/sql"
	"errors"
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

// BumpCounts is the legacy path's count update: the deltas added to
// tag_counts in q, the posting transaction (a *sql.Tx), rows locked in the
// order given. It is the hot-row locking the new path exists to avoid, kept
// as the rollback target and the benchmark baseline. It returns the
// database's error, or an error when q is not a transaction.
func BumpCounts(ctx context.Context, q migrations.Querier, deltas []Delta) error {
	tx, ok := q.(*sql.Tx)
	if !ok {
		return errNotTx
	}
	changes := make([]tagChange, len(deltas))
	for i, d := range deltas {
		changes[i] = tagChange{tag: d.TagID, sum: d.Sum()}
	}
	return writeCounts(ctx, tx, changes)
}

// errNotTx refuses a count write outside a transaction: its change-log row
// must commit with it, or the count-change stream would miss it.
var errNotTx = errors.New("counter: tag_counts is written only inside a transaction (*sql.Tx)")

// tagChange is one tag's change of a count write.
type tagChange struct {
	tag int64
	sum Sum
}

// writeCounts is the one place that writes tag_counts. It adds each change
// to its tag's four numbers (a missing row is created at version 1, an
// existing one's version grows by 1) with one multi-row upsert, rows locked
// in the order given, and appends one row per change to the count-change
// log (tag_count_changes), both in tx: a change commits exactly when its
// log row does, which is what makes the count-change stream complete
// (docs/events.md). It returns the first statement's error.
func writeCounts(ctx context.Context, tx *sql.Tx, changes []tagChange) error {
	if len(changes) == 0 {
		return nil
	}
	var upsert, log strings.Builder
	upsert.WriteString("INSERT INTO tag_counts (tag_id, count, public_count, filter_count, public_filter_count, version) VALUES ")
	log.WriteString("INSERT INTO tag_count_changes (tag_id) VALUES ")
	var buf [20]byte
	for i, c := range changes {
		if i > 0 {
			upsert.WriteByte(',')
			log.WriteByte(',')
		}
		upsert.WriteByte('(')
		for _, v := range []int64{c.tag, c.sum.Count, c.sum.Public, c.sum.Filter, c.sum.PublicFilter} {
			upsert.Write(strconv.AppendInt(buf[:0], v, 10))
			upsert.WriteByte(',')
		}
		upsert.WriteString("1)")
		log.WriteByte('(')
		log.Write(strconv.AppendInt(buf[:0], c.tag, 10))
		log.WriteByte(')')
	}
	upsert.WriteString(` ON DUPLICATE KEY UPDATE count = count + VALUES(count), public_count = public_count + VALUES(public_count),
	filter_count = filter_count + VALUES(filter_count), public_filter_count = public_filter_count + VALUES(public_filter_count),
	version = version + 1`)
	if _, err := tx.ExecContext(ctx, upsert.String()); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, log.String())
	return err
}
