package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// Check is one readiness check: Err returns nil when the dependency answers.
// A check that is Optional names a dependency the process's role can serve
// without for a while (the API without Redis: a Post is recorded on the
// draft row and enqueued later); when it fails the process is degraded, not
// unready.
type Check struct {
	Name     string
	Err      func(ctx context.Context) error
	Optional bool
}

// Readiness checks are cheap for the dependencies: their results are reused
// for readyCacheTTL, however often load balancers ask, and each runs within
// readyTimeout.
const (
	readyCacheTTL = time.Second
	readyTimeout  = time.Second
)

// Readiness states, overall and per check.
const (
	stateOK       = "ok"
	stateDegraded = "degraded"
	stateDown     = "down"
	stateUnready  = "unready"
	stateStopping = "stopping"
)

type checkResult struct {
	Check
	err  error
	took time.Duration
	at   time.Time
}

// state is "ok", or for a failing check "down" ("degraded" when optional).
func (c checkResult) state() string {
	switch {
	case c.err == nil:
		return stateOK
	case c.Optional:
		return stateDegraded
	}
	return stateDown
}

// readiness runs the checks at most once per ttl (readyCacheTTL when 0).
type readiness struct {
	checks []Check
	log    *slog.Logger
	ttl    time.Duration

	mu      sync.Mutex
	at      time.Time
	results []checkResult
}

// current returns the checks' latest results, running them (all at once,
// within readyTimeout) when the last are older than readyCacheTTL. A check
// whose state changes is logged with its error.
func (rd *readiness) current(ctx context.Context) []checkResult {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	ttl := rd.ttl
	if ttl <= 0 {
		ttl = readyCacheTTL
	}
	if rd.results != nil && time.Since(rd.at) < ttl {
		return rd.results
	}
	// A caller that hangs up must not fail the checks everyone else reads.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), readyTimeout)
	defer cancel()
	results := make([]checkResult, len(rd.checks))
	var wg sync.WaitGroup
	for i, c := range rd.checks {
		wg.Go(func() {
			start := time.Now()
			err := c.Err(cctx)
			results[i] = checkResult{Check: c, err: err, took: time.Since(start), at: start}
		})
	}
	wg.Wait()
	for i, res := range results {
		was := stateOK
		if rd.results != nil {
			was = rd.results[i].state()
		}
		if now := res.state(); now != was {
			rd.log.WarnContext(ctx, "readiness check changed", "check", res.Name, "from", was, "to", now, "err", res.err)
		}
	}
	rd.results, rd.at = results, time.Now()
	return results
}

// summary is whether the process is ready and its overall state: unready
// when a required check fails, degraded when only optional ones do.
func summary(results []checkResult) (bool, string) {
	status := stateOK
	for _, r := range results {
		switch r.state() {
		case stateDown:
			return false, stateUnready
		case stateDegraded:
			status = stateDegraded
		}
	}
	return true, status
}

type readyJSON struct {
	Ready  bool              `json:"ready"`
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

// handleReady serves GET /readyz: whether this process can serve its role,
// with each check's state and nothing more; the errors are in the logs and
// in GET /v1/admin/health.
func (s *server) handleReady() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		results := s.ready.current(r.Context())
		ready, status := summary(results)
		if s.Stopping != nil && s.Stopping() {
			// Load balancers take the process out of rotation while it
			// still serves (--shutdown-delay), so no request meets a
			// closed port.
			ready, status = false, stateStopping
		}
		out := readyJSON{Ready: ready, Status: status, Checks: map[string]string{}}
		for _, res := range results {
			out.Checks[res.Name] = res.state()
		}
		code := http.StatusOK
		if !ready {
			code = http.StatusServiceUnavailable
			w.Header().Set("Retry-After", "5")
		}
		w.Header().Set("Cache-Control", "no-store")
		encode(w, code, out)
	})
}

type healthCheckJSON struct {
	Status          string    `json:"status"`
	Optional        bool      `json:"optional"`
	Error           string    `json:"error,omitempty"`
	CheckedAt       time.Time `json:"checked_at"`
	DurationSeconds float64   `json:"duration_seconds"`
}

type healthJSON struct {
	Ready  bool                       `json:"ready"`
	Status string                     `json:"status"`
	Checks map[string]healthCheckJSON `json:"checks"`
}

// handleHealth serves GET /v1/admin/health: /readyz with each check's
// error, when it was run and how long it took.
func (s *server) handleHealth() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		results := s.ready.current(r.Context())
		ready, status := summary(results)
		out := healthJSON{Ready: ready, Status: status, Checks: map[string]healthCheckJSON{}}
		for _, res := range results {
			c := healthCheckJSON{Status: res.state(), Optional: res.Optional, CheckedAt: res.at.UTC(),
				DurationSeconds: res.took.Seconds()}
			if res.err != nil {
				c.Error = res.err.Error()
			}
			out.Checks[res.Name] = c
		}
		w.Header().Set("Cache-Control", "no-store")
		encode(w, http.StatusOK, out)
		return nil
	})
}
