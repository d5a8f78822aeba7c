package counter

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tagcount/tagcount/drafts/api"
)

// MaxBulkIDs is the most tag ids GET /v1/tags?ids= accepts.
const MaxBulkIDs = 1000

// TagCount is a tag's count as the read API returns it.
type TagCount struct {
	ID    int64  `json:"id"`
	Name  string `json:"name"`
	Type  string `json:"type"`
	Count int64  `json:"count"`
	Tier  string `json:"tier"`
	// AsOf is when the count was read from MySQL, RFC 3339 with
	// nanoseconds, UTC.
	AsOf string `json:"as_of"`
}

// tagCountsJSON is the body of a bulk read.
type tagCountsJSON struct {
	Tags []TagCount `json:"tags"`
}

// ReaderOption configures a Reader.
type ReaderOption func(*Reader)

// ReaderClock sets the Reader's clock (default time.Now).
func ReaderClock(now func() time.Time) ReaderOption { return func(r *Reader) { r.now = now } }

// ReaderLogger sets the Reader's logger (default slog.Default()).
func ReaderLogger(l *slog.Logger) ReaderOption { return func(r *Reader) { r.log = l } }

// ReaderRegisterer registers the Reader's cache metrics on reg.
func ReaderRegisterer(reg prometheus.Registerer) ReaderOption {
	return func(r *Reader) { r.reg = reg }
}

// ReaderCacheSize caps the cached tags (default 100,000); only medium and
// large tags are cached.
func ReaderCacheSize(n int) ReaderOption { return func(r *Reader) { r.maxEntries = n } }

// Reader serves tag counts with a cache whose lifetime follows the size
// tiers: a small tag is read from MySQL on every request (never stale), a
// medium tag is cached for its flush interval, and a large tag for the large
// interval, refreshed in the background before it expires so no reader waits
// on it.
type Reader struct {
	db         *sql.DB
	tiers      Tiers
	now        func() time.Time
	log        *slog.Logger
	reg        prometheus.Registerer
	maxEntries int

	mu     sync.Mutex
	byID   map[int64]*cachedCount
	byName map[[2]string]int64 // (type, name_key) → id, for cached tags

	hits, misses, refreshes *prometheus.CounterVec
}

type cachedCount struct {
	tc         TagCount
	nameKey    string
	expires    time.Time
	refreshAt  time.Time // large only; zero otherwise
	refreshing bool
}

// NewReader returns a Reader on db tiered by tiers (zero value: defaults).
func NewReader(db *sql.DB, tiers Tiers, opts ...ReaderOption) *Reader {
	r := &Reader{
		db:         db,
		tiers:      tiers.withDefaults(),
		now:        time.Now,
		log:        slog.Default(),
		maxEntries: 100_000,
		byID:       make(map[int64]*cachedCount),
		byName:     make(map[[2]string]int64),
	}
	for _, o := range opts {
		o(r)
	}
	r.log = r.log.With("component", "count-reader")
	r.hits = metricCounterVec(r.reg, "tagcount_read_cache_hits_total", "Count reads served from the read cache.", "tier")
	r.misses = metricCounterVec(r.reg, "tagcount_read_cache_misses_total", "Count reads served from MySQL.", "tier")
	r.refreshes = metricCounterVec(r.reg, "tagcount_read_cache_refreshes_total", "Background refreshes of large tags' cached counts.", "result")
	return r
}

// HandleGetTag serves GET /v1/tags/{id}: the tag's count, or 404.
func (r *Reader) HandleGetTag() http.Handler {
	return api.HandlerFunc(func(w http.ResponseWriter, req *http.Request) error {
		id, err := api.PathID(req, "id")
		if err != nil {
			return api.NotFound("tag")
		}
		tcs, err := r.Counts(req.Context(), []int64{id})
		if err != nil {
			return err
		}
		if len(tcs) == 0 {
			return api.NotFound("tag")
		}
		api.Encode(w, http.StatusOK, tcs[0])
		return nil
	})
}

