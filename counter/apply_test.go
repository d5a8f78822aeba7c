package counter

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
)

func TestApplyBatchMovesDeltasFromOutboxToCountsOnce(t *testing.T) {
	t.Parallel()
	for name, o := range map[string]applyOpts{"returning": {}, "select for update": {portable: true}} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testApplyBatchOnce(t, o)
		})
	}
}

func testApplyBatchOnce(t *testing.T, o applyOpts) {
	r := newRig(t)
	tags := r.createTags(3, "fandom")
	ctx := context.Background()
	ev := r.outbox(tags[0], tags[1], tags[0], tags[0], tags[2])
	// A -1 for tags[2] cancels its +1: the row is deleted, the count not
	// written.
	minus, err := WriteOutbox(ctx, r.db.DB, r.db, []Delta{{WorkID: 1, TagID: tags[2], Delta: -1}})
	if err != nil {
		t.Fatal(err)
	}
	ids := []int64{minus[0].ID, 999_999} // 999999 does not exist
	for _, e := range ev {
		ids = append(ids, e.ID, e.ID) // and every id twice
	}
	res, err := applyBatch(ctx, r.db.DB, ids, o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Requested != len(ev)+2 || res.Applied != len(ev)+1 || res.Attempts != 1 {
		t.Errorf("result = %+v, want %d requested, %d applied, 1 attempt", res, len(ev)+2, len(ev)+1)
	}
	wantDeltas := map[int64]int64{tags[0]: 3, tags[1]: 1}
	if d := countDiff(wantDeltas, res.Deltas); d != "" {
		t.Errorf("deltas: %s", d)
	}
	if d := countDiff(wantDeltas, res.Counts); d != "" {
		t.Errorf("counts: %s", d)
	}
	if d := countDiff(wantDeltas, r.storedCounts()); d != "" {
		t.Errorf("stored counts: %s", d)
	}
	if n := r.outboxDepth(); n != 0 {
		t.Errorf("outbox depth %d, want 0", n)
	}

	// Applying the same ids again changes nothing.
	res, err = applyBatch(ctx, r.db.DB, ids, o)
	if err != nil || res.Applied != 0 || len(res.Deltas) != 0 {
		t.Errorf("second apply = %+v, %v; want nothing applied", res, err)
	}
	if d := countDiff(wantDeltas, r.storedCounts()); d != "" {
		t.Errorf("stored counts after the second apply: %s", d)
	}
}

func TestApplyTagsTakesEveryRowOfTheTagsInBoundedTransactions(t *testing.T) {
	t.Parallel()
	for name, o := range map[string]applyOpts{"returning": {byTag: true, limit: 40}, "select for update": {byTag: true, limit: 40, portable: true}} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			tags := r.createTags(3, "freeform")
			ctx := context.Background()
			var list []int64
			for range 50 {
				list = append(list, tags[0], tags[1])
			}
			r.outbox(append(list, tags[2])...) // tags[2] is not asked for
			want := map[int64]int64{}
			for round := 1; ; round++ {
				res, err := applyBatch(ctx, r.db.DB, tags[:2], o)
				if err != nil {
					t.Fatal(err)
				}
				if res.Applied > o.limit {
					t.Fatalf("round %d applied %d rows, over the limit %d", round, res.Applied, o.limit)
				}
				for tag, d := range res.Deltas {
					want[tag] += d
				}
				if !res.Full {
					break
				}
				if round > 10 {
					t.Fatal("the flush never finished")
				}
			}
			if d := countDiff(map[int64]int64{tags[0]: 50, tags[1]: 50}, r.storedCounts()); d != "" {
				t.Errorf("stored counts: %s", d)
			}
			if n := r.outboxDepth(); n != 1 {
				t.Errorf("outbox depth %d, want the one row of the tag not asked for", n)
			}
		})
	}
}

// BenchmarkApplyBatch measures the apply transaction alone: batches of
// 5,000 events over 2,000 tags (two hot tags in every ten events), with
// MariaDB's DELETE ... RETURNING and with the portable SELECT ... FOR UPDATE
// + DELETE, by event ids and by tags (as a writer flushes).
func BenchmarkApplyBatch(b *testing.B) {
	for name, o := range map[string]applyOpts{"returning": {}, "select-for-update": {portable: true},
		"by-tag-returning": {byTag: true, limit: 5000}} {
		b.Run(name, func(b *testing.B) { benchmarkApplyBatch(b, o) })
	}
}

func benchmarkApplyBatch(b *testing.B, o applyOpts) {
	r := newRig(b)
	tags := r.createTags(2000, "freeform")
	ctx := context.Background()
	const batch = 5000
	rng := rand.New(rand.NewPCG(1, 1))
	var total int
	for b.Loop() {
		b.StopTimer()
		list := make([]int64, batch)
		for i := range list {
			list[i] = tags[rng.IntN(len(tags))]
			if i%10 < 2 {
				list[i] = tags[i%10]
			}
		}
		ev := r.outbox(list...)
		keys := make([]int64, len(ev))
		for i, e := range ev {
			keys[i] = e.ID
			if o.byTag {
				keys[i] = e.TagID
			}
		}
		b.StartTimer()
		out, err := applyBatch(ctx, r.db.DB, keys, o)
		if err != nil {
			b.Fatal(err)
		}
		total += out.Applied
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "events/s")
}

// TestAFencedApplyAppliesNothingOnceThePauseHasReturned: a writer's apply
// reads the pause switch in its own transaction, so once Control.Pause has
// returned no apply takes a row, however stale the writer's view of the
// switches; after Resume the same apply takes them.
func TestAFencedApplyAppliesNothingOnceThePauseHasReturned(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	tags := r.createTags(2, "fandom")
	ctx := context.Background()
	r.outbox(tags[0], tags[1], tags[0])
	control := Control{DB: r.db.DB}
	if err := control.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	o := applyOpts{byTag: true, fenced: true}
	res, err := applyBatch(ctx, r.db.DB, tags, o)
	if !errors.Is(err, errPaused) || res.Applied != 0 || r.outboxDepth() != 3 {
		t.Fatalf("apply while paused = %+v, %v, outbox depth %d; want errPaused, nothing applied, 3 rows waiting", res, err, r.outboxDepth())
	}
	if err := control.Resume(ctx, 0); err != nil {
		t.Fatal(err)
	}
	res, err = applyBatch(ctx, r.db.DB, tags, o)
	if err != nil || res.Applied != 3 || r.outboxDepth() != 0 {
		t.Errorf("apply after the resume = %+v, %v, outbox depth %d; want 3 rows applied", res, err, r.outboxDepth())
	}
}
