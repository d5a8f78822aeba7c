package poster

import (
	"context"
	"database/sql"
	"errors"
	"strconv"
	"time"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations"
)

// Work is a posted work as its author reads it.
type Work struct {
	ID        int64
	DraftID   int64
	AuthorID  int64
	Title     string
	Body      string
	Tags      drafts.Tags
	PostedAt  time.Time
	UpdatedAt time.Time
}

// writeWorks makes the works of plans match their content (or deletes
// them and their drafts) in tx, marks the others' drafts posted, and fills
// each plan's work id and deltas: per work, +1 for each tag gained in the
// order the author listed them, then -1 for each tag lost.
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
	current, err := currentTags(ctx, tx, plans)
	if err != nil {
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

// currentTags returns the tag ids each already posted work of plans has
// now, in the order the author listed them, by work id.
func currentTags(ctx context.Context, q migrations.Querier, plans []*plan) (map[int64][]int64, error) {
	var works []int64
	for _, pl := range plans {
		if pl.workID != 0 {
			works = append(works, pl.workID)
		}
	}
	out := make(map[int64][]int64, len(works))
	if len(works) == 0 {
		return out, nil
	}
	rows, err := q.QueryContext(ctx, migrations.IDList("SELECT work_id, tag_id FROM taggings WHERE work_id IN (",
		works, ") ORDER BY work_id, position"))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var work, tag int64
		if err := rows.Scan(&work, &tag); err != nil {
			return nil, err
		}
		out[work] = append(out[work], tag)
	}
	return out, rows.Err()
}

// insertWorks inserts the new works of plans in one statement and sets
// their ids.
func insertWorks(ctx context.Context, db *migrations.DB, tx *sql.Tx, plans []*plan) error {
	if len(plans) == 0 {
		return nil
	}
	args := make([]any, 0, 5*len(plans))
	for _, pl := range plans {
		args = append(args, pl.req.draftID, pl.lock.AuthorID, pl.content.Title, pl.content.Body, pl.lock.Version)
	}
	res, err := tx.ExecContext(ctx, "INSERT INTO works (draft_id, author_id, title, body, version) VALUES "+
		migrations.Placeholders("(?,?,?,?,?)", ",", len(plans)), args...)
	if err != nil {
		return err
	}
	first, err := res.LastInsertId()
	if err != nil {
		return err
	}
	if db.ConsecutiveIDs {
		for i, pl := range plans {
			pl.workID = first + int64(i)
		}
		return nil
	}
	ids := make([]int64, len(plans))
	byDraft := make(map[int64]*plan, len(plans))
	for i, pl := range plans {
		ids[i] = pl.req.draftID
		byDraft[pl.req.draftID] = pl
	}
	found, err := migrations.SumsByID(ctx, tx, migrations.IDList("SELECT draft_id, id FROM works WHERE draft_id IN (", ids, ")"))
	if err != nil {
		return err
	}
	for draft, work := range found {
		byDraft[draft].workID = work
	}
	return nil
}

// updateWorks writes the content of already posted works.
func updateWorks(ctx context.Context, tx *sql.Tx, plans []*plan) error {
	for _, pl := range plans {
		if _, err := tx.ExecContext(ctx, `UPDATE works SET title = ?, body = ?, version = ?, updated_at = NOW(6) WHERE id = ?`,
			pl.content.Title, pl.content.Body, pl.lock.Version, pl.workID); err != nil {
			return err
		}
	}
	return nil
}

// deleteWorks deletes the works of the deleting plans, their taggings and
// the drafts (all of deleted), with a -1 delta per tag each work had.
func (p *Poster) deleteWorks(ctx context.Context, tx *sql.Tx, plans []*plan, current map[int64][]int64, deleted []int64) error {
	var works []int64
	for _, pl := range plans {
		if !pl.delete || pl.workID == 0 {
			continue
		}
		works = append(works, pl.workID)
		for _, tag := range current[pl.workID] {
			pl.deltas = append(pl.deltas, counter.Delta{WorkID: pl.workID, TagID: tag, Delta: -1})
		}
	}
	if len(works) > 0 {
		if _, err := tx.ExecContext(ctx, migrations.IDList("DELETE FROM taggings WHERE work_id IN (", works, ")")); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, migrations.IDList("DELETE FROM works WHERE id IN (", works, ")")); err != nil {
			return err
		}
	}
	return p.drafts.Delete(ctx, tx, deleted)
}