// HandleListTags serves GET /v1/tags?name=...&type=... (one tag, as
// HandleGetTag, or 404) and GET /v1/tags?ids=1,2,3 ({"tags": [...]} in the
// order asked, unknown ids left out; more than MaxBulkIDs ids is a 422 on
// field "ids").
func (r *Reader) HandleListTags() http.Handler {
	return api.HandlerFunc(func(w http.ResponseWriter, req *http.Request) error {
		q := req.URL.Query()
		if q.Has("ids") {
			ids, err := parseIDList(q.Get("ids"))
			if err != nil {
				return err
			}
			tcs, err := r.Counts(req.Context(), ids)
			if err != nil {
				return err
			}
			if tcs == nil {
				tcs = []TagCount{}
			}
			api.Encode(w, http.StatusOK, tagCountsJSON{Tags: tcs})
			return nil
		}
		name := strings.TrimSpace(q.Get("name"))
		typ := strings.ToLower(strings.TrimSpace(q.Get("type")))
		switch {
		case name == "":
			return api.Invalid("name", "name_required", "give ids, or a tag name and type")
		case typ == "":
			return api.Invalid("type", "type_required", "a tag name must come with its type")
		}
		tc, ok, err := r.CountByName(req.Context(), typ, name)
		if err != nil {
			return err
		}
		if !ok {
			return api.NotFound("tag")
		}
		api.Encode(w, http.StatusOK, tc)
		return nil
	})
}

