package reconcile

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/poster"
)

// TagState is one tag's terms of the conservation identity, read in one
// consistent snapshot, for each of its four numbers (count: works
// logged-in readers see; public: works anyone sees; and the same two of the
// works filed under the tag):
//
//	Works = Stored + Pending
//
// where Works counts the posted, unhidden works using the tag (and the
// public ones among them) and those filed under it (work_filters, each
// work once), Stored is its tag_counts row (0 without one) and Pending the
// sum of its outbox deltas.
type TagState struct {
	TagID   int64
	Works   counter.Sum
	Stored  counter.Sum
	HasRow  bool
	Pending counter.Sum
}

// truth is what the stored numbers should be: the works less what is
// still pending.
func (s TagState) truth() counter.Sum { return s.Works.Sub(s.Pending) }

// Drift is how far the identity fails, for each number: positive when the
// stored number is too low.
func (s TagState) Drift() counter.Sum { return s.Works.Sub(s.Stored).Sub(s.Pending) }

// readSnapshot reads the terms of tags ids (ascending) in one consistent,
// non-locking snapshot on conn (posting and flushing never wait on it),
// the works' sides in n work-id slices, each a statement of its own, all
// in the one snapshot: a tag with millions of uses is then never one
// statement that runs past the driver's read timeout.
func readSnapshot(ctx context.Context, conn *sql.Conn, ids []int64, n int) (states []TagState, err error) {
	if len(ids) == 0 {
		return nil, nil
	}
	if _, err := conn.ExecContext(ctx, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	if _, err := conn.ExecContext(ctx, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	defer func() {
		end := "COMMIT"
		if err != nil {
			end = "ROLLBACK"
		}
		if _, e := conn.ExecContext(context.WithoutCancel(ctx), end); e != nil && err == nil {
			err = fmt.Errorf("snapshot: %s: %w", end, e)
		}
	}()
	// The four sides of the invariant, each summed by the package that owns
	// its tables, all inside the one snapshot.
	var works, filed, stored, pending map[int64]counter.Sum
	for _, side := range []struct {
		name string
		into *map[int64]counter.Sum
		read func(context.Context, migrations.Querier, int64, int64) (map[int64]counter.Sum, error)
	}{
		{"works", &works, sliced(n, poster.CountUses)},
		{"filters", &filed, sliced(n, poster.CountFilters)},
		{"stored", &stored, counter.StoredCounts},
		{"pending", &pending, counter.PendingDeltas},
	} {
		if *side.into, err = side.read(ctx, conn, ids[0], ids[len(ids)-1]); err != nil {
			return nil, fmt.Errorf("snapshot: %s: %w", side.name, err)
		}
	}
	states = make([]TagState, len(ids))
	for i, id := range ids {
		n, hasRow := stored[id]
		states[i] = TagState{TagID: id, Works: works[id].Add(filed[id]), Stored: n, HasRow: hasRow, Pending: pending[id]}
	}
	return states, nil
}

// sliced returns count summed over n equal slices of the work ids posted
// in the snapshot (the last slice open-ended), or count over every work
// for n of 1.
func sliced(n int, count func(context.Context, migrations.Querier, int64, int64, poster.WorkRange) (map[int64]counter.Sum, error),
) func(context.Context, migrations.Querier, int64, int64) (map[int64]counter.Sum, error) {
	return func(ctx context.Context, q migrations.Querier, lo, hi int64) (map[int64]counter.Sum, error) {
		if n <= 1 {
			return count(ctx, q, lo, hi, poster.AllWorks)
		}
		last, err := poster.LastWorkID(ctx, q)
		if err != nil {
			return nil, err
		}
		out := map[int64]counter.Sum{}
		step := last/int64(n) + 1
		for from := int64(0); from <= last; from += step {
			works := poster.WorkRange{From: from, To: from + step - 1}
			if works.To >= last {
				works.To = poster.AllWorks.To
			}
			part, err := count(ctx, q, lo, hi, works)
			if err != nil {
				return nil, err
			}
			for id, s := range part {
				out[id] = out[id].Add(s)
			}
		}
		return out, nil
	}
}

// Walk reads the terms of every tag, chunk by chunk (each chunk one
// snapshot), and calls fn with each. Tests and the load generator use it as
// the independent recount: on a quiet system every tag's drift is 0.
func Walk(ctx context.Context, db *migrations.DB, fn func(TagState)) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	var after int64
	for {
		ids, uses, last, err := chunkAfter(ctx, conn, "", after, DefaultChunkSize, DefaultChunkUses)
		if err != nil || len(ids) == 0 {
			return err
		}
		states, err := readSnapshot(ctx, conn, ids, slicesFor(ids, uses, DefaultChunkUses))
		if err != nil {
			return err
		}
		for _, st := range states {
			fn(st)
		}
		if last {
			return nil
		}
		after = ids[len(ids)-1]
	}
}

// Drifted returns every tag that breaks the conservation identity now (see
// Walk).
func Drifted(ctx context.Context, db *migrations.DB) ([]TagState, error) {
	var out []TagState
	err := Walk(ctx, db, func(st TagState) {
		if !st.Drift().IsZero() {
			out = append(out, st)
		}
	})
	return out, err
}
