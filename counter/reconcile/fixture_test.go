package reconcile_test

// A simulated archive for the reconcile tests. Works are posted, edited and
// deleted on both paths through the poster's own posting transaction
// (package postertest); the new path's announced events wait in a topic of
// the archive's until the counter's own apply transaction
// (counter.ApplyBatch) applies them. Only injected drift is written by hand.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/reconcile"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations/testdb"
	"github.com/tagcount/tagcount/poster"
	"github.com/tagcount/tagcount/poster/postertest"
)

// reconcileArchive is one test's database, the works it has posted, and the
// events announced but not applied yet.
type reconcileArchive struct {
	t      testing.TB
	db     *testdb.DB
	reader *poster.Poster // reads works back, for edits
	tagSeq atomic.Int64

	mu    sync.Mutex
	refs  map[int64]tags.Ref // every tag the archive created, by id
	works []int64            // posted works, for edits and deletes to pick from
	topic []counter.Event    // announced, not yet applied
	// announced is signalled (without blocking) on every announcement.
	announced chan struct{}
}

func newReconcileArchive(t testing.TB) *reconcileArchive {
	t.Helper()
	db := testdb.New(t)
	return &reconcileArchive{t: t, db: db, reader: postertest.New(t, poster.Config{DB: db.DB, Logger: reconcileQuietLogger()}),
		refs: map[int64]tags.Ref{}, announced: make(chan struct{}, 1)}
}

// newSettledReconcileArchive returns a new archive with n freeform tags
// (ascending ids, and no other tag) and posts works on them, settled: every
// count right and nothing pending.
func newSettledReconcileArchive(t testing.TB, n, posts int) (*reconcileArchive, []int64) {
	t.Helper()
	a := newReconcileArchive(t)
	tags := a.tags(n, tags.TypeFreeform)
	a.settle(context.Background(), posts, tags)
	return a, tags
}

// tags creates n tags of type typ and returns their ids in ascending order.
func (a *reconcileArchive) tags(n int, typ string) []int64 {
	a.t.Helper()
	refs := make([]tags.Ref, n)
	for i := range refs {
		refs[i] = tags.NewRef(typ, fmt.Sprintf("%s %d", typ, a.tagSeq.Add(1)))
	}
	return a.tagsNamed(refs...)
}

// tagsNamed creates the tags refs (through the counter's tag resolver, as a
// post does) and returns their ids in ascending order.
func (a *reconcileArchive) tagsNamed(refs ...tags.Ref) []int64 {
	a.t.Helper()
	crefs := make([]tags.Ref, len(refs))
	for i, r := range refs {
		crefs[i] = r
	}
	ids, err := tags.NewResolver(a.db.DB).Resolve(context.Background(), crefs)
	if err != nil {
		a.t.Fatalf("create tags: %v", err)
	}
	a.mu.Lock()
	for i, id := range ids {
		a.refs[id] = refs[i]
	}
	a.mu.Unlock()
	ids = slices.Clone(ids)
	slices.Sort(ids)
	return ids
}

// content is a work carrying exactly the tags ids. The posting transaction
// needs no rating or fandom, so a settled archive's works carry only the
// tags under test.
func (a *reconcileArchive) content(title string, ids []int64) drafts.Content {
	a.mu.Lock()
	defer a.mu.Unlock()
	refs := make([]tags.Ref, len(ids))
	for i, id := range ids {
		refs[i] = a.refs[id]
	}
	return postertest.Content(title, refs...)
}

// opts are the builders' options for a path; every work has one author.
func reconcileOpts(legacy bool) *postertest.Opts {
	if legacy {
		return &postertest.Opts{Path: poster.PathLegacy}
	}
	return &postertest.Opts{Path: poster.PathNew}
}

// announce puts events in the topic, as the poster's announcer would.
func (a *reconcileArchive) announce(events []counter.Event) {
	if len(events) == 0 {
		return
	}
	a.mu.Lock()
	a.topic = append(a.topic, events...)
	a.mu.Unlock()
	select {
	case a.announced <- struct{}{}:
	default:
	}
}

