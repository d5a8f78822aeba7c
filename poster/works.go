package poster

import (
	"context"
	"database/sql"
	"errors"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations"
)

// Work is a posted work as its author reads it.
type Work struct {
	ID         int64
	DraftID    int64
	AuthorID   int64
	Title      string
	Body       string
	Tags       drafts.Tags
	Visibility string
	Hidden     bool // by a moderator: it counts for nobody, but stays its author's
	PostedAt   time.Time
	UpdatedAt  time.Time
}

// workState is a posted work's tags (in the order the author listed them),
// the canonical tags it is filed under, and who may see it.
type workState struct {
	tags           []int64
	filters        []int64
	public, hidden bool
}

// weight is how much the work counts now.
func (st *workState) weight() counter.Sum { return weight(st.public, st.hidden) }

// weight is how much a work counts in each of a tag's numbers: for
// logged-in readers unless hidden, for everyone if also public. It is
// given as Count and Public; a tag the work is filed under gets the same
// in Filter and PublicFilter.
func weight(public, hidden bool) counter.Sum {
	switch {
	case hidden:
		return counter.Sum{}
	case public:
		return counter.Sum{Count: 1, Public: 1}
	}
	return counter.Sum{Count: 1}
}

// writeWorks makes the works of plans match their content (or deletes
// them and their drafts) in tx, marks the others' drafts posted, and fills
// each plan's work id and deltas (change). The works are filed under the
// canonical tags of their tags as tx reads them (Canonicals: a shared
// lock, so a synonym switch cannot commit in between).
func (p *Poster) writeWorks(ctx context.Context, db *migrations.DB, tx *sql.Tx, plans []*plan) error {
	var fresh, existing []*plan
	var deleted []int64
	for _, pl := range plans {
		switch {
		case pl.delete:
			deleted = append(deleted, pl.req.draftID)
		case pl.workID == 0:
			fresh = append(fresh, pl)
		default:
			existing = append(existing, pl)
		}
		if pl.req.content != nil && !pl.delete {
			if err := p.drafts.WriteContent(ctx, tx, pl.req.draftID, pl.content); err != nil {
				return err
			}
			pl.lock.Version++
		}
	}
	current, err := currentState(ctx, tx, plans)
	if err != nil {
		return err
	}
	if err := fileUnderCanonicals(ctx, tx, plans, current); err != nil {
		return err
	}
	if err := insertWorks(ctx, db, tx, fresh); err != nil {
		return err
	}
	if err := updateWorks(ctx, tx, existing); err != nil {
		return err
	}
	if err := p.deleteWorks(ctx, tx, plans, current, deleted); err != nil {
		return err
	}
	if err := writeTaggings(ctx, tx, plans, current); err != nil {
		return err
	}
	posted := make(map[int64]int64, len(plans))
	for _, pl := range plans {
		if !pl.delete {
			posted[pl.req.draftID] = pl.workID
		}
	}
	return p.drafts.MarkPosted(ctx, tx, posted)
}

// fileUnderCanonicals sets each writing plan's state as it will be: its
// tags (each once), the canonical tags they file it under, read for the
// whole batch in one statement, and its weight (an author's edit keeps a
// moderator's hiding).
func fileUnderCanonicals(ctx context.Context, q migrations.Querier, plans []*plan, current map[int64]*workState) error {
	var ids []int64
	for _, pl := range plans {
		if !pl.delete {
			ids = append(ids, pl.tagIDs...)
		}
	}
	slices.Sort(ids)
	canonical, err := tags.Canonicals(ctx, q, slices.Compact(ids))
	if err != nil {
		return err
	}
	for _, pl := range plans {
		if pl.delete {
			continue
		}
		old := current[pl.workID]
		now := &workState{public: pl.content.Public(), hidden: old != nil && old.hidden}
		now.tags = distinct(pl.tagIDs, nil)
		now.filters = distinct(now.tags, canonical)
		pl.now = now
	}
	return nil
}

