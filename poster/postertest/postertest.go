// Package postertest builds posted works for tests through the real posting
// transaction, in the manner of river's testfactory: one builder per kind of
// change, with defaults, each calling the poster's own code. Tests never
// write works, taggings or outbox rows by hand.
package postertest

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/poster"
)

// Opts are a builder's options; nil or zero fields take the defaults.
type Opts struct {
	// AuthorID defaults to 1.
	AuthorID int64
	// Path is poster.PathNew (default) or poster.PathLegacy.
	Path string
}

func (o *Opts) withDefaults() Opts {
	var out Opts
	if o != nil {
		out = *o
	}
	if out.AuthorID == 0 {
		out.AuthorID = 1
	}
	if out.Path == "" {
		out.Path = poster.PathNew
	}
	return out
}

// Content returns a valid draft content titled title carrying exactly refs
// (a rating listed twice keeps the last).
func Content(title string, refs ...tags.Ref) drafts.Content {
	c := drafts.Content{Title: title, Body: "Once upon a time."}
	for _, r := range refs {
		c.Tags.Add(r)
	}
	return c
}

// Works posts contents in one posting transaction on opts' path and returns
// the work ids in order and the events the new path announced (none on the
// legacy path). It fails the test on an error.
func Works(ctx context.Context, t testing.TB, db *migrations.DB, contents []drafts.Content, opts *Opts) ([]int64, []counter.Event) {
	t.Helper()
	works, events, err := TryWorks(ctx, db, contents, opts)
	if err != nil {
		t.Fatalf("postertest: post %d works: %v", len(contents), err)
	}
	return works, events
}

// TryWorks is Works returning the error instead of failing the test, for
// builders called from goroutines other than the test's.
func TryWorks(ctx context.Context, db *migrations.DB, contents []drafts.Content, opts *Opts) ([]int64, []counter.Event, error) {
	o := opts.withDefaults()
	ids, err := insertQueued(ctx, db, o.AuthorID, contents)
	if err != nil {
		return nil, nil, err
	}
	p, sink := newPoster(db, o)
	works, err := p.PostQueued(ctx, o.Path, ids...)
	return works, sink.take(), err
}

// Edit makes work (posted by opts' author) carry c, on opts' path, and
// returns the events announced. On the new path it records the edit as the
// API does and runs the posting job's work for it.
func Edit(ctx context.Context, db *migrations.DB, workID int64, c drafts.Content, opts *Opts) ([]counter.Event, error) {
	o := opts.withDefaults()
	var draftID int64
	err := db.QueryRowContext(ctx, "SELECT draft_id FROM works WHERE id = ? AND author_id = ?", workID, o.AuthorID).Scan(&draftID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, poster.ErrWorkNotFound
	}
	if err != nil {
		return nil, err
	}
	if _, err := (&drafts.Store{DB: db}).QueueEdit(ctx, o.AuthorID, draftID, c); errors.Is(err, drafts.ErrNotQueued) {
		return nil, poster.ErrWorkNotFound
	} else if err != nil {
		return nil, err
	}
	p, sink := newPoster(db, o)
	_, err = p.PostQueued(ctx, o.Path, draftID)
	return sink.take(), err
}

// Delete deletes work (posted by opts' author) on opts' path and returns
// the events announced, as Edit does.
func Delete(ctx context.Context, db *migrations.DB, workID int64, opts *Opts) ([]counter.Event, error) {
	o := opts.withDefaults()
	p, sink := newPoster(db, o)
	res, err := p.DeleteWork(ctx, o.AuthorID, workID)
	if err == nil && res.Async {
		_, err = p.PostQueued(ctx, poster.PathNew, res.DraftID)
	}
	return sink.take(), err
}

// Queued stores contents as drafts of opts' author whose Post is recorded
// (state queued) but whose posting job has not run yet, and returns their
// ids; Sync runs that job. Only the new path queues, so opts' Path is not
// used. It fails the test on an error.
func Queued(ctx context.Context, t testing.TB, db *migrations.DB, contents []drafts.Content, opts *Opts) []int64 {
	t.Helper()
	o := opts.withDefaults()
	ids, err := insertQueued(ctx, db, o.AuthorID, contents)
	if err != nil {
		t.Fatalf("postertest: queue %d drafts: %v", len(contents), err)
	}
	return ids
}

// Sync does what a worker's posting job does for each queued draft of ids
// (posts it, applies its edit or deletes it, on the new path) and returns
// the events announced, with the first error.
func Sync(ctx context.Context, db *migrations.DB, ids ...int64) ([]counter.Event, error) {
	p, sink := newPoster(db, Opts{AuthorID: 1, Path: poster.PathNew})
	_, err := p.PostQueued(ctx, poster.PathNew, ids...)
	return sink.take(), err
}

// insertQueued stores contents as queued drafts of author, one row each,
// and returns their ids. A fixture writes its rows itself, below the
// domain's gate (drafts.Store.Admit): builders make works carrying exactly
// the tags under test, which the API would refuse (no rating, no fandom),
// and the posting transaction needs none of them.
func insertQueued(ctx context.Context, db *migrations.DB, authorID int64, contents []drafts.Content) ([]int64, error) {
	ids := make([]int64, len(contents))
	for i, c := range contents {
		names, err := json.Marshal(c.Tags)
		if err != nil {
			return nil, err
		}
		res, err := db.ExecContext(ctx, `INSERT INTO drafts (author_id, title, body, tags, visibility, state, queued_at)
			VALUES (?, ?, ?, ?, ?, 'queued', NOW(6))`, authorID, c.Title, c.Body, names, cmp.Or(c.Visibility, drafts.VisibilityPublic))
		if err != nil {
			return nil, fmt.Errorf("postertest: queue draft: %w", err)
		}
		if ids[i], err = res.LastInsertId(); err != nil {
			return nil, err
		}
	}
	return ids, nil
}

