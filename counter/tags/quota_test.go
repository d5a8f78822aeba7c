package tags_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/migrations/testdb"
)

func freeform(name string) tags.Ref {
	return tags.Ref{Type: tags.TypeFreeform, Name: name, Key: name}
}

func TestTheNewTagQuotaChargesEachNewNameOnceADayAndStartsOverAtMidnightUTC(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	rdb := redis.NewClient(&redis.Options{Addr: testdb.RequireRedis(t)})
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	res := tags.NewResolver(db.DB)
	if _, err := res.Resolve(ctx, []tags.Ref{freeform("old")}); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 23, 22, 0, 0, 0, time.UTC)
	q, err := tags.NewQuota(tags.QuotaConfig{Tags: res, Redis: rdb, PerDay: 3, Prefix: testdb.Queue(t) + ":",
		Timeout: time.Minute, Now: func() time.Time { return now }}) // not failing open on a busy machine
	if err != nil {
		t.Fatal(err)
	}

	charge := func(author int64, names ...string) error {
		refs := make([]tags.Ref, len(names))
		for i, n := range names {
			refs[i] = freeform(n)
		}
		return q.Charge(ctx, author, refs, nil)
	}
	if err := charge(1, "old", "a", "b", "a"); err != nil {
		t.Fatalf("an existing tag and two new ones, one listed twice: %v", err)
	}
	if err := charge(1, "a", "b"); err != nil {
		t.Fatalf("the same new names saved again: %v; they are charged once a day", err)
	}
	err = charge(1, "c", "d")
	var qe *tags.QuotaError
	if !errors.As(err, &qe) || !errors.Is(err, tags.ErrNewTagQuota) {
		t.Fatalf("two more new names with one left: %v; want a QuotaError", err)
	}
	if want := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC); qe.Used != 2 || qe.Asked != 2 || qe.Limit != 3 || !qe.RetryAt().Equal(want) {
		t.Errorf("quota error %+v; want 2 used, 2 asked, limit 3, reset at %v", qe, want)
	}
	if err := charge(1, "c"); err != nil {
		t.Fatalf("the last one left: %v (a refused save records nothing)", err)
	}
	if err := charge(2, "c", "d", "e"); err != nil {
		t.Fatalf("another author: %v; the quota is per author", err)
	}
	if _, err := res.Resolve(ctx, []tags.Ref{freeform("e")}); err != nil {
		t.Fatal(err)
	}
	if err := charge(1, "old", "e"); err != nil {
		t.Fatalf("tags that exist by now: %v; only new ones are charged", err)
	}
	now = now.Add(2 * time.Hour)
	if err := charge(1, "f", "g", "h"); err != nil {
		t.Fatalf("the next day: %v; the allowance starts over", err)
	}
}

func TestTheNewTagQuotaAllowsSavesWhenRedisIsDown(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	r := testdb.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr(), MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	reg := prometheus.NewRegistry()
	q, err := tags.NewQuota(tags.QuotaConfig{Tags: tags.NewResolver(db.DB), Redis: rdb, PerDay: 1,
		Registerer: reg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	r.Stop()
	refs := []tags.Ref{freeform("x"), freeform("y")}
	if err := q.Charge(context.Background(), 1, refs, nil); err != nil {
		t.Fatalf("a save over the quota with Redis down: %v; want it allowed (fail open)", err)
	}
	if n := metricValue(t, reg, "tagcount_quota_errors_total"); n != 1 {
		t.Errorf("tagcount_quota_errors_total = %v; want 1", n)
	}
}

func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