// writeTaggings makes the taggings of the works of the writing plans match
// their tags (inserting, repositioning and removing rows, one statement
// each for all works) and fills their deltas.
func writeTaggings(ctx context.Context, tx *sql.Tx, plans []*plan, current map[int64][]int64) error {
	var upsert []any
	for _, pl := range plans {
		if pl.delete {
			continue
		}
		had := make(map[int64]bool, len(current[pl.workID]))
		for _, tag := range current[pl.workID] {
			had[tag] = true
		}
		want := make(map[int64]bool, len(pl.tagIDs))
		for i, tag := range pl.tagIDs {
			if want[tag] {
				continue
			}
			want[tag] = true
			if !had[tag] {
				pl.deltas = append(pl.deltas, counter.Delta{WorkID: pl.workID, TagID: tag, Delta: +1})
			}
			upsert = append(upsert, pl.workID, tag, i)
		}
		var removed []int64
		for _, tag := range current[pl.workID] {
			if !want[tag] {
				pl.deltas = append(pl.deltas, counter.Delta{WorkID: pl.workID, TagID: tag, Delta: -1})
				removed = append(removed, tag)
			}
		}
		// One statement per edited work, by primary key prefix: it locks
		// only the rows it deletes. Edits are rare next to posts.
		if len(removed) > 0 {
			q := migrations.IDList("DELETE FROM taggings WHERE work_id = "+strconv.FormatInt(pl.workID, 10)+" AND tag_id IN (", removed, ")")
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return err
			}
		}
	}
	if len(upsert) > 0 {
		q := "INSERT INTO taggings (work_id, tag_id, position) VALUES " + migrations.Placeholders("(?,?,?)", ",", len(upsert)/3) +
			" ON DUPLICATE KEY UPDATE position = VALUES(position)"
		if _, err := tx.ExecContext(ctx, q, upsert...); err != nil {
			return err
		}
	}
	return nil
}

// FindWorkByID returns author's posted work with its tags in the order the
// author listed them, or ErrWorkNotFound.
func (p *Poster) FindWorkByID(ctx context.Context, authorID, workID int64) (Work, error) {
	var w Work
	err := p.cfg.DB.QueryRowContext(ctx, `SELECT id, draft_id, author_id, title, body, posted_at, updated_at
		FROM works WHERE id = ? AND author_id = ?`, workID, authorID).
		Scan(&w.ID, &w.DraftID, &w.AuthorID, &w.Title, &w.Body, &w.PostedAt, &w.UpdatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return Work{}, ErrWorkNotFound
	}
	if err != nil {
		return Work{}, err
	}
	rows, err := p.cfg.DB.QueryContext(ctx, `SELECT t.type, t.name FROM taggings g JOIN tags t ON t.id = g.tag_id
		WHERE g.work_id = ? ORDER BY g.position`, workID)
	if err != nil {
		return Work{}, err
	}
	defer rows.Close()
	for rows.Next() {
		var ref drafts.TagRef
		if err := rows.Scan(&ref.Type, &ref.Name); err != nil {
			return Work{}, err
		}
		w.Tags.Add(ref)
	}
	return w, rows.Err()
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

// CountUses returns, for the tags in [lo, hi] that posted works use, how
// many works use each: the posted works' side of the conservation identity,
// read in the caller's snapshot q.
func CountUses(ctx context.Context, q migrations.Querier, lo, hi int64) (map[int64]int64, error) {
	// A range scan of taggings_tag (tag_id, work_id) with a primary-key
	// probe of works each.
	return migrations.SumsByID(ctx, q, `SELECT tg.tag_id, COUNT(*) FROM taggings tg STRAIGHT_JOIN works w ON w.id = tg.work_id
		WHERE tg.tag_id BETWEEN ? AND ? GROUP BY tg.tag_id`, lo, hi)
}

// CountWorks returns how many works are posted.
func CountWorks(ctx context.Context, q migrations.Querier) (int64, error) {
	var n int64
	err := q.QueryRowContext(ctx, "SELECT COUNT(*) FROM works").Scan(&n)
	return n, err
}