// distinct returns ids in order, each once, each mapped through to when
// to is not nil (an id missing from it maps to itself).
func distinct(ids []int64, to map[int64]int64) []int64 {
	out := make([]int64, 0, len(ids))
	seen := make(map[int64]bool, len(ids))
	for _, id := range ids {
		if c, ok := to[id]; ok {
			id = c
		}
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// currentState returns, for each already posted work of plans, its tags
// in the order the author listed them, its filters and how it counts, by
// work id.
func currentState(ctx context.Context, q migrations.Querier, plans []*plan) (map[int64]*workState, error) {
	var works []int64
	for _, pl := range plans {
		if pl.workID != 0 {
			works = append(works, pl.workID)
		}
	}
	return workStates(ctx, q, works)
}

// workStates returns the state of works, by work id: their tags, who may
// see them, and the canonical tags they are filed under (work_filters).
func workStates(ctx context.Context, q migrations.Querier, works []int64) (map[int64]*workState, error) {
	out := make(map[int64]*workState, len(works))
	if len(works) == 0 {
		return out, nil
	}
	err := migrations.EachRow(ctx, q, func(rows *sql.Rows) error {
		var work int64
		var public, hidden bool
		var tag *int64
		if err := rows.Scan(&work, &public, &hidden, &tag); err != nil {
			return err
		}
		st := out[work]
		if st == nil {
			st = &workState{public: public, hidden: hidden}
			out[work] = st
		}
		if tag != nil {
			st.tags = append(st.tags, *tag)
		}
		return nil
	}, migrations.IDList(`SELECT w.id, w.visibility = 'public', w.hidden, tg.tag_id
		FROM works w LEFT JOIN taggings tg ON tg.work_id = w.id WHERE w.id IN (`, works, ") ORDER BY w.id, tg.position"))
	if err != nil {
		return nil, err
	}
	return out, readFilters(ctx, q, works, out)
}

// insertWorks inserts the new works of plans in one statement and sets
// their ids.
func insertWorks(ctx context.Context, db *migrations.DB, tx *sql.Tx, plans []*plan) error {
	if len(plans) == 0 {
		return nil
	}
	args := make([]any, 0, 6*len(plans))
	for _, pl := range plans {
		args = append(args, pl.req.draftID, pl.lock.AuthorID, pl.content.Title, pl.content.Body, visibility(pl.content), pl.lock.Version)
	}
	ids, err := migrations.InsertIDs(ctx, db, tx, "INSERT INTO works (draft_id, author_id, title, body, visibility, version) VALUES ",
		"(?,?,?,?,?,?)", len(plans), args...)
	if err != nil {
		return err
	}
	for i, pl := range plans {
		pl.workID = ids[i]
	}
	return nil
}

// updateWorks writes the content of already posted works.
func updateWorks(ctx context.Context, tx *sql.Tx, plans []*plan) error {
	for _, pl := range plans {
		if _, err := tx.ExecContext(ctx, `UPDATE works SET title = ?, body = ?, visibility = ?, version = ?, updated_at = NOW(6) WHERE id = ?`,
			pl.content.Title, pl.content.Body, visibility(pl.content), pl.lock.Version, pl.workID); err != nil {
			return err
		}
	}
	return nil
}

// deleteWorks deletes the works of the deleting plans, their taggings,
// their filings and the drafts (all of deleted), taking away what each
// work counted for each tag it had and each tag it was filed under.
func (p *Poster) deleteWorks(ctx context.Context, tx *sql.Tx, plans []*plan, current map[int64]*workState, deleted []int64) error {
	var works []int64
	for _, pl := range plans {
		st := current[pl.workID]
		if !pl.delete || st == nil {
			continue
		}
		works = append(works, pl.workID)
		pl.deltas = change(pl.workID, st, nil)
	}
	if len(works) > 0 {
		for _, table := range []string{"taggings", "work_filters"} {
			if _, err := tx.ExecContext(ctx, migrations.IDList("DELETE FROM "+table+" WHERE work_id IN (", works, ")")); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, migrations.IDList("DELETE FROM works WHERE id IN (", works, ")")); err != nil {
			return err
		}
	}
	return p.drafts.Delete(ctx, tx, deleted)
}

// writeTaggings makes the taggings and filings of the works of the
// writing plans match their new state (inserting, repositioning and
// removing rows, one statement for all works' inserts, one per edited
// work's removals) and fills their deltas (change).
func writeTaggings(ctx context.Context, tx *sql.Tx, plans []*plan, current map[int64]*workState) error {
	var upsert []any
	var filings []filing
	for _, pl := range plans {
		if pl.delete {
			continue
		}
		old := current[pl.workID]
		if old == nil {
			old = &workState{}
		}
		pl.deltas = change(pl.workID, old, pl.now)
		for i, tag := range pl.now.tags {
			upsert = append(upsert, pl.workID, tag, i)
		}
		_, removed := diff(old.tags, pl.now.tags)
		// One statement per edited work, by primary key prefix: it locks
		// only the rows it deletes. Edits are rare next to posts.
		if len(removed) > 0 {
			q := migrations.IDList("DELETE FROM taggings WHERE work_id = "+strconv.FormatInt(pl.workID, 10)+" AND tag_id IN (", removed, ")")
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return err
			}
		}
		filings = append(filings, refiling(pl.workID, old, pl.now))
	}
	if len(upsert) > 0 {
		q := "INSERT INTO taggings (work_id, tag_id, position) VALUES " + migrations.Placeholders("(?,?,?)", ",", len(upsert)/3) +
			" ON DUPLICATE KEY UPDATE position = VALUES(position)"
		if _, err := tx.ExecContext(ctx, q, upsert...); err != nil {
			return err
		}
	}
	_, err := writeFilings(ctx, tx, filings)
	return err
}

// FindWorkByID returns author's posted work with its tags in the order the
// author listed them, or ErrWorkNotFound.
func (p *Poster) FindWorkByID(ctx context.Context, authorID, workID int64) (Work, error) {
	var w Work
	err := p.cfg.DB.QueryRowContext(ctx, `SELECT id, draft_id, author_id, title, body, visibility, hidden, posted_at, updated_at
		FROM works WHERE id = ? AND author_id = ?`, workID, authorID).
		Scan(&w.ID, &w.DraftID, &w.AuthorID, &w.Title, &w.Body, &w.Visibility, &w.Hidden, &w.PostedAt, &w.UpdatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return Work{}, ErrWorkNotFound
	}
	if err != nil {
		return Work{}, err
	}
	err = migrations.EachRow(ctx, p.cfg.DB, func(rows *sql.Rows) error {
		var ref tags.Ref
		if err := rows.Scan(&ref.Type, &ref.Name); err != nil {
			return err
		}
		w.Tags.Add(ref)
		return nil
	}, `SELECT t.type, t.name FROM taggings g JOIN tags t ON t.id = g.tag_id
		WHERE g.work_id = ? ORDER BY g.position`, workID)
	if err != nil {
		return Work{}, err
	}
	return w, nil
}

// draftOfWork returns the draft behind author's work, or ErrWorkNotFound.
func (p *Poster) draftOfWork(ctx context.Context, authorID, workID int64) (int64, error) {
	var draftID int64
	err := p.cfg.DB.QueryRowContext(ctx, `SELECT draft_id FROM works WHERE id = ? AND author_id = ?`, workID, authorID).Scan(&draftID)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, ErrWorkNotFound
	}
	return draftID, err
}

