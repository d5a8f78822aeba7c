package tags

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/redis/go-redis/v9"

	"github.com/tagcount/tagcount/migrations/loop"
)

// DefaultNewTagsPerDay is the new-tag quota the service runs with: how many
// tags an author may name for the first time in the archive per UTC day.
// A real archive's most active taggers add a few dozen new tags on a busy
// day (a long work with many characters, a new fandom); 200 is several
// times that, while a script posting works with made-up tags stops after
// 200 rows a day instead of 74 a post, without bound, every one of which
// the nightly reconcile would scan for ever after.
const DefaultNewTagsPerDay = 200

// DefaultQuotaTimeout bounds the quota's call to Redis. Past it, or with
// Redis down, the save is allowed (fail open): the quota guards the tags
// table's growth, which a minute without it cannot hurt, and must never
// fail every save.
const DefaultQuotaTimeout = 100 * time.Millisecond

// ErrNewTagQuota is what a save that would name more new tags than the
// author has left today fails with (as a *QuotaError).
var ErrNewTagQuota = errors.New("too many new tags today")

// QuotaError is a save refused by the new-tag quota.
type QuotaError struct {
	Limit int       // new tags an author may name per day
	Used  int       // new tags the author has named today
	Asked int       // new tags this save names that the author has not named today
	Reset time.Time // when the day's allowance starts over (midnight UTC)
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("%v: this names %d tags that do not exist yet, and %d of today's %d are used; the allowance starts over at midnight UTC",
		ErrNewTagQuota, e.Asked, e.Used, e.Limit)
}

// Unwrap makes errors.Is(err, ErrNewTagQuota) hold.
func (e *QuotaError) Unwrap() error { return ErrNewTagQuota }

// RetryAt is when the same save may succeed: when the day starts over.
func (e *QuotaError) RetryAt() time.Time { return e.Reset }

