package poster

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/drafts/api"
)

type syncOpts struct {
	legacy        bool            // bump tag_counts in the transaction instead of writing the outbox
	requireQueued bool            // do nothing unless the draft is queued (the job)
	post          bool            // a Post: nothing to do once the draft is posted
	authorID      int64           // when non-zero, the draft must be this author's
	content       *drafts.Content // when set, written to the draft in the same transaction
	delete        bool            // delete the work and its draft
}

// errDraftGone means the draft no longer exists (its work was deleted).
var errDraftGone = errors.New("draft no longer exists")

// errVersionMoved means the draft changed between reading its content and
// locking it; the caller reads it again.
var errVersionMoved = errors.New("draft changed meanwhile")

type delta struct {
	tagID int64
	delta int32
}

// sync makes the work of draftID match the draft's content, or deletes it, in
// one transaction; see the package comment. It returns what it did.
func (p *Poster) sync(ctx context.Context, draftID int64, o syncOpts) (drafts.PostResult, error) {
	for attempt := 0; ; attempt++ {
		res, err := p.syncOnce(ctx, draftID, o)
		if errors.Is(err, errVersionMoved) && attempt < 5 {
			continue
		}
		return res, err
	}
}

func (p *Poster) syncOnce(ctx context.Context, draftID int64, o syncOpts) (drafts.PostResult, error) {
	// Read the content and resolve its tags before the transaction: tag
	// creation must not run while the transaction holds a pooled connection.
	var (
		content drafts.Content
		version int64
	)
	if o.content != nil {
		content = *o.content
	} else {
		var tags []byte
		err := p.cfg.DB.QueryRowContext(ctx, `SELECT title, body, tags, version FROM drafts WHERE id = ?`, draftID).
			Scan(&content.Title, &content.Body, &tags, &version)
		if errors.Is(err, sql.ErrNoRows) {
			return drafts.PostResult{}, errDraftGone
		}
		if err != nil {
			return drafts.PostResult{}, err
		}
		if err := json.Unmarshal(tags, &content.Tags); err != nil {
			return drafts.PostResult{}, fmt.Errorf("draft %d has unreadable tags: %w", draftID, err)
		}
	}
	refs := content.Tags.List()
	tagIDs, err := p.tags.resolve(ctx, refs)
	if err != nil {
		return drafts.PostResult{}, err
	}

	opts := &sql.TxOptions{}
	if !o.legacy {
		// No gap locks: nothing on the new path may wait on another author.
		opts.Isolation = sql.LevelReadCommitted
	}
	tx, err := p.cfg.DB.BeginTx(ctx, opts)
	if err != nil {
		return drafts.PostResult{}, err
	}
	defer tx.Rollback()

	var (
		authorID, workID, lockedVersion int64
		state                           string
		deleteRequested                 bool
	)
	err = tx.QueryRowContext(ctx, `SELECT author_id, state, COALESCE(work_id, 0), version, delete_requested
		FROM drafts WHERE id = ? FOR UPDATE`, draftID).Scan(&authorID, &state, &workID, &lockedVersion, &deleteRequested)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && o.authorID != 0 && authorID != o.authorID) {
		if o.authorID != 0 {
			return drafts.PostResult{}, api.NotFound("draft")
		}
		return drafts.PostResult{}, errDraftGone
	}
	if err != nil {
		return drafts.PostResult{}, err
	}
	if o.content == nil && lockedVersion != version {
		return drafts.PostResult{}, errVersionMoved
	}
	if o.requireQueued && state != drafts.StateQueued {
		return drafts.PostResult{State: state, WorkID: workID}, nil
	}
	if o.post && state == drafts.StatePosted && !deleteRequested {
		return drafts.PostResult{State: state, WorkID: workID}, nil
	}

	path := PathNew
	if o.legacy {
		path = PathLegacy
	}
	var deltas []delta
	var result drafts.PostResult
	if o.delete || deleteRequested {
		deltas, err = p.deleteWork(ctx, tx, draftID, workID)
		result = drafts.PostResult{State: "deleted", Path: path, WorkID: workID}
	} else {
		workID, deltas, err = p.writeWork(ctx, tx, draftID, authorID, workID, content, tagIDs, o.content != nil)
		result = drafts.PostResult{State: drafts.StatePosted, Path: path, WorkID: workID}
	}
	if err != nil {
		return drafts.PostResult{}, err
	}

	var events []counter.Event
	if o.legacy {
		err = bumpCounts(ctx, tx, deltas)
	} else {
		events, err = writeOutbox(ctx, tx, workID, deltas, p.consecutiveIDs(ctx))
	}
	if err != nil {
		return drafts.PostResult{}, err
	}
	if err := tx.Commit(); err != nil {
		return drafts.PostResult{}, err
	}
	if len(events) > 0 && p.cfg.Announcer != nil {
		p.cfg.Announcer.Announce(ctx, events)
	}
	return result, nil
}

