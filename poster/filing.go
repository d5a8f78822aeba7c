package poster

import (
	"context"
	"database/sql"
	"slices"
	"strconv"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/migrations"
)

// change is what a work's move from old to now (nil: no work) does to its
// tags' numbers, as outbox rows or legacy bumps: for each tag it has or
// had, count and public_count move by the weights; for each tag it is or
// was filed under, filter_count and public_filter_count do. One delta per
// tag id, none that changes nothing, in this order: now's tags as the
// author listed them, the tags it lost, then the tags it is or was filed
// under only. Posting, editing, deleting, hiding and wrangling all use it,
// so they cannot disagree about what a work counts for.
func change(work int64, old, now *workState) []counter.Delta {
	if old == nil {
		old = &workState{}
	}
	if now == nil {
		now = &workState{}
	}
	was, is := old.weight(), now.weight()
	sums := make(map[int64]counter.Sum, len(now.tags)+len(old.tags))
	var order []int64
	add := func(tag int64, s counter.Sum) {
		if _, ok := sums[tag]; !ok {
			order = append(order, tag)
		}
		sums[tag] = sums[tag].Add(s)
	}
	for _, list := range [][]int64{now.tags, old.tags} {
		for _, tag := range list {
			if _, ok := sums[tag]; !ok {
				add(tag, moved(tag, old.tags, was, now.tags, is))
			}
		}
	}
	filterDone := make(map[int64]bool, len(now.filters)+len(old.filters))
	for _, list := range [][]int64{now.filters, old.filters} {
		for _, tag := range list {
			if !filterDone[tag] {
				filterDone[tag] = true
				m := moved(tag, old.filters, was, now.filters, is)
				add(tag, counter.Sum{Filter: m.Count, PublicFilter: m.Public})
			}
		}
	}
	out := make([]counter.Delta, 0, len(order))
	for _, tag := range order {
		s := sums[tag]
		if s.IsZero() {
			continue
		}
		out = append(out, counter.Delta{WorkID: work, TagID: tag, Delta: int32(s.Count), PublicDelta: int32(s.Public),
			FilterDelta: int32(s.Filter), PublicFilterDelta: int32(s.PublicFilter)})
	}
	return out
}

// moved is how one number pair of tag moves when a work weighing was in
// set old comes to weigh is in set now.
func moved(tag int64, old []int64, was counter.Sum, now []int64, is counter.Sum) counter.Sum {
	var s counter.Sum
	if slices.Contains(now, tag) {
		s = s.Add(is)
	}
	if slices.Contains(old, tag) {
		s = s.Sub(was)
	}
	return s
}

// diff returns the ids of now not in old, and those of old not in now,
// each in its list's order.
func diff(old, now []int64) (added, removed []int64) {
	for _, id := range now {
		if !slices.Contains(old, id) {
			added = append(added, id)
		}
	}
	for _, id := range old {
		if !slices.Contains(now, id) {
			removed = append(removed, id)
		}
	}
	return added, removed
}

// filing is a change of the canonical tags one work is filed under.
type filing struct {
	work           int64
	added, removed []int64
}

// rows is how many work_filters rows the filing writes.
func (f filing) rows() int { return len(f.added) + len(f.removed) }

// refiling is the filing that takes a work from old's filters to now's.
func refiling(work int64, old, now *workState) filing {
	added, removed := diff(old.filters, now.filters)
	return filing{work: work, added: added, removed: removed}
}

// writeFilings writes filings to work_filters in q: one INSERT for every
// work's new rows, one DELETE per work that loses some (by primary key
// prefix: it locks only the rows it deletes). It returns the rows written.
func writeFilings(ctx context.Context, q migrations.Querier, filings []filing) (int, error) {
	var insert []any
	written := 0
	for _, f := range filings {
		for _, tag := range f.added {
			insert = append(insert, f.work, tag)
		}
		if len(f.removed) > 0 {
			stmt := migrations.IDList("DELETE FROM work_filters WHERE work_id = "+strconv.FormatInt(f.work, 10)+" AND tag_id IN (", f.removed, ")")
			if _, err := q.ExecContext(ctx, stmt); err != nil {
				return written, err
			}
			written += len(f.removed)
		}
	}
	if len(insert) > 0 {
		if _, err := q.ExecContext(ctx, "INSERT INTO work_filters (work_id, tag_id) VALUES "+
			migrations.Placeholders("(?,?)", ",", len(insert)/2), insert...); err != nil {
			return written, err
		}
		written += len(insert) / 2
	}
	return written, nil
}

// readFilters adds to states (by work id) the canonical tags each of works
// is filed under.
func readFilters(ctx context.Context, q migrations.Querier, works []int64, states map[int64]*workState) error {
	return migrations.EachRow(ctx, q, func(rows *sql.Rows) error {
		var work, tag int64
		if err := rows.Scan(&work, &tag); err != nil {
			return err
		}
		if st := states[work]; st != nil {
			st.filters = append(st.filters, tag)
		}
		return nil
	}, migrations.IDList("SELECT work_id, tag_id FROM work_filters WHERE work_id IN (", works, ") ORDER BY work_id, tag_id"))
}
