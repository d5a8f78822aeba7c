package httpapi

import (
	"context"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/redis/go-redis/v9"
)

// RateLimit is a GCRA limit: PerSecond requests a second on average, and up
// to Burst at once after a quiet spell. PerSecond 0 means no limit.
type RateLimit struct {
	PerSecond float64
	Burst     int
}

// gcra is l as redis_rate counts it: one request per emission interval.
func (l RateLimit) gcra() redis_rate.Limit {
	return redis_rate.Limit{Rate: 1, Period: time.Duration(float64(time.Second) / l.PerSecond), Burst: max(l.Burst, 1)}
}

// Default rate limits, per author (the token's sub) and class of route, and
// per client address for requests without a valid token. An author at a
// keyboard saves, posts and edits a few times a minute; a burst of 20 writes
// covers a web app saving several drafts at once, and 5/s sustained is far
// above a person and far below a runaway script. Reads (a page of counts, a
// draft being polled for its posted state) come in larger bursts. Admin
// routes are few and some are expensive (a recount runs in the request).
// Requests without a valid token are only ever errors, so a handful a
// second per address is enough for a client whose token just expired.
var (
	DefaultWriteLimit     = RateLimit{PerSecond: 5, Burst: 20}
	DefaultReadLimit      = RateLimit{PerSecond: 20, Burst: 60}
	DefaultAdminLimit     = RateLimit{PerSecond: 2, Burst: 10}
	DefaultAnonymousLimit = RateLimit{PerSecond: 10, Burst: 30}
)

// DefaultRateLimitPrefix starts every rate-limit key in Redis; replicas that
// share a prefix share the limits.
const DefaultRateLimitPrefix = "tagcount:"

// DefaultRateLimitTimeout bounds one limiter call to Redis. Past it the
// request is served unlimited (fail open): a slow Redis must not slow every
// request, nor fail it.
const DefaultRateLimitTimeout = 100 * time.Millisecond

// RateLimits configures the limiter. Limits hold across every replica that
// uses the same Redis and Prefix.
type RateLimits struct {
	// Redis holds the limiter's state; nil turns rate limiting off.
	Redis redis.UniversalClient
	// Prefix starts every key (after redis_rate's own "rate:").
	Prefix string
	// Timeout bounds each call to Redis; past it the request is served.
	Timeout time.Duration

	Writes, Reads, Admin, Anonymous RateLimit
	// TrustedProxies are the peers whose X-Forwarded-For is believed when
	// finding the client address of a request without a valid token.
	TrustedProxies []netip.Prefix
}

// Classes of routes, each with its own limit (and metric label).
const (
	classWrite     = "writes"
	classRead      = "reads"
	classAdmin     = "admin"
	classAnonymous = "anonymous"
)

// limiter enforces RateLimits. A nil *limiter allows everything.
type limiter struct {
	cfg     RateLimits
	lim     *redis_rate.Limiter
	errs    *prometheus.CounterVec
	repeats *prometheus.CounterVec
	log     *slog.Logger
	lastLog atomic.Int64 // unix nanoseconds of the last fail-open warning
	denied  denials
	held    atomic.Int64 // repeats being held
}

func newLimiter(cfg RateLimits, reg prometheus.Registerer, log *slog.Logger) *limiter {
	f := promauto.With(reg)
	errs := f.NewCounterVec(prometheus.CounterOpts{
		Name: "tagcount_rate_limit_errors_total",
		Help: "Requests served without a rate-limit decision because Redis failed or was slow (fail open), by class.",
	}, []string{"class"})
	// Exported at 0 from the start, so an alert on its rate sees a series.
	for _, c := range []string{classWrite, classRead, classAdmin, classAnonymous} {
		errs.WithLabelValues(c)
	}
	repeats := f.NewCounterVec(prometheus.CounterOpts{
		Name: "tagcount_rate_limit_repeats_total",
		Help: "Requests sent while their author (or address) was told to wait: answered 429 without asking Redis, after a hold, by class.",
	}, []string{"class"})
	if cfg.Redis == nil {
		return nil
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultRateLimitTimeout
	}
	return &limiter{cfg: cfg, lim: redis_rate.NewLimiter(cfg.Redis), errs: errs, repeats: repeats, log: log,
		denied: denials{until: map[string]denial{}}}
}

func (l *limiter) limitOf(class string) RateLimit {
	switch class {
	case classWrite:
		return l.cfg.Writes
	case classRead:
		return l.cfg.Reads
	case classAdmin:
		return l.cfg.Admin
	}
	return l.cfg.Anonymous
}

// allow takes one request of class for key (an author id or a client
// address) and returns a 429 *Error when it is over the limit, nil
// otherwise, including when Redis cannot say in time. A request sent
// while key is still told to wait (a repeat) is answered from the denial
// remembered, with hold: how long it is held before the answer.
func (l *limiter) allow(ctx context.Context, class, key string) (e *Error, hold time.Duration) {
	if l == nil {
		return nil, 0
	}
	limit := l.limitOf(class)
	if limit.PerSecond <= 0 {
		return nil, 0
	}
	k := class + ":" + key
	if dn, ok := l.denied.get(k); ok {
		l.repeats.WithLabelValues(class).Inc()
		return rateLimited(time.Until(dn.until)), time.Until(dn.retryAt)
	}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.Timeout)
	defer cancel()
	res, err := l.lim.Allow(ctx, l.cfg.Prefix+k, limit.gcra())
	if err != nil {
		l.errs.WithLabelValues(class).Inc()
		// One warning per 10 s: when Redis is down, every request fails open.
		if now := time.Now().UnixNano(); now-l.lastLog.Load() > int64(10*time.Second) {
			l.lastLog.Store(now)
			l.log.WarnContext(ctx, "rate limiter unavailable; serving requests unlimited", "class", class, "err", err)
		}
		return nil, 0
	}
	if res.Allowed > 0 {
		return nil, 0
	}
	e = rateLimited(res.RetryAfter)
	now := time.Now()
	l.denied.set(k, denial{until: now.Add(res.RetryAfter), retryAt: now.Add(time.Duration(e.RetryAfter) * time.Second)})
	return e, 0
}

// rateLimited is the 429 of a request over its limit for retryAfter more.
func rateLimited(retryAfter time.Duration) *Error {
	return &Error{Status: http.StatusTooManyRequests, Code: "rate_limited",
		Message:    "too many requests; slow down and try again after Retry-After seconds",
		RetryAfter: max(int(math.Ceil(retryAfter.Seconds())), 1)}
}

// rateLimit wraps next so an author over the limit of class is answered
// 429 before next runs.
func (s *server) rateLimit(class string, next http.Handler) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		if err := s.limited(r, class, strconv.FormatInt(authorID(r), 10)); err != nil {
			return err
		}
		next.ServeHTTP(w, r)
		return nil
	})
}

// clientAddr is the address a request without a valid token is limited by:
// the peer, or, when the peer is a trusted proxy, the nearest address in
// X-Forwarded-For that is not one. IPv6 clients are limited by their /64,
// which one subscriber gets whole.
func (l *limiter) clientAddr(r *http.Request) string {
	if l == nil {
		return ""
	}
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	addr := peer.Addr().Unmap()
	if l.trusted(addr) {
		hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
		for i := len(hops) - 1; i >= 0; i-- {
			a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
			if err != nil {
				break // a forged or garbled entry: keep the last address we could trust
			}
			addr = a.Unmap()
			if !l.trusted(addr) {
				break
			}
		}
	}
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		return p.String()
	}
	return addr.String()
}

func (l *limiter) trusted(a netip.Addr) bool {
	for _, p := range l.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