func (a *reconcileArchive) remember(works []int64) {
	a.mu.Lock()
	a.works = append(a.works, works...)
	a.mu.Unlock()
}

// post posts a work using tags on one path. A legacy post may fail with a
// lock conflict (it bumps hot count rows); nothing is applied then.
func (a *reconcileArchive) post(ctx context.Context, legacy bool, tags []int64) (int64, error) {
	works, events, err := postertest.TryWorks(ctx, a.db.DB, []drafts.Content{a.content("a work", tags)}, reconcileOpts(legacy))
	a.announce(events)
	if err != nil {
		return 0, err
	}
	a.remember(works)
	return works[0], nil
}

// postAll posts contents in one posting transaction (bulk: a settled
// archive) and fails the test on an error. With remember, edits and deletes
// may pick the works later.
func (a *reconcileArchive) postAll(ctx context.Context, legacy bool, contents []drafts.Content, remember bool) {
	a.t.Helper()
	works, events := postertest.Works(ctx, a.t, a.db.DB, contents, reconcileOpts(legacy))
	a.announce(events)
	if remember {
		a.remember(works)
	}
}

func (a *reconcileArchive) randomWork() (int64, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.works) == 0 {
		return 0, false
	}
	return a.works[rand.IntN(len(a.works))], true
}

func (a *reconcileArchive) forget(work int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if i := slices.Index(a.works, work); i >= 0 {
		a.works[i] = a.works[len(a.works)-1]
		a.works = a.works[:len(a.works)-1]
	}
}

// edit replaces one of the work's tags among candidates by another candidate
// it does not have, as its author would: the poster emits -1 for the old tag
// and +1 for the new. It returns poster.ErrWorkNotFound when the work has
// been deleted.
func (a *reconcileArchive) edit(ctx context.Context, legacy bool, work int64, candidates []int64) error {
	w, err := a.reader.FindWorkByID(ctx, 1, work)
	if err != nil {
		return err
	}
	have := map[[2]string]bool{}
	for _, r := range w.Tags.List() {
		have[[2]string{r.Type, r.Key}] = true
	}
	var removable, addable []tags.Ref
	a.mu.Lock()
	for _, id := range candidates {
		r := a.refs[id]
		if have[[2]string{r.Type, r.Key}] {
			removable = append(removable, r)
		} else {
			addable = append(addable, r)
		}
	}
	a.mu.Unlock()
	if len(removable) == 0 || len(addable) == 0 {
		return nil
	}
	old, nu := removable[rand.IntN(len(removable))], addable[rand.IntN(len(addable))]
	refs := []tags.Ref{nu}
	for _, r := range w.Tags.List() {
		if r.Type != old.Type || r.Key != old.Key {
			refs = append(refs, r)
		}
	}
	events, err := postertest.Edit(ctx, a.db.DB, work, postertest.Content(w.Title, refs...), reconcileOpts(legacy))
	a.announce(events)
	return err
}

// remove deletes a posted work: each of its tags gets -1. It returns
// poster.ErrWorkNotFound when the work is already gone.
func (a *reconcileArchive) remove(ctx context.Context, legacy bool, work int64) error {
	events, err := postertest.Delete(ctx, a.db.DB, work, reconcileOpts(legacy))
	a.announce(events)
	if err == nil {
		a.forget(work)
	}
	return err
}

// apply applies up to limit announced events with the counter's apply
// transaction. held, if set, keeps the events of the tags it returns true
// for in the topic (the counter's deferred tiers). It returns the number of
// outbox rows applied.
func (a *reconcileArchive) apply(ctx context.Context, limit int, held func(tag int64) bool) (int, error) {
	a.mu.Lock()
	var take, keep []counter.Event
	for _, e := range a.topic {
		if len(take) < limit && (held == nil || !held(e.TagID)) {
			take = append(take, e)
		} else {
			keep = append(keep, e)
		}
	}
	a.topic = keep
	a.mu.Unlock()
	if len(take) == 0 {
		return 0, nil
	}
	res, err := counter.ApplyBatch(ctx, a.db.DB, postertest.EventIDs(take))
	if err != nil {
		a.announce(take) // applied nothing: still owed
		return 0, err
	}
	return res.Applied, nil
}