func parseIDList(s string) ([]int64, error) {
	parts := strings.Split(s, ",")
	if len(parts) > MaxBulkIDs {
		return nil, api.Invalid("ids", "too_many_ids", fmt.Sprintf("at most %d ids may be asked for at once", MaxBulkIDs))
	}
	ids := make([]int64, 0, len(parts))
	for _, p := range parts {
		id, err := strconv.ParseInt(strings.TrimSpace(p), 10, 64)
		if err != nil || id <= 0 {
			return nil, api.Invalid("ids", "invalid_id", "ids must be a comma-separated list of positive integers")
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// Counts returns the counts of the tags with the given ids that exist, in
// the order given, each id once. It returns a database error only when some
// count had to be read from MySQL and could not be.
func (r *Reader) Counts(ctx context.Context, ids []int64) ([]TagCount, error) {
	now := r.now()
	out := make([]TagCount, 0, len(ids))
	seen := make(map[int64]bool, len(ids))
	var missing []int64
	found := make(map[int64]TagCount, len(ids))
	r.mu.Lock()
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		if tc, ok := r.cachedLocked(id, now); ok {
			found[id] = tc
			continue
		}
		missing = append(missing, id)
	}
	r.mu.Unlock()
	if len(missing) > 0 {
		tcs, err := r.load(ctx, idQuery("t.id IN (", missing, ")"))
		if err != nil {
			return nil, err
		}
		for _, c := range tcs {
			r.misses.WithLabelValues(c.tc.Tier).Inc()
			found[c.tc.ID] = c.tc
		}
	}
	clear(seen)
	for _, id := range ids {
		if tc, ok := found[id]; ok && !seen[id] {
			seen[id] = true
			out = append(out, tc)
		}
	}
	return out, nil
}

// CountByName returns the count of the tag of type typ named name (compared
// case-insensitively, as tags.name_key), and whether it exists.
func (r *Reader) CountByName(ctx context.Context, typ, name string) (TagCount, bool, error) {
	key := strings.ToLower(strings.TrimSpace(name))
	typ = strings.ToLower(strings.TrimSpace(typ))
	now := r.now()
	r.mu.Lock()
	if id, ok := r.byName[[2]string{typ, key}]; ok {
		if tc, ok := r.cachedLocked(id, now); ok {
			r.mu.Unlock()
			return tc, true, nil
		}
	}
	r.mu.Unlock()
	tcs, err := r.load(ctx, "t.type = ? AND t.name_key = ?", typ, key)
	if err != nil {
		return TagCount{}, false, err
	}
	if len(tcs) == 0 {
		return TagCount{}, false, nil
	}
	r.misses.WithLabelValues(tcs[0].tc.Tier).Inc()
	return tcs[0].tc, true, nil
}

// cachedLocked returns id's cached count if it is still fresh, starting a
// background refresh of a large tag past its refresh point.
func (r *Reader) cachedLocked(id int64, now time.Time) (TagCount, bool) {
	c, ok := r.byID[id]
	if !ok {
		return TagCount{}, false
	}
	if !now.Before(c.expires) {
		r.dropLocked(id, c)
		return TagCount{}, false
	}
	r.hits.WithLabelValues(c.tc.Tier).Inc()
	if c.claimRefresh(now) {
		go r.refresh(id)
	}
	return c.tc, true
}

// claimRefresh reports whether c is past its refresh point with no refresh
// under way, and if so marks one under way. The Reader's mu must be held.
func (c *cachedCount) claimRefresh(now time.Time) bool {
	if c.refreshAt.IsZero() || now.Before(c.refreshAt) || c.refreshing {
		return false
	}
	c.refreshing = true
	return true
}

func (r *Reader) dropLocked(id int64, c *cachedCount) {
	delete(r.byID, id)
	k := [2]string{c.tc.Type, c.nameKey}
	if r.byName[k] == id {
		delete(r.byName, k)
	}
}

// refresh reloads one cached tag in the background.
func (r *Reader) refresh(id int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := r.load(ctx, "t.id = "+strconv.FormatInt(id, 10))
	if err != nil {
		r.refreshes.WithLabelValues("error").Inc()
		r.log.Warn("background refresh of a cached count failed", "tag_id", id, "err", err)
		r.mu.Lock()
		if c, ok := r.byID[id]; ok {
			c.refreshing = false
		}
		r.mu.Unlock()
		return
	}
	r.refreshes.WithLabelValues("ok").Inc()
}

// Run refreshes cached large tags that reach their refresh point even when
// nobody reads them, checking every interval (default 10s), until ctx ends;
// it returns nil. Running it is optional: reads refresh too.
func (r *Reader) Run(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = 10 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		now := r.now()
		var due []int64
		r.mu.Lock()
		for id, c := range r.byID {
			if c.claimRefresh(now) {
				due = append(due, id)
			}
		}
		r.mu.Unlock()
		for _, id := range due {
			r.refresh(id)
		}
	}
}

type loadedCount struct {
	tc      TagCount
	nameKey string
}

// load reads tags and counts matching where, caches the medium and large
// ones, and returns them all.
func (r *Reader) load(ctx context.Context, where string, args ...any) ([]loadedCount, error) {
	rows, err := r.db.QueryContext(ctx,
		`SELECT t.id, t.name, t.type, t.name_key, COALESCE(c.count, 0)
		 FROM tags t LEFT JOIN tag_counts c ON c.tag_id = t.id
		 WHERE `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("counter: read counts: %w", err)
	}
	defer rows.Close()
	read := r.now()
	asOf := read.UTC().Format(time.RFC3339Nano)
	var out []loadedCount
	for rows.Next() {
		var l loadedCount
		if err := rows.Scan(&l.tc.ID, &l.tc.Name, &l.tc.Type, &l.nameKey, &l.tc.Count); err != nil {
			return nil, fmt.Errorf("counter: read counts: %w", err)
		}
		l.tc.Tier = r.tiers.of(l.tc.Count).String()
		l.tc.AsOf = asOf
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("counter: read counts: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range out {
		r.storeLocked(l, read)
	}
	return out, nil
}

// storeLocked caches a freshly read count by its tier.
func (r *Reader) storeLocked(l loadedCount, read time.Time) {
	id := l.tc.ID
	if old, ok := r.byID[id]; ok {
		r.dropLocked(id, old)
	}
	tier := r.tiers.of(l.tc.Count)
	if tier == TierSmall {
		return
	}
	if len(r.byID) >= r.maxEntries {
		// Evict an arbitrary entry; the cache only holds medium and large
		// tags, which are few.
		for oid, oc := range r.byID {
			r.dropLocked(oid, oc)
			break
		}
	}
	ttl := r.tiers.interval(l.tc.Count)
	c := &cachedCount{tc: l.tc, nameKey: l.nameKey, expires: read.Add(ttl)}
	if tier == TierLarge {
		c.refreshAt = read.Add(time.Duration(float64(ttl) * r.tiers.RefreshAhead))
	}
	r.byID[id] = c
	r.byName[[2]string{l.tc.Type, l.nameKey}] = id
}
