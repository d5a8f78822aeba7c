package counter

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/loop"
)

// MaxBulkIDs is the most tag ids one read asks for.
const MaxBulkIDs = 1000

// TagCount is a tag and its numbers as of a moment: Count for logged-in
// readers, PublicCount for everyone, and the same two of the works filed
// under the tag (FilterCount, PublicFilterCount: for a canonical tag, the
// works using it or any of its synonyms, each once).
type TagCount struct {
	ID                int64
	Name              string
	Type              string
	SynonymOf         int64 // the canonical tag of a synonym; 0 for a canonical tag
	Count             int64
	PublicCount       int64
	FilterCount       int64
	PublicFilterCount int64
	Tier              Tier
	// AsOf is when the count was read from MySQL.
	AsOf time.Time
}

// ReaderConfig configures a Reader. DB is required; every other zero field
// takes its default (WithDefaults) or is off.
type ReaderConfig struct {
	DB *migrations.DB
	// Tiers sets the size tiers, and so the cache lifetimes; zero fields
	// take DefaultTiers'.
	Tiers Tiers
	// WorkUses is what the Reader asks which posted works use a tag whose
	// numbers are 0 (SeenBy); poster.Poster is one. Nil: such a tag is
	// seen by admins only.
	WorkUses WorkUses
	// RefreshEvery is how often Run looks for large tags to refresh
	// (default DefaultRefreshEvery).
	RefreshEvery time.Duration
	// Now is the clock of cache lifetimes (default time.Now).
	Now func() time.Time
	// Logger defaults to slog.Default(); a nil Registerer registers nothing.
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// DefaultRefreshEvery is ReaderConfig.RefreshEvery's default.
const DefaultRefreshEvery = 10 * time.Second

// readerCacheSize is the most tags a Reader caches.
const readerCacheSize = 100_000

// WithDefaults returns c with its tiers' zero fields, RefreshEvery, Now
// and Logger set to their defaults: the one place ReaderConfig's defaults are
// applied.
func (c ReaderConfig) WithDefaults() ReaderConfig {
	c.Tiers = c.Tiers.WithDefaults()
	c.RefreshEvery = loop.OrDefault(c.RefreshEvery, DefaultRefreshEvery)
	if c.Now == nil {
		c.Now = time.Now
	}
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c
}

// Reader serves tag counts with a cache whose lifetime follows the size
// tiers: a small tag is read from MySQL on every request (never stale), a
// medium tag is cached for its flush interval, and a large tag for the large
// interval, refreshed in the background before it expires so no reader waits
// on it.
type Reader struct {
	db         *migrations.DB
	tiers      Tiers
	now        func() time.Time
	log        *slog.Logger
	maxEntries int
	uses       WorkUses
	// refreshEvery is how often Run looks for large tags to refresh.
	refreshEvery time.Duration

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

// NewReader returns a Reader for cfg with its defaults, or an error when
// cfg.DB is missing.
func NewReader(cfg ReaderConfig) (*Reader, error) {
	cfg = cfg.WithDefaults()
	if cfg.DB == nil {
		return nil, errors.New("counter: ReaderConfig needs a DB")
	}
	reg := cfg.Registerer
	return &Reader{
		db:           cfg.DB,
		tiers:        cfg.Tiers,
		now:          cfg.Now,
		log:          cfg.Logger.With("component", "count-reader"),
		maxEntries:   readerCacheSize,
		refreshEvery: cfg.RefreshEvery,
		uses:         cfg.WorkUses,
		byID:         make(map[int64]*cachedCount),
		byName:       make(map[[2]string]int64),
		hits:         metricCounterVec(reg, "tagcount_read_cache_hits_total", "Count reads served from the read cache.", "tier"),
		misses:       metricCounterVec(reg, "tagcount_read_cache_misses_total", "Count reads served from MySQL.", "tier"),
		refreshes:    metricCounterVec(reg, "tagcount_read_cache_refreshes_total", "Background refreshes of large tags' cached counts.", "result"),
	}, nil
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
		tcs, err := r.load(ctx, migrations.IDList("t.id IN (", missing, ")"))
		if err != nil {
			return nil, err
		}
		for _, c := range tcs {
			r.misses.WithLabelValues(c.tc.Tier.String()).Inc()
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

// Viewer is who reads tags: an admin sees every tag, anyone else only the
// tags SeenBy lets them see.
type Viewer struct {
	AuthorID int64
	Admin    bool
}

// WorkUses says which tags the posted works a reader can see use.
type WorkUses interface {
	// TagsSeenBy returns which of tagIDs a posted work authorID can see
	// uses (an unhidden work, or one of authorID's own), or the
	// database's error.
	TagsSeenBy(ctx context.Context, authorID int64, tagIDs []int64) (map[int64]bool, error)
}

// SeenBy returns those of tcs (read by Counts, CountByKey or their exact
// forms, which filter nothing) that v may see, in order. An admin sees
// them all. Anyone else sees a tag whose count or filter count, as read,
// is above 0 (posted works every logged-in reader can see use it, or are
// filed under it), and a tag whose numbers are 0 only if a posted work v
// can see uses it: one of v's own (hidden ones too), or one the counter
// has not counted yet. The name of a tag that only drafts, deleted works
// or hidden works use is thus never shown to a reader who cannot see such
// a work. A count that still includes a work deleted or hidden a moment
// ago keeps its tag visible until the counter applies the change (about a
// second; until the resume while the counter is paused). It returns a
// database error when it had to ask WorkUses and could not.
func (r *Reader) SeenBy(ctx context.Context, v Viewer, tcs []TagCount) ([]TagCount, error) {
	if v.Admin {
		return tcs, nil
	}
	var unused []int64
	for _, tc := range tcs {
		if !tc.inUse() {
			unused = append(unused, tc.ID)
		}
	}
	if len(unused) == 0 {
		return tcs, nil
	}
	seen := map[int64]bool{}
	if r.uses != nil {
		var err error
		if seen, err = r.uses.TagsSeenBy(ctx, v.AuthorID, unused); err != nil {
			return nil, fmt.Errorf("counter: which tags the reader can see: %w", err)
		}
	}
	out := make([]TagCount, 0, len(tcs))
	for _, tc := range tcs {
		if tc.inUse() || seen[tc.ID] {
			out = append(out, tc)
		}
	}
	return out, nil
}

// inUse reports whether tc's numbers say posted works every logged-in
// reader can see use it or are filed under it.
func (tc TagCount) inUse() bool { return tc.Count > 0 || tc.FilterCount > 0 }

// CountByKey returns the count of the tag of type typ whose name folds to
// key (tags.name_key), and whether it exists.
func (r *Reader) CountByKey(ctx context.Context, typ, key string) (TagCount, bool, error) {
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
	r.misses.WithLabelValues(tcs[0].tc.Tier.String()).Inc()
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
	r.hits.WithLabelValues(c.tc.Tier.String()).Inc()
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
// nobody reads them, checking every ReaderConfig.RefreshEvery, until ctx
// ends; it returns nil. Running it is optional: reads refresh too.
func (r *Reader) Run(ctx context.Context) error {
	return loop.Every(ctx, r.refreshEvery, r.refreshDue)
}

// refreshDue refreshes every cached large tag past its refresh point.
func (r *Reader) refreshDue(context.Context) {
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

// tagCountColumns are what a read selects of a tag (t) and its counts (c)
// after its id, name, type (and key): TagCount's numbers in order.
const tagCountColumns = `COALESCE(t.synonym_of, 0), COALESCE(c.count, 0), COALESCE(c.public_count, 0),
	COALESCE(c.filter_count, 0), COALESCE(c.public_filter_count, 0)`

type loadedCount struct {
	tc      TagCount
	nameKey string
}

// load reads tags and counts matching where, caches the medium and large
// ones, and returns them all.
func (r *Reader) load(ctx context.Context, where string, args ...any) ([]loadedCount, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT t.id, t.name, t.type, t.name_key, `+tagCountColumns+`
		 FROM tags t LEFT JOIN tag_counts c ON c.tag_id = t.id
		 WHERE `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("counter: read counts: %w", err)
	}
	defer rows.Close()
	read := r.now()
	var out []loadedCount
	for rows.Next() {
		var l loadedCount
		if err := rows.Scan(&l.tc.ID, &l.tc.Name, &l.tc.Type, &l.nameKey, &l.tc.SynonymOf, &l.tc.Count, &l.tc.PublicCount,
			&l.tc.FilterCount, &l.tc.PublicFilterCount); err != nil {
			return nil, fmt.Errorf("counter: read counts: %w", err)
		}
		l.tc.Tier = r.tiers.of(l.tc.Count)
		l.tc.AsOf = read
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

// ExactCounts returns the numbers of the tags with the given ids that
// exist, in the order given, each id once, for any tier: the stored numbers
// plus the outbox deltas still pending, read in one consistent snapshot, so
// they equal an independent count of the posted works at that moment. It
// returns a database error when the snapshot cannot be read.
func (r *Reader) ExactCounts(ctx context.Context, ids []int64) ([]TagCount, error) {
	seen := make(map[int64]bool, len(ids))
	uniq := make([]int64, 0, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			uniq = append(uniq, id)
		}
	}
	if len(uniq) == 0 {
		return nil, nil
	}
	tcs, err := r.exact(ctx, migrations.IDList("t.id IN (", uniq, ")"))
	if err != nil {
		return nil, err
	}
	byID := make(map[int64]TagCount, len(tcs))
	for _, tc := range tcs {
		byID[tc.ID] = tc
	}
	out := make([]TagCount, 0, len(tcs))
	for _, id := range uniq {
		if tc, ok := byID[id]; ok {
			out = append(out, tc)
		}
	}
	return out, nil
}

// ExactCountByKey is ExactCounts for the tag of type typ whose name folds
// to key; it reports whether the tag exists.
func (r *Reader) ExactCountByKey(ctx context.Context, typ, key string) (TagCount, bool, error) {
	tcs, err := r.exact(ctx, "t.type = ? AND t.name_key = ?", typ, key)
	if err != nil || len(tcs) == 0 {
		return TagCount{}, false, err
	}
	return tcs[0], true, nil
}

// exact reads the tags matching where, their stored numbers and their
// pending outbox deltas in one read-only consistent snapshot.
func (r *Reader) exact(ctx context.Context, where string, args ...any) (_ []TagCount, err error) {
	tx, err := r.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("counter: exact read: %w", err)
	}
	defer tx.Rollback()
	read := r.now()
	rows, err := tx.QueryContext(ctx, `SELECT t.id, t.name, t.type, `+tagCountColumns+`
		FROM tags t LEFT JOIN tag_counts c ON c.tag_id = t.id WHERE `+where+` ORDER BY t.id`, args...)
	if err != nil {
		return nil, fmt.Errorf("counter: exact read: %w", err)
	}
	var out []TagCount
	for rows.Next() {
		tc := TagCount{AsOf: read}
		if err := rows.Scan(&tc.ID, &tc.Name, &tc.Type, &tc.SynonymOf, &tc.Count, &tc.PublicCount, &tc.FilterCount,
			&tc.PublicFilterCount); err != nil {
			rows.Close()
			return nil, fmt.Errorf("counter: exact read: %w", err)
		}
		out = append(out, tc)
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(out) == 0 {
		return out, err
	}
	ids := make([]int64, len(out))
	for i, tc := range out {
		ids[i] = tc.ID
	}
	pending, err := SumsByID(ctx, tx, migrations.IDList(`SELECT tag_id, `+pendingSums+`
		FROM tag_events WHERE tag_id IN (`, ids, ") GROUP BY tag_id"))
	if err != nil {
		return nil, fmt.Errorf("counter: exact read: %w", err)
	}
	for i := range out {
		p := pending[out[i].ID]
		out[i].Count += p.Count
		out[i].PublicCount += p.Public
		out[i].FilterCount += p.Filter
		out[i].PublicFilterCount += p.PublicFilter
		out[i].Tier = r.tiers.of(out[i].Count)
	}
	return out, nil
}
