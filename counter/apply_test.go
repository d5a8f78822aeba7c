package counter

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
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
	a := newArchive(t, archiveOpts{noBroker: true})
	tags := a.createTags(3, "fandom")
	ctx := context.Background()
	ev, err := a.post(ctx, [][]int64{{tags[0], tags[1]}, {tags[0]}, {tags[0], tags[2]}})
	if err != nil {
		t.Fatal(err)
	}
	// A -1 for tags[2] cancels its +1: the row is deleted, the count not
	// written.
	var minus int64
	res0, err := a.db.Exec("INSERT INTO tag_events (tag_id, delta, work_id) VALUES (?, -1, 1)", tags[2])
	if err != nil {
		t.Fatal(err)
	}
	minus, _ = res0.LastInsertId()

	ids := []int64{minus, 999_999} // 999999 does not exist
	for _, e := range ev {
		ids = append(ids, e.ID, e.ID) // and every id twice
	}
	res, err := applyBatch(ctx, a.db.DB, ids, o)
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
	if d := countDiff(wantDeltas, a.storedCounts()); d != "" {
		t.Errorf("stored counts: %s", d)
	}
	if n := a.outboxDepth(); n != 0 {
		t.Errorf("outbox depth %d, want 0", n)
	}

	// Applying the same ids again changes nothing.
	res, err = applyBatch(ctx, a.db.DB, ids, o)
	if err != nil || res.Applied != 0 || len(res.Deltas) != 0 {
		t.Errorf("second apply = %+v, %v; want nothing applied", res, err)
	}
	if d := countDiff(wantDeltas, a.storedCounts()); d != "" {
		t.Errorf("stored counts after the second apply: %s", d)
	}
}

func TestApplyBatchSpanningSeveralStatements(t *testing.T) {
	t.Parallel()
	a := newArchive(t, archiveOpts{noBroker: true})
	tags := a.createTags(50, "freeform")
	works := workload(rand.New(rand.NewPCG(3, 3)), 1500, tags[:2], tags[2:], 10)
	var ids []int64
	for i := 0; i < len(works); i += 100 {
		ev, err := a.post(context.Background(), works[i:i+100])
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ev {
			ids = append(ids, e.ID)
		}
	}
	if len(ids) <= applyChunk {
		t.Fatalf("only %d ids; the test needs more than one chunk", len(ids))
	}
	res, err := ApplyBatch(context.Background(), a.db.DB, ids)
	if err != nil {
		t.Fatal(err)
	}
	if res.Applied != len(ids) {
		t.Errorf("applied %d of %d", res.Applied, len(ids))
	}
	if d := countDiff(a.trueCounts(), a.storedCounts()); d != "" {
		t.Error(d)
	}
}

// BenchmarkApplyBatch measures the apply transaction alone: batches of
// 5,000 events over 2,000 tags (two hot tags in every ten events), with
// MariaDB's DELETE ... RETURNING and with the portable SELECT ... FOR UPDATE
// + DELETE.
func BenchmarkApplyBatch(b *testing.B) {
	for name, o := range map[string]applyOpts{"returning": {}, "select-for-update": {portable: true}} {
		b.Run(name, func(b *testing.B) { benchmarkApplyBatch(b, o) })
	}
}

func benchmarkApplyBatch(b *testing.B, o applyOpts) {
	a := newArchive(b, archiveOpts{noBroker: true})
	tags := a.createTags(2000, "freeform")
	ctx := context.Background()
	const batch = 5000
	r := rand.New(rand.NewPCG(1, 1))
	var total int
	for b.Loop() {
		b.StopTimer()
		// One batch of outbox rows, inserted directly.
		var sb strings.Builder
		sb.WriteString("INSERT INTO tag_events (tag_id, delta, work_id) VALUES ")
		for i := range batch {
			if i > 0 {
				sb.WriteByte(',')
			}
			tag := tags[r.IntN(len(tags))]
			if i%10 < 2 {
				tag = tags[i%10]
			}
			fmt.Fprintf(&sb, "(%d,1,%d)", tag, i/10+1)
		}
		res, err := a.db.Exec(sb.String())
		if err != nil {
			b.Fatal(err)
		}
		first, _ := res.LastInsertId()
		ids := make([]int64, batch)
		for i := range ids {
			ids[i] = first + int64(i)
		}
		b.StartTimer()
		out, err := applyBatch(ctx, a.db.DB, ids, o)
		if err != nil {
			b.Fatal(err)
		}
		total += out.Applied
	}
	b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "events/s")
}
