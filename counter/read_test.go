package counter

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tagcount/tagcount/migrations/testdb"
)

// readRig is a Reader on a test's own database with a test clock.
type readRig struct {
	*rig
	clock *testClock
	r     *Reader
}

func newReadRig(t *testing.T) *readRig {
	g := newRig(t)
	clock := newTestClock()
	r, err := NewReader(ReaderConfig{DB: g.db.DB, Now: clock.Now, RefreshEvery: 10 * time.Millisecond, Logger: testLogger(),
		Registerer: g.reg})
	if err != nil {
		t.Fatal(err)
	}
	return &readRig{rig: g, clock: clock, r: r}
}

func (rr *readRig) read(id int64) TagCount {
	rr.t.Helper()
	tcs, err := rr.r.Counts(context.Background(), []int64{id})
	if err != nil || len(tcs) != 1 {
		rr.t.Fatalf("Counts(%d) = %v, %v", id, tcs, err)
	}
	return tcs[0]
}

func TestReadTagByID(t *testing.T) {
	t.Parallel()
	rr := newReadRig(t)
	tag := rr.createTags(1, "fandom")[0]
	rr.setCount(tag, 7)

	got := rr.read(tag)
	want := TagCount{ID: tag, Name: "Fandom Tag 0", Type: "fandom", Count: 7, Tier: TierSmall, AsOf: rr.clock.Now()}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	// A small tag is never served stale.
	rr.setCount(tag, 8)
	if got := rr.read(tag); got.Count != 8 {
		t.Errorf("small tag served stale: count %d, want 8", got.Count)
	}
}

func TestReadTagWithoutCountRowIsZero(t *testing.T) {
	t.Parallel()
	rr := newReadRig(t)
	tag := rr.createTags(1, "character")[0]
	if got := rr.read(tag); got.Count != 0 || got.Tier != TierSmall {
		t.Errorf("%+v; want count 0, small", got)
	}
}

func TestReadUnknownTagIsLeftOut(t *testing.T) {
	t.Parallel()
	rr := newReadRig(t)
	ctx := context.Background()
	if tcs, err := rr.r.Counts(ctx, []int64{999999}); err != nil || len(tcs) != 0 {
		t.Errorf("Counts(unknown) = %v, %v; want none", tcs, err)
	}
	if _, ok, err := rr.r.CountByKey(ctx, "fandom", "nope"); err != nil || ok {
		t.Errorf("CountByKey(unknown) = %v, %v; want not found", ok, err)
	}
}

func TestReadTagByKey(t *testing.T) {
	t.Parallel()
	rr := newReadRig(t)
	tag := rr.createTags(1, "relationship")[0]
	rr.setCount(tag, 3)
	got, ok, err := rr.r.CountByKey(context.Background(), "relationship", "relationship tag 0")
	if err != nil || !ok {
		t.Fatalf("CountByKey = %v, %v", ok, err)
	}
	if got.ID != tag || got.Count != 3 || got.Name != "Relationship Tag 0" {
		t.Errorf("got %+v", got)
	}
}

func TestReadManyTags(t *testing.T) {
	t.Parallel()
	rr := newReadRig(t)
	tags := rr.createTags(3, "freeform")
	rr.setCount(tags[0], 5)
	rr.setCount(tags[2], 50_000)
	got, err := rr.r.Counts(context.Background(), []int64{tags[2], tags[0], 999999, tags[1], tags[0]})
	if err != nil {
		t.Fatal(err)
	}
	var summary []string
	for _, tc := range got {
		summary = append(summary, fmt.Sprintf("%d:%d:%s", tc.ID, tc.Count, tc.Tier))
	}
	want := fmt.Sprintf("%d:50000:large %d:5:small %d:0:small", tags[2], tags[0], tags[1])
	if strings.Join(summary, " ") != want {
		t.Errorf("got %v, want %s (asked order, unknown left out, each once)", summary, want)
	}
}

func TestReadCacheFollowsTiers(t *testing.T) {
	t.Parallel()
	rr := newReadRig(t)
	tags := rr.createTags(2, "fandom")
	medium, large := tags[0], tags[1]
	rr.setCount(medium, 1_000) // interval 3 min
	rr.setCount(large, 40_000) // 30 min, refreshed after 24 min
	ctx := context.Background()
	read := rr.read
	first := read(medium)
	read(large)
	rr.setCount(medium, 1_500)
	rr.setCount(large, 41_000)

	rr.clock.Advance(2 * time.Minute)
	if got := read(medium); got.Count != 1_000 || !got.AsOf.Equal(first.AsOf) {
		t.Errorf("medium within its interval: %+v, want the cached 1000 as of %s", got, first.AsOf)
	}
	rr.clock.Advance(time.Minute + time.Second)
	if got := read(medium); got.Count != 1_500 {
		t.Errorf("medium after its interval: count %d, want 1500 read through", got.Count)
	}

	// Past the refresh point a reader still gets the cached count at once
	// and the refresh happens behind it.
	rr.clock.Advance(22 * time.Minute) // 25 min after the first read
	if got := read(large); got.Count != 40_000 {
		t.Errorf("large before expiry: count %d, want the cached 40000", got.Count)
	}
	testdb.WaitFor(t, 10*time.Second, "the background refresh", func() bool { return read(large).Count == 41_000 })

	// Reader.Run refreshes without any reader.
	rr.setCount(large, 42_000)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stopped atomic.Bool
	go func() { rr.r.Run(runCtx); stopped.Store(true) }()
	rr.clock.Advance(25 * time.Minute)
	testdb.WaitFor(t, 10*time.Second, "Run's refresh", func() bool {
		rr.r.mu.Lock()
		defer rr.r.mu.Unlock()
		c := rr.r.byID[large]
		return c != nil && c.tc.Count == 42_000
	})
	cancel()
	testdb.WaitFor(t, 5*time.Second, "Run to return", stopped.Load)
}

// TestSeenByShowsAnAuthorOnlyTagsInUseAndAnAdminEveryTag: without a way to
// ask which works use a tag, an author sees the tags whose numbers are
// above 0, in order, and an admin every tag.
func TestSeenByShowsAnAuthorOnlyTagsInUseAndAnAdminEveryTag(t *testing.T) {
	t.Parallel()
	r := &Reader{} // SeenBy reads nothing without WorkUses
	tcs := []TagCount{{ID: 3, Count: 2}, {ID: 1}, {ID: 2, FilterCount: 1}, {ID: 4, PublicCount: 0}}
	for _, tc := range []struct {
		v    Viewer
		want []int64
	}{
		{Viewer{AuthorID: 7}, []int64{3, 2}},
		{Viewer{AuthorID: 1, Admin: true}, []int64{3, 1, 2, 4}},
	} {
		got, err := r.SeenBy(context.Background(), tc.v, tcs)
		var ids []int64
		for _, g := range got {
			ids = append(ids, g.ID)
		}
		if err != nil || !slices.Equal(ids, tc.want) {
			t.Errorf("SeenBy(%+v) = %v, %v; want %v", tc.v, ids, err, tc.want)
		}
	}
}
