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
// builders' way to make works through the real posting transaction. The
// contents pass the same validation and new-tag quota as the API's saves
// (drafts.Store.Admit). It returns the work ids in order, or the first
// error.
func (p *Poster) PostContents(ctx context.Context, authorID int64, path string, contents []drafts.Content) ([]int64, error) {
	ids, err := p.drafts.CreateQueued(ctx, authorID, contents)
	if err != nil {
		return nil, err
	}
	return p.PostQueued(ctx, path, ids...)
}

// PostQueued does what the posting job does for each queued draft of ids,
// in one posting transaction on path (PathNew or PathLegacy): it posts it,
// applies its edit or deletes it. Drafts that are not queued are left
// alone and drafts gone are skipped (work id 0). Their content is not
// admitted again: it was when it was stored (drafts.Store.Admit). It
// returns the work ids in order, or the first error.
func (p *Poster) PostQueued(ctx context.Context, path string, ids ...int64) ([]int64, error) {
	reqs := make([]request, len(ids))
	for i, id := range ids {
		reqs[i] = request{draftID: id, requireQueued: true}
	}
	works := make([]int64, len(ids))
	for i, o := range p.sync(ctx, p.cfg.JobDB, path, reqs) {
		if o.err != nil && !errors.Is(o.err, errDraftGone) {
			return nil, o.err
		}
		works[i] = o.res.WorkID
	}
	return works, nil
}
