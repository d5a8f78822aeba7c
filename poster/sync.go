package poster

import (
	"context"
	"database/sql"
	"errors"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/loop"
)

// request is one draft whose work is to be made to match it.
type request struct {
	draftID       int64
	authorID      int64           // when non-zero, the draft must be this author's (else drafts.ErrNotFound)
	content       *drafts.Content // when set, written to the draft in the same transaction (a legacy edit)
	delete        bool            // delete the work and its draft (a legacy delete)
	post          bool            // a Post: nothing to do once the draft is posted
	requireQueued bool            // a job: nothing to do unless the draft is queued
}

// outcome is what syncing one request did.
type outcome struct {
	res Result
	err error
}

// errDraftGone means the draft no longer exists (its work was deleted).
var errDraftGone = errors.New("draft no longer exists")

// errVersionMoved means the draft changed between reading its content and
// locking it; the request is read again.
var errVersionMoved = errors.New("draft changed meanwhile")

// maxLockRetries bounds how often the new path's transaction is tried
// again after a deadlock or lock wait timeout before the error is returned.
const maxLockRetries = 5

// maxVersionRetries bounds how often a request whose draft keeps changing is
// read again.
const maxVersionRetries = 5

// syncOne syncs one request; see sync.
func (p *Poster) syncOne(ctx context.Context, db *migrations.DB, path string, r request) (Result, error) {
	o := p.sync(ctx, db, path, []request{r})[0]
	return o.res, o.err
}

// sync makes the work of each request's draft match the draft's content, or
// deletes it, in one transaction on db (the posting transaction: the drafts
// rows, the works and taggings, and the count update — the outbox on the
// new path, tag_counts bumps on the legacy one — commit together), and
// returns one outcome per request, in order. Drafts that changed meanwhile
// are read again; when the transaction fails for a reason that may be one
// draft's (not a lock conflict, nor a transient error every draft would
// meet: the database down or busy, a privilege missing), each request is
// tried alone, so one draft that cannot be posted does not fail the others.
// A transient error fails the whole batch at once, so each job learns it
// within one transaction and is retried, rather than after a transaction
// per draft of a batch that cannot succeed.
func (p *Poster) sync(ctx context.Context, db *migrations.DB, path string, reqs []request) []outcome {
	out := make([]outcome, len(reqs))
	todo := make([]int, len(reqs))
	for i := range todo {
		todo[i] = i
	}
	for attempt := 0; len(todo) > 0; attempt++ {
		// One request per draft per transaction: a second one (a later
		// version's job) goes in the next round, after the first committed.
		var later []int
		todo, later = uniqueDrafts(reqs, todo)
		batch := make([]request, len(todo))
		for k, i := range todo {
			batch[k] = reqs[i]
		}
		res, err := p.syncBatch(ctx, db, path, batch)
		if migrations.IsLockConflict(err) && path == PathNew && attempt < maxLockRetries {
			// The new path takes no lock another author's transaction holds
			// for long; a conflict (a deadlock with a legacy transaction on
			// the same draft, a tag's index page) is tried again at once.
			// The legacy path answers it as the baseline always did.
			if loop.Sleep(ctx, time.Duration(1+rand.IntN(10*(attempt+1)))*time.Millisecond) == nil {
				continue
			}
		}
		if err != nil && len(batch) > 1 && !transient(err) && ctx.Err() == nil {
			for k, i := range todo {
				r, err := p.syncOne(ctx, db, path, batch[k])
				out[i] = outcome{r, err}
			}
			return out
		}
		again := later
		for k, i := range todo {
			o := outcome{err: err}
			if err == nil {
				o = res[k]
			}
			if errors.Is(o.err, errVersionMoved) && attempt < maxVersionRetries+len(reqs) {
				again = append(again, i)
				continue
			}
			out[i] = o
		}
		todo = again
	}
	return out
}

// uniqueDrafts splits todo (indexes into reqs) into the first request of
// each draft and the rest.
func uniqueDrafts(reqs []request, todo []int) (first, rest []int) {
	seen := make(map[int64]bool, len(todo))
	for _, i := range todo {
		if seen[reqs[i].draftID] {
			rest = append(rest, i)
			continue
		}
		seen[reqs[i].draftID] = true
		first = append(first, i)
	}
	return first, rest
}

// plan is one request as the transaction sees it.
type plan struct {
	idx     int // of the request in its batch
	req     request
	content drafts.Content
	tagIDs  []int64
	version int64     // the version read with the content; 0 when the request carries it
	queued  time.Time // when the draft was queued, if it was
	lock    drafts.Lock
	workID  int64
	delete  bool
	now     *workState // what the work will be (unless deleted)
	deltas  []counter.Delta
}

