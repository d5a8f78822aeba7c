package poster

import (
	"context"
	"errors"

	"github.com/tagcount/tagcount/drafts"
)

// PostContent is the bare new-path posting transaction with no HTTP and no
// queue: it stores c as a draft of author and posts it at once. The load
// generator uses it to measure the machine's ceiling.
func (p *Poster) PostContent(ctx context.Context, authorID int64, c drafts.Content) error {
	_, err := p.PostContents(ctx, authorID, PathNew, []drafts.Content{c})
	return err
}

// PostContents stores each of contents as a draft of author, queued, and
// posts them all in one posting transaction on path (PathNew or
// PathLegacy), with no HTTP and no job queue: a bulk import, and the test
// builders' way to make works through the real posting transaction. It
// returns the work ids in order, or the first error.
func (p *Poster) PostContents(ctx context.Context, authorID int64, path string, contents []drafts.Content) ([]int64, error) {
	ids, err := p.drafts.CreateQueued(ctx, authorID, contents)
	if err != nil {
		return nil, err
	}
	reqs := make([]request, len(ids))
	for i, id := range ids {
		reqs[i] = request{draftID: id, requireQueued: true}
	}
	works := make([]int64, len(contents))
	for i, o := range p.sync(ctx, p.cfg.JobDB, path, reqs) {
		if o.err != nil {
			return nil, o.err
		}
		works[i] = o.res.WorkID
	}
	return works, nil
}

// SyncDrafts does what the posting job does for each queued draft of ids:
// it posts it, applies its edit or deletes it, on the new path, in one
// transaction. Drafts that are not queued are left alone. It returns the
// first error.
func (p *Poster) SyncDrafts(ctx context.Context, ids ...int64) error {
	reqs := make([]request, len(ids))
	for i, id := range ids {
		reqs[i] = request{draftID: id, requireQueued: true}
	}
	for _, o := range p.sync(ctx, p.cfg.JobDB, PathNew, reqs) {
		if o.err != nil && !errors.Is(o.err, errDraftGone) {
			return o.err
		}
	}
	return nil
}
