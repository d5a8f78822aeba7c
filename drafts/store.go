package drafts

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/migrations"
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

// Store keeps drafts in MySQL. It owns the drafts table: every statement on
// it is here, including the posting state transitions the poster asks for
// (inside the poster's transaction where they must be atomic with the work).
type Store struct {
	DB *migrations.DB
	// Writes, when set, is a pool from migrations.OpenManualCommit for the
	// authors' own writes (create, save, delete, queue): one round trip
	// fewer each than a transaction on DB.
	Writes *migrations.DB
	// MaxDrafts is the most unposted drafts (state draft or failed, no
	// work) an author keeps; CreateDraft refuses one more with
	// ErrDraftQuota. 0 means no limit.
	MaxDrafts int
	// NewTags, when set, is the new-tag quota every save of content is
	// charged against (see Admit); nil means no quota.
	NewTags *tags.Quota
}

// Admit is the domain's gate for content an author saves, whatever the
// entry point (the API, the bulk path, an edit of a work): it validates
// each of contents and charges the tags they would create against the
// author's new-tag quota. check, when set, is the caller's ownership and
// state check; it runs after validation and before anything is charged,
// so a save that ends not found or in conflict uses none of the quota. It
// returns a *ValidationError, check's error, a *tags.QuotaError, or a
// database error.
func (s *Store) Admit(ctx context.Context, authorID int64, check func(context.Context) error, contents ...Content) error {
	var refs []tags.Ref
	for _, c := range contents {
		if err := c.Validate(); err != nil {
			return err
		}
		refs = append(refs, c.Tags.List()...)
	}
	if s.NewTags == nil && check != nil {
		return check(ctx)
	}
	return s.NewTags.Charge(ctx, authorID, refs, check)
}

// DefaultMaxDrafts is the drafts quota the service runs with: far more
// unfinished drafts than a writer keeps (a prolific one has a few dozen),
// few enough that a script creating drafts in a loop stops at a size the
// archive does not notice.
const DefaultMaxDrafts = 500