// writeWork creates or updates the work of draftID and its taggings, marks the
// draft posted, and returns the work id and the tag deltas in the order the
// author listed the tags (added), then removed tags.
func (p *Poster) writeWork(ctx context.Context, tx *sql.Tx, draftID, authorID, workID int64, c drafts.Content, tagIDs []int64, writeDraft bool) (int64, []delta, error) {
	if writeDraft {
		tags, err := marshalTags(c.Tags)
		if err != nil {
			return 0, nil, err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE drafts SET title = ?, body = ?, tags = ?, version = version + 1,
			updated_at = NOW(6) WHERE id = ?`, c.Title, c.Body, tags, draftID); err != nil {
			return 0, nil, err
		}
	}
	current := map[int64]bool{}
	if workID == 0 {
		res, err := tx.ExecContext(ctx, `INSERT INTO works (draft_id, author_id, title, body, version)
			SELECT id, author_id, title, body, version FROM drafts WHERE id = ?`, draftID)
		if err != nil {
			return 0, nil, err
		}
		if workID, err = res.LastInsertId(); err != nil {
			return 0, nil, err
		}
	} else {
		if _, err := tx.ExecContext(ctx, `UPDATE works w JOIN drafts d ON d.id = w.draft_id
			SET w.title = d.title, w.body = d.body, w.version = d.version, w.updated_at = NOW(6) WHERE w.id = ?`, workID); err != nil {
			return 0, nil, err
		}
		ids, err := workTagIDs(ctx, tx, workID)
		if err != nil {
			return 0, nil, err
		}
		for _, id := range ids {
			current[id] = true
		}
	}

	var deltas []delta
	desired := make(map[int64]bool, len(tagIDs))
	args := make([]any, 0, 3*len(tagIDs))
	for i, id := range tagIDs {
		if desired[id] {
			continue
		}
		desired[id] = true
		if !current[id] {
			deltas = append(deltas, delta{id, +1})
		}
		args = append(args, workID, id, i)
	}
	var removed []any
	for id := range current {
		if !desired[id] {
			deltas = append(deltas, delta{id, -1})
			removed = append(removed, id)
		}
	}
	if len(removed) > 0 {
		q := "DELETE FROM taggings WHERE work_id = ? AND tag_id IN (" + repeatJoin("?", ",", len(removed)) + ")"
		if _, err := tx.ExecContext(ctx, q, append([]any{workID}, removed...)...); err != nil {
			return 0, nil, err
		}
	}
	if len(args) > 0 {
		q := "INSERT INTO taggings (work_id, tag_id, position) VALUES " + repeatJoin("(?,?,?)", ",", len(args)/3) +
			" ON DUPLICATE KEY UPDATE position = VALUES(position)"
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return 0, nil, err
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE drafts SET state = 'posted', work_id = ?, queued_at = NULL, error = NULL
		WHERE id = ?`, workID, draftID); err != nil {
		return 0, nil, err
	}
	return workID, deltas, nil
}

// deleteWork deletes the work of draftID (if it was posted), its taggings and
// the draft, and returns a -1 delta per tag the work had.
func (p *Poster) deleteWork(ctx context.Context, tx *sql.Tx, draftID, workID int64) ([]delta, error) {
	var deltas []delta
	if workID != 0 {
		ids, err := workTagIDs(ctx, tx, workID)
		if err != nil {
			return nil, err
		}
		for _, id := range ids {
			deltas = append(deltas, delta{id, -1})
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM taggings WHERE work_id = ?`, workID); err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM works WHERE id = ?`, workID); err != nil {
			return nil, err
		}
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM drafts WHERE id = ?`, draftID); err != nil {
		return nil, err
	}
	return deltas, nil
}

// workTagIDs returns the tag ids of workID in the order the author listed them.
func workTagIDs(ctx context.Context, tx *sql.Tx, workID int64) ([]int64, error) {
	rows, err := tx.QueryContext(ctx, `SELECT tag_id FROM taggings WHERE work_id = ? ORDER BY position`, workID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// writeOutbox writes one tag_events row per delta and returns them with their
// ids, for announcing after commit. consecutive says the server gives a
// multi-row INSERT consecutive ids, so they need not be read back.
func writeOutbox(ctx context.Context, tx *sql.Tx, workID int64, deltas []delta, consecutive bool) ([]counter.Event, error) {
	if len(deltas) == 0 {
		return nil, nil
	}
	args := make([]any, 0, 3*len(deltas))
	for _, d := range deltas {
		args = append(args, d.tagID, d.delta, workID)
	}
	res, err := tx.ExecContext(ctx, "INSERT INTO tag_events (tag_id, delta, work_id) VALUES "+repeatJoin("(?,?,?)", ",", len(deltas)), args...)
	if err != nil {
		return nil, err
	}
	first, err := res.LastInsertId()
	if err != nil {
		return nil, err
	}
	if consecutive {
		events := make([]counter.Event, len(deltas))
		for i, d := range deltas {
			events[i] = counter.Event{ID: first + int64(i), TagID: d.tagID, Delta: d.delta}
		}
		return events, nil
	}
	// With innodb_autoinc_lock_mode=2 (MySQL 8's default) the ids of one
	// INSERT may interleave with another's: read them back.
	rows, err := tx.QueryContext(ctx, `SELECT id, tag_id, delta FROM tag_events WHERE id >= ? AND work_id = ?`, first, workID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	events := make([]counter.Event, 0, len(deltas))
	for rows.Next() {
		var e counter.Event
		if err := rows.Scan(&e.ID, &e.TagID, &e.Delta); err != nil {
			return nil, err
		}
		events = append(events, e)
	}
	return events, rows.Err()
}

// bumpCounts is the legacy path's count update: one statement per tag, in
// the order given, inside the posting transaction. It is the hot-row locking
// the new path exists to avoid, kept as the baseline.
func bumpCounts(ctx context.Context, tx *sql.Tx, deltas []delta) error {
	for _, d := range deltas {
		if _, err := tx.ExecContext(ctx, `INSERT INTO tag_counts (tag_id, count) VALUES (?, ?)
			ON DUPLICATE KEY UPDATE count = count + VALUES(count)`, d.tagID, d.delta); err != nil {
			return err
		}
	}
	return nil
}

// consecutiveIDs reports, once per process, whether a multi-row INSERT gets
// consecutive auto-increment ids: innodb_autoinc_lock_mode 0 or 1 (MariaDB's
// default) with an increment of 1. Unknown means no.
func (p *Poster) consecutiveIDs(ctx context.Context) bool {
	p.autoincOnce.Do(func() {
		var mode, step int
		err := p.cfg.DB.QueryRowContext(ctx, `SELECT @@innodb_autoinc_lock_mode, @@auto_increment_increment`).Scan(&mode, &step)
		p.consecutive = err == nil && mode < 2 && step == 1
	})
	return p.consecutive
}

func marshalTags(t drafts.Tags) ([]byte, error) { return json.Marshal(t) }

// repeatJoin returns n copies of s separated by sep: the placeholder list of
// an IN (...), the rows of a multi-row VALUES, the terms of an OR.
func repeatJoin(s, sep string, n int) string {
	if n <= 0 {
		return ""
	}
	return strings.Repeat(s+sep, n-1) + s
}
