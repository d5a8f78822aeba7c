package poster

import (
	"context"
	"database/sql"
	"errors"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/drafts"
)

// SetHidden hides a work (a moderator's decision: it counts for nobody, in
// either number, but stays its author's to read and edit) or shows it
// again, moving its tags' numbers by the difference on the path its author
// takes, in one transaction with the change. It returns ErrWorkNotFound for
// a work that does not exist, and reports a work already in that state as
// done with nothing changed.
func (p *Poster) SetHidden(ctx context.Context, workID int64, hidden bool) (Result, error) {
	var authorID, draftID int64
	err := p.cfg.DB.QueryRowContext(ctx, `SELECT author_id, draft_id FROM works WHERE id = ?`, workID).Scan(&authorID, &draftID)
	if errors.Is(err, sql.ErrNoRows) {
		return Result{}, ErrWorkNotFound
	}
	if err != nil {
		return Result{}, err
	}
	path := PathLegacy
	if p.useNewPath(authorID) {
		path = PathNew
	}
	err = p.commitAndAnnounce(ctx, p.cfg.DB, path, func(ctx context.Context, tx *sql.Tx) ([]counter.Event, error) {
		events, err := p.hide(ctx, tx, path, draftID, workID, hidden)
		stampRequestIDs(ctx, nil, events)
		return events, err
	})
	if err != nil {
		return Result{}, err
	}
	return Result{State: drafts.StatePosted, Path: path, WorkID: workID, DraftID: draftID}, nil
}

// hide changes the work's hidden flag in tx under its draft's lock (so it
// cannot interleave with a sync or a re-filing of the same work) and
// writes the change of its tags' numbers, filter numbers included.
func (p *Poster) hide(ctx context.Context, tx *sql.Tx, path string, draftID, workID int64, hidden bool) ([]counter.Event, error) {
	if _, err := p.drafts.LockForSync(ctx, tx, []int64{draftID}); err != nil {
		return nil, err
	}
	states, err := workStates(ctx, tx, []int64{workID})
	if err != nil {
		return nil, err
	}
	st := states[workID]
	if st == nil {
		return nil, ErrWorkNotFound // deleted meanwhile
	}
	if st.hidden == hidden {
		return nil, nil
	}
	now := *st
	now.hidden = hidden
	deltas := change(workID, st, &now)
	if _, err := tx.ExecContext(ctx, `UPDATE works SET hidden = ? WHERE id = ?`, hidden, workID); err != nil {
		return nil, err
	}
	return p.countChange(ctx, tx, path, deltas)
}
