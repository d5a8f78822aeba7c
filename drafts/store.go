package drafts

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/tagcount/tagcount/drafts/api"
)

// Draft states, as stored in drafts.state.
const (
	StateDraft  = "draft"
	StateQueued = "queued"
	StatePosted = "posted"
	StateFailed = "failed"
)

// Draft is a stored draft.
type Draft struct {
	ID        int64
	AuthorID  int64
	Content   Content
	State     string
	WorkID    int64 // 0 until posted
	Version   int64
	Error     string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Store keeps drafts in MySQL. It owns the content columns of the drafts
// table; the poster owns the posting state transitions.
type Store struct {
	DB *sql.DB
}

// CreateDraft inserts a draft for author and returns it. The draft is durable
// when CreateDraft returns nil.
func (s *Store) CreateDraft(ctx context.Context, authorID int64, c Content) (Draft, error) {
	tags, err := json.Marshal(c.Tags)
	if err != nil {
		return Draft{}, err
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	res, err := s.DB.ExecContext(ctx,
		`INSERT INTO drafts (author_id, title, body, tags, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)`,
		authorID, c.Title, c.Body, tags, now, now)
	if err != nil {
		return Draft{}, fmt.Errorf("create draft: %w", err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return Draft{}, err
	}
	// Everything in the row is known: no need to read it back.
	return Draft{ID: id, AuthorID: authorID, Content: c, State: StateDraft, Version: 1, CreatedAt: now, UpdatedAt: now}, nil
}

// FindDraftByID returns author's draft id, or a 404 *api.Error when it does
// not exist or belongs to someone else.
func (s *Store) FindDraftByID(ctx context.Context, authorID, id int64) (Draft, error) {
	row := s.DB.QueryRowContext(ctx, `SELECT id, author_id, title, body, tags, state, COALESCE(work_id, 0), version,
		COALESCE(error, ''), created_at, updated_at FROM drafts WHERE id = ? AND author_id = ?`, id, authorID)
	var d Draft
	var tags []byte
	err := row.Scan(&d.ID, &d.AuthorID, &d.Content.Title, &d.Content.Body, &tags, &d.State, &d.WorkID, &d.Version,
		&d.Error, &d.CreatedAt, &d.UpdatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return Draft{}, api.NotFound("draft")
	}
	if err != nil {
		return Draft{}, fmt.Errorf("read draft: %w", err)
	}
	if err := json.Unmarshal(tags, &d.Content.Tags); err != nil {
		return Draft{}, fmt.Errorf("draft %d has unreadable tags: %w", d.ID, err)
	}
	return d, nil
}

// ReplaceDraft replaces the content of author's draft id. It returns 404 when
// the draft is not the author's, and 409 while the draft is queued or once it
// is posted (a posted work is edited through its work).
func (s *Store) ReplaceDraft(ctx context.Context, authorID, id int64, c Content) (Draft, error) {
	tags, err := json.Marshal(c.Tags)
	if err != nil {
		return Draft{}, err
	}
	res, err := s.DB.ExecContext(ctx, `UPDATE drafts SET title = ?, body = ?, tags = ?, version = version + 1,
		state = 'draft', error = NULL, updated_at = NOW(6)
		WHERE id = ? AND author_id = ? AND state IN ('draft', 'failed')`, c.Title, c.Body, tags, id, authorID)
	if err != nil {
		return Draft{}, fmt.Errorf("replace draft: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return Draft{}, s.whyNotEditable(ctx, authorID, id)
	}
	return s.FindDraftByID(ctx, authorID, id)
}

// DeleteDraft deletes author's unposted draft id: 404 if not the author's,
// 409 if queued or posted.
func (s *Store) DeleteDraft(ctx context.Context, authorID, id int64) error {
	res, err := s.DB.ExecContext(ctx, `DELETE FROM drafts WHERE id = ? AND author_id = ? AND state IN ('draft', 'failed')`, id, authorID)
	if err != nil {
		return fmt.Errorf("delete draft: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return s.whyNotEditable(ctx, authorID, id)
	}
	return nil
}

func (s *Store) whyNotEditable(ctx context.Context, authorID, id int64) error {
	d, err := s.FindDraftByID(ctx, authorID, id)
	if err != nil {
		return err
	}
	switch d.State {
	case StateQueued:
		return api.Conflict("draft_queued", "the draft is being posted; try again once it is posted")
	case StatePosted:
		return api.Conflict("draft_posted", "the draft is posted; edit or delete its work instead")
	}
	return api.Conflict("draft_changed", "the draft changed meanwhile; try again")
}