// CreateDraft inserts a draft for author and returns it. The draft is durable
// when CreateDraft returns nil; when ctx ends first it returns ctx's error
// and the draft is not saved. It returns ErrDraftQuota when the author
// already keeps MaxDrafts unposted drafts, and Admit's errors.
func (s *Store) CreateDraft(ctx context.Context, authorID int64, c Content) (Draft, error) {
	names, err := json.Marshal(c.Tags)
	if err != nil {
		return Draft{}, err
	}
	if err := s.checkDraftQuota(ctx, authorID); err != nil {
		return Draft{}, err
	}
	if err := s.Admit(ctx, authorID, nil, c); err != nil {
		return Draft{}, err
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	res, err := s.exec(ctx,
		`INSERT INTO drafts (author_id, title, body, tags, visibility, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		authorID, c.Title, c.Body, names, c.visibility(), now, now)
	if err != nil {
		return Draft{}, fmt.Errorf("create draft: %w", err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return Draft{}, err
	}
	// Everything in the row is known: no need to read it back.
	c.Visibility = c.visibility()
	return Draft{ID: id, AuthorID: authorID, Content: c, State: StateDraft, Version: 1, CreatedAt: now, UpdatedAt: now}, nil
}

// exec runs one write of an author's request so that it commits only if
// the request is still alive to commit it, never as an autocommit
// statement: a statement the server received but had not answered when ctx
// ended (a database that stopped answering) would still commit on its own,
// saving a change the client was told failed. On Writes that is
// ExecCommitted's two round trips; without it, an explicit transaction on
// DB. (Only a deadline passing while the COMMIT itself is in flight leaves
// the outcome unknown.)
func (s *Store) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if s.Writes != nil {
		return s.Writes.ExecCommitted(ctx, query, args...)
	}
	tx, err := s.DB.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return res, migrations.Commit(ctx, tx)
}

// checkDraftQuota returns ErrDraftQuota when author keeps MaxDrafts
// unposted drafts, counted from the drafts_author_state index alone. The
// count is a plain read before the insert, not a lock (in the insert's
// transaction it would be the same consistent read): creates of one
// author racing each other may pass it together, so the quota can be
// overshot by the author's creates in flight (the write rate limit keeps
// those few). A locking read would serialise them at the price of
// deadlocks between the gap locks of concurrent inserts.
func (s *Store) checkDraftQuota(ctx context.Context, authorID int64) error {
	if s.MaxDrafts <= 0 {
		return nil
	}
	var n int
	err := s.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM drafts WHERE author_id = ? AND state IN ('draft', 'failed') AND work_id IS NULL`,
		authorID).Scan(&n)
	if err != nil {
		return err
	}
	if n >= s.MaxDrafts {
		return fmt.Errorf("%w (%d kept, at most %d)", ErrDraftQuota, n, s.MaxDrafts)
	}
	return nil
}

// FindDraftByID returns author's draft id, or ErrNotFound when it does not
// exist or belongs to someone else.
func (s *Store) FindDraftByID(ctx context.Context, authorID, id int64) (Draft, error) {
	row := s.DB.QueryRowContext(ctx, `SELECT id, author_id, title, body, tags, visibility, state, COALESCE(work_id, 0), version,
		COALESCE(error, ''), created_at, updated_at FROM drafts WHERE id = ? AND author_id = ?`, id, authorID)
	var d Draft
	var tags []byte
	err := row.Scan(&d.ID, &d.AuthorID, &d.Content.Title, &d.Content.Body, &tags, &d.Content.Visibility, &d.State, &d.WorkID, &d.Version,
		&d.Error, &d.CreatedAt, &d.UpdatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return Draft{}, ErrNotFound
	}
	if err != nil {
		return Draft{}, fmt.Errorf("read draft: %w", err)
	}
	if err := json.Unmarshal(tags, &d.Content.Tags); err != nil {
		return Draft{}, fmt.Errorf("draft %d has unreadable tags: %w", d.ID, err)
	}
	return d, nil
}

// ReplaceDraft replaces the content of author's draft id. It returns
// ErrNotFound when the draft is not the author's, ErrQueued while the draft
// is queued and ErrPosted once it has a work (a posted work is edited
// through its work, even after an edit of it failed), and Admit's errors.
func (s *Store) ReplaceDraft(ctx context.Context, authorID, id int64, c Content) (Draft, error) {
	names, err := json.Marshal(c.Tags)
	if err != nil {
		return Draft{}, err
	}
	// The check reads the draft only when the content names new tags: the
	// common save costs no more. A post of the author's own racing this
	// save may still leave the charge spent on a save answered ErrQueued.
	editable := func(ctx context.Context) error {
		d, err := s.FindDraftByID(ctx, authorID, id)
		if err != nil {
			return err
		}
		return notEditable(d)
	}
	if err := s.Admit(ctx, authorID, editable, c); err != nil {
		return Draft{}, err
	}
	res, err := s.exec(ctx, `UPDATE drafts SET title = ?, body = ?, tags = ?, visibility = ?, version = version + 1,
		state = 'draft', error = NULL, updated_at = NOW(6)
		WHERE id = ? AND author_id = ? AND state IN ('draft', 'failed') AND work_id IS NULL`, c.Title, c.Body, names, c.visibility(), id, authorID)
	if err != nil {
		return Draft{}, fmt.Errorf("replace draft: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return Draft{}, s.whyNotEditable(ctx, authorID, id)
	}
	return s.FindDraftByID(ctx, authorID, id)
}

// DeleteDraft deletes author's unposted draft id: ErrNotFound if not the
// author's, ErrQueued if queued, ErrPosted if it has a work (deleting the
// draft would orphan the work).
func (s *Store) DeleteDraft(ctx context.Context, authorID, id int64) error {
	res, err := s.exec(ctx, `DELETE FROM drafts WHERE id = ? AND author_id = ? AND state IN ('draft', 'failed')
		AND work_id IS NULL`, id, authorID)
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
	if err := notEditable(d); err != nil {
		return err
	}
	return ErrChanged
}

// notEditable returns why d cannot be saved or deleted as a draft
// (ErrQueued, ErrPosted), or nil.
func notEditable(d Draft) error {
	switch {
	case d.State == StateQueued:
		return ErrQueued
	case d.State == StatePosted, d.WorkID != 0:
		// A failed edit of a posted work leaves its draft failed: the work
		// is still there, and changes go through it.
		return ErrPosted
	}
	return nil
}

// ErrNotQueued is returned by the Queue methods when no row changed: the
// draft is not the author's, or not in a state the change applies to.
var ErrNotQueued = errors.New("draft not queued")

// QueuePost records that author's draft id is to be posted (state queued)
// and returns the version the post is for. It returns ErrNotQueued when the
// draft is not the author's or is already queued or posted.
func (s *Store) QueuePost(ctx context.Context, authorID, id int64) (int64, error) {
	return s.queue(ctx, `UPDATE drafts SET state = 'queued', queued_at = NOW(6), version = LAST_INSERT_ID(version)
		WHERE id = ? AND author_id = ? AND state IN ('draft', 'failed')`, id, authorID)
}

// QueueEdit writes c to author's draft id (the draft of a posted work),
// queues the sync of its work and returns the new version. It returns
// ErrNotQueued when the draft is not the author's or its delete is pending.
func (s *Store) QueueEdit(ctx context.Context, authorID, id int64, c Content) (int64, error) {
	tags, err := json.Marshal(c.Tags)
	if err != nil {
		return 0, err
	}
	return s.queue(ctx, `UPDATE drafts SET title = ?, body = ?, tags = ?, visibility = ?, version = LAST_INSERT_ID(version + 1),
		state = 'queued', queued_at = NOW(6), error = NULL, updated_at = NOW(6)
		WHERE id = ? AND author_id = ? AND delete_requested = 0`, c.Title, c.Body, tags, c.visibility(), id, authorID)
}

// QueueDelete records that author's draft id and its work are to be deleted
// and returns the new version; ErrNotQueued when it is not the author's.
func (s *Store) QueueDelete(ctx context.Context, authorID, id int64) (int64, error) {
	return s.queue(ctx, `UPDATE drafts SET delete_requested = 1, version = LAST_INSERT_ID(version + 1),
		state = 'queued', queued_at = NOW(6), updated_at = NOW(6)
		WHERE id = ? AND author_id = ?`, id, authorID)
}

// queue runs an UPDATE that sets version = LAST_INSERT_ID(...), so the new
// version comes back without another read.
func (s *Store) queue(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := s.exec(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return 0, ErrNotQueued
	}
	return res.LastInsertId()
}

// CreateQueued inserts drafts of author already queued for posting, one
// per content, and returns their ids in order: the first step of a bulk
// import or of the bare posting transaction, with no HTTP and no job queue.
// Its contents pass Admit first; it returns Admit's errors.
func (s *Store) CreateQueued(ctx context.Context, authorID int64, contents []Content) ([]int64, error) {
	if err := s.Admit(ctx, authorID, nil, contents...); err != nil {
		return nil, err
	}
	return s.insertQueued(ctx, authorID, contents)
}

// insertQueued inserts contents in one statement (migrations.InsertIDs)
// and returns their ids in order.
func (s *Store) insertQueued(ctx context.Context, authorID int64, contents []Content) ([]int64, error) {
	args := make([]any, 0, 4*len(contents))
	for _, c := range contents {
		tags, err := json.Marshal(c.Tags)
		if err != nil {
			return nil, err
		}
		args = append(args, authorID, c.Title, c.Body, tags, c.visibility())
	}
	return migrations.InsertIDs(ctx, s.DB, s.DB, "INSERT INTO drafts (author_id, title, body, tags, visibility, state, queued_at) VALUES ",
		"(?, ?, ?, ?, ?, 'queued', NOW(6))", len(contents), args...)
}

// Versioned is a draft's content as of a version.
type Versioned struct {
	AuthorID int64
	Content  Content
	Version  int64
	QueuedAt time.Time // zero when not queued
}

// ReadContents returns the author, content, version and queue time of each draft
// of ids that exists, by id; drafts deleted meanwhile are missing from the
// map.
func (s *Store) ReadContents(ctx context.Context, ids []int64) (map[int64]Versioned, error) {
	if len(ids) == 0 {
		return map[int64]Versioned{}, nil
	}
	out, err := migrations.CollectMap(ctx, s.DB, func(rows *sql.Rows) (id int64, v Versioned, err error) {
		var tags []byte
		var queued sql.NullTime
		if err := rows.Scan(&id, &v.AuthorID, &v.Content.Title, &v.Content.Body, &tags, &v.Content.Visibility, &v.Version, &queued); err != nil {
			return 0, v, err
		}
		v.QueuedAt = queued.Time
		if err := json.Unmarshal(tags, &v.Content.Tags); err != nil {
			return 0, v, fmt.Errorf("draft %d has unreadable tags: %w", id, err)
		}
		return id, v, nil
	}, migrations.IDList("SELECT id, author_id, title, body, tags, visibility, version, queued_at FROM drafts WHERE id IN (", ids, ")"))
	if err != nil {
		return nil, fmt.Errorf("read drafts: %w", err)
	}
	return out, nil
}

// Lock is a draft's posting state as read under its row lock.
type Lock struct {
	AuthorID        int64
	State           string
	WorkID          int64 // 0 until posted
	Version         int64
	DeleteRequested bool
}

// LockForSync locks the rows of ids in q (a transaction), in ascending id
// order, and returns their posting state by id; drafts that no longer exist
// are missing from the map.
func (s *Store) LockForSync(ctx context.Context, q migrations.Querier, ids []int64) (map[int64]Lock, error) {
	return migrations.CollectMap(ctx, q, func(rows *sql.Rows) (id int64, l Lock, err error) {
		err = rows.Scan(&id, &l.AuthorID, &l.State, &l.WorkID, &l.Version, &l.DeleteRequested)
		return id, l, err
	}, migrations.IDList(`SELECT id, author_id, state, COALESCE(work_id, 0), version, delete_requested
		FROM drafts WHERE id IN (`, ids, ") ORDER BY id FOR UPDATE"))
}

// WriteContent writes c to draft id in q as its next version (the legacy
// path's edit, atomic with the work's change).
func (s *Store) WriteContent(ctx context.Context, q migrations.Querier, id int64, c Content) error {
	tags, err := json.Marshal(c.Tags)
	if err != nil {
		return err
	}
	_, err = q.ExecContext(ctx, `UPDATE drafts SET title = ?, body = ?, tags = ?, visibility = ?, version = version + 1,
		updated_at = NOW(6) WHERE id = ?`, c.Title, c.Body, tags, c.visibility(), id)
	return err
}

// MarkPosted marks each draft of posted (draft id → work id) posted with its
// work, in q, in one statement.
func (s *Store) MarkPosted(ctx context.Context, q migrations.Querier, posted map[int64]int64) error {
	if len(posted) == 0 {
		return nil
	}
	ids := make([]int64, 0, len(posted))
	var sb strings.Builder
	sb.WriteString("UPDATE drafts SET state = 'posted', queued_at = NULL, error = NULL, work_id = CASE id")
	for id, work := range posted {
		ids = append(ids, id)
		sb.WriteString(" WHEN " + strconv.FormatInt(id, 10) + " THEN " + strconv.FormatInt(work, 10))
	}
	sb.WriteString(" END WHERE id IN (")
	_, err := q.ExecContext(ctx, migrations.IDList(sb.String(), ids, ")"))
	return err
}

// Delete deletes drafts ids in q.
func (s *Store) Delete(ctx context.Context, q migrations.Querier, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := q.ExecContext(ctx, migrations.IDList("DELETE FROM drafts WHERE id IN (", ids, ")"))
	return err
}

// MarkFailed marks draft id failed with msg, if it is still queued at
// version: a post that gave up, so the author sees it and can post again.
func (s *Store) MarkFailed(ctx context.Context, id, version int64, msg string) error {
	_, err := s.DB.ExecContext(ctx, `UPDATE drafts SET state = 'failed', error = ?
		WHERE id = ? AND version = ? AND state = 'queued'`, msg, id, version)
	return err
}

// Queued is a draft whose post (or edit, or delete) is owed.
type Queued struct {
	ID       int64
	AuthorID int64
	Version  int64
}

// ListQueued returns up to limit drafts queued before before with an id
// greater than after, in id order: a page of a walk over every such draft.
func (s *Store) ListQueued(ctx context.Context, before time.Time, after int64, limit int) ([]Queued, error) {
	return migrations.Collect(ctx, s.DB, func(rows *sql.Rows) (q Queued, err error) {
		err = rows.Scan(&q.ID, &q.AuthorID, &q.Version)
		return q, err
	}, `SELECT id, author_id, version FROM drafts
		WHERE state = 'queued' AND queued_at < ? AND id > ? ORDER BY id LIMIT ?`, before.UTC(), after, limit)
}

// Status is a draft's posting state and its work, if posted.
type Status struct {
	State  string
	WorkID int64
}

// Statuses returns the posting state of each draft of ids that exists, by
// id, reading by primary key only.
func (s *Store) Statuses(ctx context.Context, ids []int64) (map[int64]Status, error) {
	return migrations.CollectMap(ctx, s.DB, func(rows *sql.Rows) (id int64, st Status, err error) {
		err = rows.Scan(&id, &st.State, &st.WorkID)
		return id, st, err
	}, migrations.IDList("SELECT id, state, COALESCE(work_id, 0) FROM drafts WHERE id IN (", ids, ")"))
}

// CountQueued returns how many drafts are queued: posts, edits and deletes
// not yet done.
func (s *Store) CountQueued(ctx context.Context) (int64, error) {
	n, _, err := s.Backlog(ctx)
	return n, err
}

// CountQueuedBy returns how many of author's drafts are queued (posts,
// edits and deletes not yet done), counting at most upTo of them from the
// drafts_author_state index: a bounded read on every Post, however many
// an importer has queued.
func (s *Store) CountQueuedBy(ctx context.Context, authorID int64, upTo int) (int, error) {
	var n int
	err := s.DB.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT 1 FROM drafts WHERE author_id = ? AND state = 'queued' LIMIT ?) q`,
		authorID, upTo).Scan(&n)
	return n, err
}

// Backlog returns how many drafts are queued and when the oldest of them
// was (zero when none is).
func (s *Store) Backlog(ctx context.Context) (int64, time.Time, error) {
	var n int64
	var oldest sql.NullTime
	err := s.DB.QueryRowContext(ctx, "SELECT COUNT(*), MIN(queued_at) FROM drafts WHERE state = 'queued'").Scan(&n, &oldest)
	return n, oldest.Time, err
}

// QueuedSince returns, for each draft of ids queued since before before,
// its version.
func (s *Store) QueuedSince(ctx context.Context, ids []int64, before time.Time) (map[int64]int64, error) {
	if len(ids) == 0 {
		return map[int64]int64{}, nil
	}
	return migrations.SumsByID(ctx, s.DB, migrations.IDList("SELECT id, version FROM drafts WHERE state = 'queued' AND queued_at < ? AND id IN (",
		ids, ")"), before.UTC())
}