// EventIDs returns the outbox row ids of events, in order, as the counter
// applies them (counter.ApplyBatch).
func EventIDs(events []counter.Event) []int64 {
	ids := make([]int64, len(events))
	for i, e := range events {
		ids[i] = e.ID
	}
	return ids
}

// newPoster returns a poster without a job queue on opts' path whose
// announcements are kept in sink.
func newPoster(db *migrations.DB, o Opts) (*poster.Poster, *Sink) {
	s := &Sink{}
	if o.Path != poster.PathNew && o.Path != poster.PathLegacy {
		panic(fmt.Sprintf("postertest: unknown path %q", o.Path))
	}
	p, err := poster.New(poster.Config{DB: db, Paths: poster.FixedPath(o.Path == poster.PathNew), Announcer: s,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		panic(err) // a nil db: the caller's bug
	}
	return p, s
}

// New returns the Poster of cfg; t fails at once when poster.New refuses cfg.
func New(t testing.TB, cfg poster.Config) *poster.Poster {
	t.Helper()
	p, err := poster.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Sink is an Announcer that keeps the events it is told of, for a test to
// read; it is safe for concurrent use.
type Sink struct {
	mu     sync.Mutex
	events []counter.Event
}

// Announce keeps events.
func (s *Sink) Announce(_ context.Context, events []counter.Event) {
	s.mu.Lock()
	s.events = append(s.events, events...)
	s.mu.Unlock()
}

// Events returns a copy of the events announced so far.
func (s *Sink) Events() []counter.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events)
}

func (s *Sink) take() []counter.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.events
	s.events = nil
	return out
}

// Recount returns every tag's four numbers counted afresh from the works,
// their taggings and the tags' synonyms alone (not from work_filters, the
// counts or the outbox): count and public count the unhidden works using
// the tag; a canonical tag's filter numbers count the unhidden works using
// it or any of its synonyms, each once; a synonym's are 0. It returns the
// database's error.
func Recount(ctx context.Context, db *migrations.DB) (map[int64]counter.Sum, error) {
	uses, err := counter.SumsByID(ctx, db, `SELECT t.id, CAST(COALESCE(SUM(NOT w.hidden), 0) AS SIGNED),
		CAST(COALESCE(SUM(NOT w.hidden AND w.visibility = 'public'), 0) AS SIGNED)
		FROM tags t LEFT JOIN taggings g ON g.tag_id = t.id LEFT JOIN works w ON w.id = g.work_id GROUP BY t.id`)
	if err != nil {
		return nil, err
	}
	filed, err := counter.SumsByID(ctx, db, `SELECT c, 0, 0, CAST(SUM(NOT hidden) AS SIGNED), CAST(SUM(NOT hidden AND public) AS SIGNED)
		FROM (SELECT DISTINCT COALESCE(t.synonym_of, t.id) AS c, w.id, w.hidden, w.visibility = 'public' AS public
			FROM taggings g JOIN tags t ON t.id = g.tag_id JOIN works w ON w.id = g.work_id) f GROUP BY c`)
	if err != nil {
		return nil, err
	}
	for id, s := range filed {
		uses[id] = uses[id].Add(s)
	}
	return uses, nil
}

// Mismatch is a tag whose stored numbers plus its pending outbox deltas
// differ from Recount.
type Mismatch struct {
	TagID             int64
	Stored, Recounted counter.Sum
}

// Mismatches returns every tag whose stored numbers plus its pending outbox
// deltas differ from Recount, in no order, and the number of tags compared.
// Call it when no work changes (the counter may be applying: that keeps the
// sum). It returns the database's error.
func Mismatches(ctx context.Context, db *migrations.DB) ([]Mismatch, int, error) {
	truth, err := Recount(ctx, db)
	if err != nil {
		return nil, 0, fmt.Errorf("postertest: recount: %w", err)
	}
	// One statement: one consistent read of the counts and the outbox.
	got, err := counter.SumsByID(ctx, db, `SELECT t.id,
		COALESCE(c.count, 0) + COALESCE(e.d, 0), COALESCE(c.public_count, 0) + COALESCE(e.p, 0),
		COALESCE(c.filter_count, 0) + COALESCE(e.f, 0), COALESCE(c.public_filter_count, 0) + COALESCE(e.pf, 0)
		FROM tags t LEFT JOIN tag_counts c ON c.tag_id = t.id
		LEFT JOIN (SELECT tag_id, CAST(SUM(delta) AS SIGNED) d, CAST(SUM(public_delta) AS SIGNED) p,
			CAST(SUM(filter_delta) AS SIGNED) f, CAST(SUM(public_filter_delta) AS SIGNED) pf FROM tag_events GROUP BY tag_id) e
		ON e.tag_id = t.id`)
	if err != nil {
		return nil, 0, fmt.Errorf("postertest: read counts: %w", err)
	}
	var wrong []Mismatch
	for id, want := range truth {
		if got[id] != want {
			wrong = append(wrong, Mismatch{TagID: id, Stored: got[id], Recounted: want})
		}
	}
	return wrong, len(truth), nil
}

// AssertExact fails the test for every tag whose stored numbers plus its
// pending outbox deltas differ from Recount (Mismatches).
func AssertExact(ctx context.Context, t testing.TB, db *migrations.DB) {
	t.Helper()
	wrong, _, err := Mismatches(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range wrong {
		if i < 20 {
			t.Errorf("tag %d: stored and pending %+v; the recount says %+v", m.TagID, m.Stored, m.Recounted)
		}
	}
	if len(wrong) > 20 {
		t.Errorf("%d tags wrong in all", len(wrong))
	}
}