// syncBatch runs the posting transaction once for reqs. It returns a
// transaction-wide error (nothing was written) or one outcome per request;
// an outcome holding errVersionMoved wrote nothing for its request.
func (p *Poster) syncBatch(ctx context.Context, db *migrations.DB, path string, reqs []request) ([]outcome, error) {
	plans, out, err := p.prepare(ctx, reqs)
	if err != nil {
		return nil, err
	}
	var writes []*plan
	err = p.commitAndAnnounce(ctx, db, path, func(ctx context.Context, tx *sql.Tx) ([]counter.Event, error) {
		if writes, err = p.lockAndDecide(ctx, tx, plans, out); err != nil {
			return nil, err
		}
		events, err := p.write(ctx, db, tx, path, writes)
		stampRequestIDs(ctx, writes, events)
		return events, err
	})
	if err != nil {
		return nil, err
	}
	now := time.Now()
	for _, pl := range writes {
		if path == PathNew && !pl.queued.IsZero() {
			p.metrics.queuedFor.Observe(now.Sub(pl.queued).Seconds())
		}
		i := pl.idx
		out[i] = outcome{res: Result{State: drafts.StatePosted, Path: path, WorkID: pl.workID, DraftID: pl.req.draftID}}
		if pl.delete {
			out[i].res.State = StateDeleted
		}
	}
	return out, nil
}

// prepare reads the content of the requests that carry none and resolves
// the tags of every request whose author owns its draft, before the
// transaction: tag creation must not run
// while the transaction holds a pooled connection and locks. Requests whose
// draft is gone get their outcome at once.
func (p *Poster) prepare(ctx context.Context, reqs []request) ([]*plan, []outcome, error) {
	out := make([]outcome, len(reqs))
	var read []int64
	for _, r := range reqs {
		if r.content == nil {
			read = append(read, r.draftID)
		}
	}
	contents, err := p.drafts.ReadContents(ctx, read)
	if err != nil {
		return nil, nil, err
	}
	plans := make([]*plan, 0, len(reqs))
	var refs []tags.Ref
	for i, r := range reqs {
		pl := &plan{idx: i, req: r}
		v, ok := contents[r.draftID]
		switch {
		case r.content != nil:
			pl.content = *r.content
		case ok && (r.authorID == 0 || v.AuthorID == r.authorID):
			pl.content, pl.version, pl.queued = v.Content, v.Version, v.QueuedAt
		default:
			// Gone, or another author's: its tags are neither read nor
			// created (audit finding 21.1), and lockAndDecide checks the
			// author again under the lock.
			out[i] = outcome{err: goneError(r)}
			continue
		}
		refs = append(refs, tagRefs(pl.content)...)
		plans = append(plans, pl)
	}
	ids, err := p.tags.Resolve(ctx, refs)
	if err != nil {
		return nil, nil, err
	}
	for _, pl := range plans {
		n := len(tagRefs(pl.content))
		pl.tagIDs, ids = ids[:n], ids[n:]
	}
	return plans, out, nil
}

// goneError is what a request learns when its draft does not exist: an
// author's request is told it is not found; a job has nothing left to do.
func goneError(r request) error {
	if r.authorID != 0 {
		return drafts.ErrNotFound
	}
	return errDraftGone
}

// tagRefs lists c's tags as the counter names them.
func tagRefs(c drafts.Content) []tags.Ref {
	list := c.Tags.List()
	refs := make([]tags.Ref, len(list))
	for i, t := range list {
		refs[i] = t
	}
	return refs
}

// lockAndDecide locks the drafts of plans and decides, for each, whether it
// is written (returned), or answered at once in out (not the author's,
// changed meanwhile, nothing to do).
func (p *Poster) lockAndDecide(ctx context.Context, tx *sql.Tx, plans []*plan, out []outcome) ([]*plan, error) {
	ids := make([]int64, len(plans))
	for i, pl := range plans {
		ids[i] = pl.req.draftID
	}
	slices.Sort(ids)
	locks, err := p.drafts.LockForSync(ctx, tx, slices.Compact(ids))
	if err != nil {
		return nil, err
	}
	var writes []*plan
	for _, pl := range plans {
		i := pl.idx
		l, ok := locks[pl.req.draftID]
		switch {
		case !ok || (pl.req.authorID != 0 && l.AuthorID != pl.req.authorID):
			out[i] = outcome{err: goneError(pl.req)}
		case pl.req.content == nil && l.Version != pl.version:
			out[i] = outcome{err: errVersionMoved}
		case pl.req.requireQueued && l.State != drafts.StateQueued,
			pl.req.post && l.State == drafts.StatePosted && !l.DeleteRequested:
			out[i] = outcome{res: Result{State: l.State, WorkID: l.WorkID, DraftID: pl.req.draftID}}
		default:
			pl.lock, pl.workID = l, l.WorkID
			pl.delete = pl.req.delete || l.DeleteRequested
			writes = append(writes, pl)
		}
	}
	return writes, nil
}

// write makes the works of plans match (or deletes them) in tx, marks their
// drafts, and writes the count update of the path; it returns the events to
// announce after commit.
func (p *Poster) write(ctx context.Context, db *migrations.DB, tx *sql.Tx, path string, plans []*plan) ([]counter.Event, error) {
	if len(plans) == 0 {
		return nil, nil
	}
	if err := p.writeWorks(ctx, db, tx, plans); err != nil {
		return nil, err
	}
	var deltas []counter.Delta
	for _, pl := range plans {
		deltas = append(deltas, pl.deltas...)
	}
	return p.countChange(ctx, tx, path, deltas)
}