// drain applies every announced event, then checks the outbox is empty: the
// poster announced every row it committed.
func (a *reconcileArchive) drain(ctx context.Context) {
	a.t.Helper()
	for {
		a.mu.Lock()
		left := len(a.topic)
		a.mu.Unlock()
		if left == 0 {
			break
		}
		if _, err := a.apply(ctx, 5000, nil); err != nil {
			a.t.Fatalf("drain outbox: %v", err)
		}
	}
	total, _, err := counter.OutboxDepth(ctx, a.db.DB, 0)
	if err != nil {
		a.t.Fatalf("outbox depth: %v", err)
	}
	if total != 0 {
		a.t.Fatalf("after applying every announced event, %d outbox rows are left: committed but never announced", total)
	}
}

// states returns every tag's terms of the conservation identity (the
// reconcile's own snapshot), by tag id.
func (a *reconcileArchive) states() map[int64]reconcile.TagState {
	a.t.Helper()
	m := map[int64]reconcile.TagState{}
	if err := reconcile.Walk(context.Background(), a.db.DB, func(st reconcile.TagState) { m[st.TagID] = st }); err != nil {
		a.t.Fatalf("walk tags: %v", err)
	}
	return m
}

// settle posts works on both paths (a third on the legacy one) and drains
// the outbox, so every count is right and nothing is pending.
func (a *reconcileArchive) settle(ctx context.Context, posts int, tags []int64) {
	a.t.Helper()
	var legacy, fresh []drafts.Content
	for i := 0; i < posts; i++ {
		c := a.content(fmt.Sprintf("work %d", i), []int64{tags[i%len(tags)], tags[(i*7+3)%len(tags)]})
		if i%3 == 0 {
			legacy = append(legacy, c)
		} else {
			fresh = append(fresh, c)
		}
	}
	for _, batch := range []struct {
		legacy   bool
		contents []drafts.Content
	}{{true, legacy}, {false, fresh}} {
		if len(batch.contents) > 0 {
			a.postAll(ctx, batch.legacy, batch.contents, true)
		}
	}
	a.drain(ctx)
}

// tagCountsSnapshot returns every tag_counts row as text, to compare before
// and after something that must not write.
func (a *reconcileArchive) tagCountsSnapshot() string {
	a.t.Helper()
	rows, err := a.db.Query("SELECT tag_id, count, updated_at FROM tag_counts ORDER BY tag_id")
	if err != nil {
		a.t.Fatal(err)
	}
	defer rows.Close()
	var sb strings.Builder
	for rows.Next() {
		var id, n int64
		var at time.Time
		if err := rows.Scan(&id, &n, &at); err != nil {
			a.t.Fatal(err)
		}
		fmt.Fprintf(&sb, "%d=%d@%s\n", id, n, at.Format(time.RFC3339Nano))
	}
	return sb.String()
}

// correctionStamps returns, in order, the updated_at of every tag_counts row
// written since since: when the database applied each correction.
func (a *reconcileArchive) correctionStamps(since time.Time) []time.Time {
	a.t.Helper()
	rows, err := a.db.Query("SELECT updated_at FROM tag_counts WHERE updated_at >= ? ORDER BY updated_at", since)
	if err != nil {
		a.t.Fatal(err)
	}
	defer rows.Close()
	var stamps []time.Time
	for rows.Next() {
		var at time.Time
		if err := rows.Scan(&at); err != nil {
			a.t.Fatal(err)
		}
		stamps = append(stamps, at)
	}
	return stamps
}

// shift adds delta to a tag's stored count: an injected drift of -delta,
// the fault under test, so written by hand.
func (a *reconcileArchive) shift(tag, delta int64) {
	a.t.Helper()
	if _, err := a.db.Exec("INSERT INTO tag_counts (tag_id, count) VALUES (?, ?) ON DUPLICATE KEY UPDATE count = count + ?", tag, delta, delta); err != nil {
		a.t.Fatalf("inject drift: %v", err)
	}
}
