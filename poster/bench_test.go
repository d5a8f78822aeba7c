package poster_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/testdb"
	"github.com/tagcount/tagcount/poster"
	"github.com/tagcount/tagcount/poster/postertest"
)

// BenchmarkPostContent measures the bare new-path posting transaction (draft
// row plus the work, taggings and outbox transaction; no HTTP, no queue) with
// 64 concurrent posters and archive-like hot tags:
//
//	go test -run '^$' -bench PostContent -benchtime 5000x ./poster/
func BenchmarkPostContent(b *testing.B) {
	benchmarkPost(b, false)
}

// BenchmarkPostLegacy is the same with the legacy transaction, which bumps
// tag_counts in the order the author listed the tags.
func BenchmarkPostLegacy(b *testing.B) {
	benchmarkPost(b, true)
}

func benchmarkPost(b *testing.B, legacy bool) {
	db := testdb.New(b).DB
	p := postertest.New(b, poster.Config{DB: db, Paths: poster.FixedPath(!legacy)})
	store := &drafts.Store{DB: db}
	ctx := context.Background()
	var seq atomic.Uint64
	b.SetParallelism(32) // 64 goroutines on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(seq.Add(1), 1))
		for pb.Next() {
			c := benchWork(rng)
			if legacy {
				d, err := store.CreateDraft(ctx, 1, c)
				if err != nil {
					b.Error(err)
					return
				}
				if _, err := p.PostDraft(ctx, 1, d.ID); err != nil && !migrations.IsLockConflict(err) {
					b.Error(err)
					return
				}
				continue
			}
			if err := p.PostContent(ctx, 1, c); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "posts/s")
}

func benchWork(rng *rand.Rand) drafts.Content {
	c := drafts.Content{Title: "Bench", Body: "Text", Tags: drafts.Tags{
		Rating:   drafts.Ratings[rng.IntN(len(drafts.Ratings))],
		Warnings: []string{drafts.Warnings[rng.IntN(2)]},
		Fandoms:  []string{fmt.Sprintf("Fandom %d", rng.IntN(50))},
	}}
	for range 7 {
		c.Tags.Freeforms = append(c.Tags.Freeforms, fmt.Sprintf("Freeform %d", rng.IntN(5000)))
	}
	return c
}
