package poster

import (
	"context"
	"database/sql"
	"errors"

	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/drafts/api"
)

// FindWorkByID returns author's posted work with its tags in the order the
// author listed them, or a 404 *api.Error.
func (p *Poster) FindWorkByID(ctx context.Context, authorID, workID int64) (drafts.Work, error) {
	var w drafts.Work
	err := p.cfg.DB.QueryRowContext(ctx, `SELECT id, draft_id, author_id, title, body, posted_at, updated_at
		FROM works WHERE id = ? AND author_id = ?`, workID, authorID).
		Scan(&w.ID, &w.DraftID, &w.AuthorID, &w.Title, &w.Body, &w.PostedAt, &w.UpdatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return drafts.Work{}, api.NotFound("work")
	}
	if err != nil {
		return drafts.Work{}, err
	}
	rows, err := p.cfg.DB.QueryContext(ctx, `SELECT t.type, t.name FROM taggings g JOIN tags t ON t.id = g.tag_id
		WHERE g.work_id = ? ORDER BY g.position`, workID)
	if err != nil {
		return drafts.Work{}, err
	}
	defer rows.Close()
	for rows.Next() {
		var typ, name string
		if err := rows.Scan(&typ, &name); err != nil {
			return drafts.Work{}, err
		}
		t := &w.Tags
		switch typ {
		case drafts.TypeRating:
			t.Rating = name
		case drafts.TypeWarning:
			t.Warnings = append(t.Warnings, name)
		case drafts.TypeCategory:
			t.Categories = append(t.Categories, name)
		case drafts.TypeFandom:
			t.Fandoms = append(t.Fandoms, name)
		case drafts.TypeRelationship:
			t.Relationships = append(t.Relationships, name)
		case drafts.TypeCharacter:
			t.Characters = append(t.Characters, name)
		case drafts.TypeFreeform:
			t.Freeforms = append(t.Freeforms, name)
		}
	}
	return w, rows.Err()
}

// draftOfWork returns the draft behind author's work, or a 404 *api.Error.
func (p *Poster) draftOfWork(ctx context.Context, authorID, workID int64) (int64, error) {
	var draftID int64
	err := p.cfg.DB.QueryRowContext(ctx, `SELECT draft_id FROM works WHERE id = ? AND author_id = ?`, workID, authorID).Scan(&draftID)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, api.NotFound("work")
	}
	return draftID, err
}
