package poster

import (
	"context"
	"database/sql"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/migrations"
)

// txBeginner is what a transaction is begun on: a pool (*migrations.DB)
// or one connection (*sql.Conn, the wrangling runner's).
type txBeginner interface {
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

// writeTx is one transaction's writes: it returns the outbox rows' events
// to announce once the transaction commits.
type writeTx func(ctx context.Context, tx *sql.Tx) ([]counter.Event, error)

// commitAndAnnounce is the one way the poster writes: it runs write in a
// transaction on db (read committed on the new path: nothing there may
// wait on another author's gap lock), commits it with ctx's deadline
// (migrations.Commit), then stamps each event with the request id of its
// work's change and announces them. It returns write's error or the
// commit's; nothing is announced then.
func (p *Poster) commitAndAnnounce(ctx context.Context, db txBeginner, path string, write writeTx) error {
	opts := &sql.TxOptions{}
	if path == PathNew {
		opts.Isolation = sql.LevelReadCommitted
	}
	tx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	events, err := write(ctx, tx)
	if err != nil {
		return err
	}
	if err := migrations.Commit(ctx, tx); err != nil {
		return err
	}
	if len(events) > 0 && p.cfg.Announcer != nil {
		p.cfg.Announcer.Announce(ctx, events)
	}
	return nil
}

// countChange writes deltas as the path counts: bumps in the transaction on
// the legacy path, outbox rows (to announce after commit) on the new one.
// It is the posting transaction's count write; sync, hiding and wrangling
// call it.
func (p *Poster) countChange(ctx context.Context, tx migrations.Querier, path string, deltas []counter.Delta) ([]counter.Event, error) {
	if path == PathLegacy {
		return nil, counter.BumpCounts(ctx, tx, deltas)
	}
	return counter.WriteOutbox(ctx, p.cfg.DB, tx, deltas)
}
