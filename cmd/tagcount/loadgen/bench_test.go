package loadgen

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"
)

// BenchmarkWorkloadWork is the generator's hot loop: one work slot's
// contents, edits and later action.
func BenchmarkWorkloadWork(b *testing.B) {
	w := mustWorkload(b, WorkloadOptions{Seed: 1})
	b.ReportAllocs()
	var slot int64
	for b.Loop() {
		w.Work(slot)
		slot++
	}
}

// BenchmarkWorkloadWorkJSON adds encoding the two request bodies a work
// sends before it is posted, as the load loop does.
func BenchmarkWorkloadWorkJSON(b *testing.B) {
	w := mustWorkload(b, WorkloadOptions{Seed: 1})
	b.ReportAllocs()
	var slot int64
	for b.Loop() {
		wk := w.Work(slot)
		if _, err := json.Marshal(wk.Draft); err != nil {
			b.Fatal(err)
		}
		if _, err := json.Marshal(wk.Posted); err != nil {
			b.Fatal(err)
		}
		slot++
	}
}

// BenchmarkZipfRank draws one freeform rank from the default vocabulary.
func BenchmarkZipfRank(b *testing.B) {
	z, err := newZipf(DefaultVocabulary.Freeforms, DefaultVocabulary.Exponent, 1)
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	b.ReportAllocs()
	for b.Loop() {
		z.rank(r)
	}
}

// BenchmarkRecorderLatency is recording one request's latency, under
// contention from all procs.
func BenchmarkRecorderLatency(b *testing.B) {
	rec := newRecorder(time.Now())
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rec.latency(OpPost, 1500_000, time.Now())
		}
	})
}