// WorkRange is a range of work ids, both ends included.
type WorkRange struct{ From, To int64 }

// AllWorks is the range of every work id.
var AllWorks = WorkRange{0, math.MaxInt64}

// CountUses returns, for the tags in [lo, hi] that posted works in works
// use, how many unhidden works use each, and how many of those are
// public: the posted works' side of the conservation identity, read in the
// caller's snapshot q. A caller sums a large tag over several work ranges,
// so that no one statement runs long.
func CountUses(ctx context.Context, q migrations.Querier, lo, hi int64, works WorkRange) (map[int64]counter.Sum, error) {
	// A range scan of taggings_tag (tag_id, work_id) with a probe of
	// works_state (id, hidden, visibility) each: the narrow index, not the
	// clustered rows with their bodies, which the optimizer would pick.
	return counter.SumsByID(ctx, q, `SELECT tg.tag_id, CAST(SUM(NOT w.hidden) AS SIGNED),
		CAST(SUM(NOT w.hidden AND w.visibility = 'public') AS SIGNED)
		FROM taggings tg FORCE INDEX (taggings_tag) STRAIGHT_JOIN works w FORCE INDEX (works_state) ON w.id = tg.work_id
		WHERE tg.tag_id BETWEEN ? AND ? AND tg.work_id BETWEEN ? AND ? GROUP BY tg.tag_id`, lo, hi, works.From, works.To)
}

// CountFilters returns, for the tags in [lo, hi] that posted works in
// works are filed under, how many unhidden works are filed under each, and
// how many of those are public, as Filter and PublicFilter: the works' side
// of the filter counts' conservation identity, read in the caller's
// snapshot q. It returns the database's error.
func CountFilters(ctx context.Context, q migrations.Querier, lo, hi int64, works WorkRange) (map[int64]counter.Sum, error) {
	// A range scan of work_filters_tag (tag_id, work_id) with a probe of
	// works_state each (as CountUses).
	return counter.SumsByID(ctx, q, `SELECT wf.tag_id, 0, 0, CAST(SUM(NOT w.hidden) AS SIGNED),
		CAST(SUM(NOT w.hidden AND w.visibility = 'public') AS SIGNED)
		FROM work_filters wf FORCE INDEX (work_filters_tag) STRAIGHT_JOIN works w FORCE INDEX (works_state) ON w.id = wf.work_id
		WHERE wf.tag_id BETWEEN ? AND ? AND wf.work_id BETWEEN ? AND ? GROUP BY wf.tag_id`, lo, hi, works.From, works.To)
}

// LastWorkID returns the highest work id in q's snapshot (0 for none).
func LastWorkID(ctx context.Context, q migrations.Querier) (int64, error) {
	var id int64
	err := q.QueryRowContext(ctx, "SELECT COALESCE(MAX(id), 0) FROM works").Scan(&id)
	return id, err
}

// visibility is c's visibility as a works row stores it.
func visibility(c drafts.Content) string {
	if c.Public() {
		return drafts.VisibilityPublic
	}
	return drafts.VisibilityRegistered
}

// CountWorks returns how many works are posted.
func CountWorks(ctx context.Context, q migrations.Querier) (int64, error) {
	var n int64
	err := q.QueryRowContext(ctx, "SELECT COUNT(*) FROM works").Scan(&n)
	return n, err
}
