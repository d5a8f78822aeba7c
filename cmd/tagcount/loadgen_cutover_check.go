package main

import (
	"context"
	"fmt"
	"time"

	"github.com/tagcount/tagcount/cmd/tagcount/archive"
	"github.com/tagcount/tagcount/cmd/tagcount/loadgen"
	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/reconcile"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/flags"
	"github.com/tagcount/tagcount/migrations/loop"
	"github.com/tagcount/tagcount/poster/postertest"
)

// converge quiets the service (the counters resumed, deferred tags flushed
// by turning tier deferral off, as the runbook's kill switch does), then
// compares every tag's four numbers with an independent recount, and the
// reconcile's corrections with the archive's drift manifest. A tag still
// wrong by exactly its injected drift, not corrected because the reconcile
// did not reach it, is counted apart: the reconcile's unfinished work, not
// a wrong count.
func (lg *loadgenSession) converge(ctx context.Context, st *stack, k *conductor, manifest []archive.Injected) *loadgen.Convergence {
	out := &loadgen.Convergence{Injected: len(manifest)}
	if k.reconTimeout {
		st.reconciler.Close() // the unfinished run stops (recorded as failed) before the recount
	}
	if err := lg.quiet(ctx, st); err != nil {
		out.Error = err.Error()
		return out
	}
	fmt.Fprintf(lg.stderr, "loadgen: %s: recounting every tag\n", lg.s.Scenario)
	wrong, n, err := postertest.Mismatches(ctx, st.DB)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	out.Tags = n
	corrected := map[int64]counter.Sum{}
	if k.reconID > 0 {
		if corrected, err = corrections(ctx, st.reconciler, k.reconID); err != nil {
			out.Error = err.Error()
			return out
		}
	}
	injected := make(map[int64]counter.Sum, len(manifest))
	for _, in := range manifest {
		injected[in.TagID] = in.Drift
	}
	for _, m := range wrong {
		_, fixed := corrected[m.TagID]
		if d, ok := injected[m.TagID]; ok && !fixed && m.Stored.Add(d) == m.Recounted {
			out.Unreached++ // drift the unfinished reconcile did not reach
			continue
		}
		out.WrongTags++
		if len(out.Examples) < 5 {
			out.Examples = append(out.Examples, fmt.Sprintf("tag %d: stored+pending %+v, recount %+v", m.TagID, m.Stored, m.Recounted))
		}
	}
	k.mu.Lock()
	done := k.reconID > 0 && k.reconEnded && !k.reconTimeout
	k.mu.Unlock()
	if done {
		out.Checked, out.Corrections = true, len(corrected)
		for tag, got := range corrected {
			if w, ok := injected[tag]; !ok || w != got {
				out.CorrectionMismatches++
			}
		}
		for tag := range injected {
			if _, ok := corrected[tag]; !ok {
				out.CorrectionMismatches++
			}
		}
	}
	return out
}

// quiet waits, up to --drain-timeout, for nothing to be owed: no queued
// draft, an empty outbox, with the counters resumed and every tag flushed
// each batch.
func (lg *loadgenSession) quiet(ctx context.Context, st *stack) error {
	if err := (counter.Control{DB: st.DB}).Resume(ctx, 0); err != nil {
		return fmt.Errorf("resuming the counters: %w", err)
	}
	if err := st.Flags.SetLocalRollout(flags.TierDeferral, 0); err != nil {
		return err
	}
	deadline := time.Now().Add(lg.s.DrainTimeout)
	for {
		queued, err := (&drafts.Store{DB: st.DB}).CountQueued(ctx)
		if err != nil {
			return err
		}
		pending, _, err := counter.OutboxDepth(ctx, st.DB, 0)
		if err != nil {
			return err
		}
		if queued == 0 && pending == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still %d queued drafts and %d outbox rows after --drain-timeout %v", queued, pending, lg.s.DrainTimeout)
		}
		if err := loop.Sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// corrections returns run's written corrections by tag: its drift of the
// four numbers.
func corrections(ctx context.Context, rec *reconcile.Reconciler, run int64) (map[int64]counter.Sum, error) {
	out := map[int64]counter.Sum{}
	for after := int64(0); ; {
		page, err := rec.Corrections(ctx, run, after, 1000)
		if err != nil {
			return nil, err
		}
		for _, c := range page {
			if !c.CorrectedAt.IsZero() {
				out[c.TagID] = c.Drift
			}
			after = c.TagID
		}
		if len(page) < 1000 {
			return out, nil
		}
	}
}