// QuotaConfig configures a Quota.
type QuotaConfig struct {
	// Tags tells which tags exist (read-only).
	Tags *Resolver
	// Redis keeps each author's new tags of the day; nil turns the quota off.
	Redis redis.UniversalClient
	// PerDay is the allowance; 0 turns the quota off.
	PerDay int
	// Prefix starts the Redis keys (processes sharing it share the counts).
	Prefix string
	// Timeout bounds a call to Redis (default DefaultQuotaTimeout).
	Timeout    time.Duration
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// Quota bounds how many tags an author creates a day. Tags are created
// when a work is posted, but a refusal then would fail a post the author
// was already told is queued; so the quota is charged when content is
// saved (a draft created or replaced, a work edited), for the tags the
// content names that do not exist yet. Each author's names of the day are
// a Redis set, so saving the same draft again, as an editor's autosave
// does, charges nothing more; and the common save, naming only tags that
// exist, costs one indexed read (none once the tags are cached) and no
// Redis call.
type Quota struct {
	cfg     QuotaConfig
	errs    prometheus.Counter
	log     *slog.Logger
	lastLog atomic.Int64 // unix nanoseconds of the last fail-open warning
}

// WithDefaults returns c with its zero Timeout, Logger and Now set to their
// defaults: the one place QuotaConfig's defaults are applied.
func (c QuotaConfig) WithDefaults() QuotaConfig {
	c.Timeout = loop.OrDefault(c.Timeout, DefaultQuotaTimeout)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// NewQuota returns the quota of cfg with its defaults, or nil (no quota,
// every Charge allowed) when cfg turns it off. It returns an error when
// the quota is on and cfg.Tags is missing.
func NewQuota(cfg QuotaConfig) (*Quota, error) {
	errs := promauto.With(cfg.Registerer).NewCounter(prometheus.CounterOpts{Name: "tagcount_quota_errors_total",
		Help: "Saves allowed without a new-tag quota decision because Redis failed or was slow (fail open)."})
	if cfg.Redis == nil || cfg.PerDay <= 0 {
		return nil, nil
	}
	if cfg.Tags == nil {
		return nil, errors.New("tags: QuotaConfig needs Tags when the quota is on")
	}
	cfg = cfg.WithDefaults()
	return &Quota{cfg: cfg, errs: errs, log: cfg.Logger}, nil
}

// chargeScript adds the names in ARGV[3..] to the day's set KEYS[1] unless
// that would make it larger than ARGV[1], atomically, so concurrent saves
// of one author cannot both pass on the last of the allowance. It returns
// {allowed, used after, names not in the set before}.
var chargeScript = redis.NewScript(`
local fresh = {}
for i = 3, #ARGV do
  if redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 0 then fresh[#fresh + 1] = ARGV[i] end
end
local used = redis.call('SCARD', KEYS[1])
if #fresh == 0 then return {1, used, 0} end
if used + #fresh > tonumber(ARGV[1]) then return {0, used, #fresh} end
redis.call('SADD', KEYS[1], unpack(fresh))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {1, used + #fresh, #fresh}`)

// Charge records that author names refs today, and returns a *QuotaError
// (errors.Is ErrNewTagQuota) when the tags among them that do not exist
// would take the author past the day's allowance; nothing is recorded
// then. Only the open vocabularies count: the fixed ratings, warnings and
// categories are a handful of names that exist after the first posts.
// When some of refs are new, check (if set) runs before anything is
// recorded, and its error is returned as is: the caller's ownership and
// state checks, so a save that ends not found or in conflict uses none of
// the allowance. It returns a database error when the existence look-up
// fails, and nil when Redis cannot answer in time.
func (q *Quota) Charge(ctx context.Context, authorID int64, refs []Ref, check func(context.Context) error) error {
	if q == nil {
		return nil
	}
	refs = openRefs(refs)
	if len(refs) == 0 {
		return nil
	}
	refs = distinctRefs(refs)
	exist, err := q.cfg.Tags.Existing(ctx, refs)
	if err != nil {
		return err
	}
	args := []any{q.cfg.PerDay, 0}
	for i, r := range refs {
		if !exist[i] {
			args = append(args, r.Type+"\x00"+r.Key)
		}
	}
	if len(args) == 2 {
		return nil
	}
	if check != nil {
		if err := check(ctx); err != nil {
			return err
		}
	}
	now := q.cfg.Now().UTC()
	reset := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC)
	args[1] = int(reset.Sub(now)/time.Second) + 3600 // the set outlives its day by an hour
	key := q.cfg.Prefix + "newtags:" + strconv.FormatInt(authorID, 10) + ":" + now.Format(time.DateOnly)
	rctx, cancel := context.WithTimeout(ctx, q.cfg.Timeout)
	defer cancel()
	res, err := chargeScript.Run(rctx, q.cfg.Redis, []string{key}, args...).Int64Slice()
	if err != nil || len(res) != 3 {
		q.failOpen(ctx, err)
		return nil
	}
	if res[0] == 1 {
		return nil
	}
	return &QuotaError{Limit: q.cfg.PerDay, Used: int(res[1]), Asked: int(res[2]), Reset: reset}
}

// failOpen counts a save allowed without a decision, warning at most once
// per 10 s: with Redis down every save fails open.
func (q *Quota) failOpen(ctx context.Context, err error) {
	q.errs.Inc()
	if now := time.Now().UnixNano(); now-q.lastLog.Load() > int64(10*time.Second) {
		q.lastLog.Store(now)
		q.log.WarnContext(ctx, "new-tag quota unavailable; allowing saves", "err", err)
	}
}

// openRefs returns the refs of refs in the open vocabularies, the ones an
// author creates by naming them.
func openRefs(refs []Ref) []Ref {
	out := refs[:0:0]
	for _, r := range refs {
		switch r.Type {
		case TypeRating, TypeWarning, TypeCategory:
			continue
		}
		out = append(out, r)
	}
	return out
}

// distinctRefs returns refs with each (type, key) once.
func distinctRefs(refs []Ref) []Ref {
	seen := make(map[tagKey]bool, len(refs))
	out := refs[:0:0]
	for _, r := range refs {
		if k := (tagKey{r.Type, r.Key}); !seen[k] {
			seen[k] = true
			out = append(out, r)
		}
	}
	return out
}
