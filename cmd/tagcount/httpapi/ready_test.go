package httpapi

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tagcount/tagcount/migrations/testdb"
)

func redisCheck(t *testing.T, addr string, optional bool) Check {
	c := testRedis(t, addr)
	return Check{Name: "redis", Optional: optional, Err: func(ctx context.Context) error { return c.Ping(ctx).Err() }}
}

// newAPIWithRedisDown returns an API whose readiness checks MySQL and a
// Redis (optional or required) that is down.
func newAPIWithRedisDown(t *testing.T, redisOptional bool) *testAPI {
	t.Helper()
	db := testdb.New(t)
	redis := testdb.StartRedis(t)
	redis.Stop()
	return newTestAPI(t, db, Edge{}, Check{Name: "mysql", Err: db.PingContext}, redisCheck(t, redis.Addr(), redisOptional))
}

func TestReadyzSaysDegradedNotUnreadyWhenAnOptionalDependencyIsDown(t *testing.T) {
	t.Parallel()
	api := newAPIWithRedisDown(t, true)

	res := api.do("GET", "/readyz", "", nil)
	checks, _ := res.Body["checks"].(map[string]any)
	if res.Status != http.StatusOK || res.Body["ready"] != true || res.Body["status"] != "degraded" ||
		checks["mysql"] != "ok" || checks["redis"] != "degraded" {
		t.Errorf("/readyz of an API whose Redis is down: %d %v; want 200 ready, degraded, redis degraded", res.Status, res.Body)
	}
	if raw := fmt.Sprint(res.Body); strings.Contains(raw, "127.0.0.1") || strings.Contains(raw, "refused") {
		t.Errorf("/readyz shows an address or an error to anyone: %s", raw)
	}
	if logs := api.Logs.String(); !strings.Contains(logs, "check=redis") || !strings.Contains(logs, "refused") {
		t.Errorf("the failing check's error is not in the logs:\n%s", logs)
	}

	health := api.do("GET", "/v1/admin/health", api.token(1, RoleAdmin), nil)
	redisHealth, _ := health.Body["checks"].(map[string]any)["redis"].(map[string]any)
	if health.Status != http.StatusOK || !strings.Contains(fmt.Sprint(redisHealth["error"]), "refused") || redisHealth["status"] != "degraded" {
		t.Errorf("/v1/admin/health: %d %v; want the redis check's error", health.Status, health.Body)
	}
	if res := api.do("GET", "/v1/admin/health", api.token(1, RoleAuthor), nil); res.Status != http.StatusForbidden {
		t.Errorf("/v1/admin/health for an author: %d; want 403", res.Status)
	}
}

func TestReadyzIsUnreadyWithRetryAfterWhenARequiredDependencyIsDown(t *testing.T) {
	t.Parallel()
	api := newAPIWithRedisDown(t, false)

	res := api.do("GET", "/readyz", "", nil)
	checks, _ := res.Body["checks"].(map[string]any)
	if res.Status != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" || res.Body["ready"] != false ||
		res.Body["status"] != "unready" || checks["redis"] != "down" || checks["mysql"] != "ok" {
		t.Errorf("/readyz of a worker whose Redis is down: %d %v; want 503 unready with Retry-After, redis down", res.Status, res.Body)
	}
}

func TestReadinessRunsItsChecksOncePerCacheWindow(t *testing.T) {
	t.Parallel()
	calls := 0
	rd := &readiness{checks: []Check{{Name: "counted", Err: func(context.Context) error { calls++; return nil }}},
		log: slog.New(slog.DiscardHandler), ttl: time.Hour}
	for range 5 {
		if ready, status := summary(rd.current(context.Background())); !ready || status != "ok" {
			t.Fatalf("readiness: %v %s", ready, status)
		}
	}
	if calls != 1 {
		t.Errorf("5 probes in one cache window ran the check %d times; want 1", calls)
	}
}
