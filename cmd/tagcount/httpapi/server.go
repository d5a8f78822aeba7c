// Package httpapi is tagcount's one HTTP layer: every route (routes.go shows
// the whole surface), the handlers and their request and response types,
// decoding and encoding, bearer-token authentication, the guards every
// request meets (request ids, deadlines, shedding and rate limits: edge.go,
// ratelimit.go), readiness, the error shape and the one table that maps the
// domain packages' errors to statuses (errors.go). It is the only package below main that serves HTTP; the
// domain packages it calls know nothing of it.
package httpapi

import (
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/reconcile"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/flags"
	"github.com/tagcount/tagcount/flags/rollout"
	"github.com/tagcount/tagcount/poster"
)

// Deps are what the server calls. The API's dependencies (Drafts through
// Flags) may be nil in a process that serves only the operational routes.
type Deps struct {
	Logger *slog.Logger
	Auth   Auth

	Drafts     *drafts.Store
	Poster     *poster.Poster
	Counts     *counter.Reader
	Reconciler *reconcile.Reconciler
	Flags      *flags.Client
	Control    counter.Control
	// Rollout keeps the guarded rollout's plans (a process with a runner
	// carries them out).
	Rollout rollout.Plans

	// Registry is served at /metrics; the server's own request metrics are
	// registered on it.
	Registry *prometheus.Registry
	// Ready lists what /readyz checks.
	Ready []Check
	// Stopping, when it returns true, makes /readyz answer 503 "stopping"
	// at once, whatever the checks say (the process got SIGTERM). Nil
	// means never.
	Stopping func() bool
	// Edge is the deadlines, limits and rate limits requests meet.
	Edge Edge
}

type server struct {
	Deps
	log     *slog.Logger
	auth    Auth
	edge    Edge
	shed    *shedder
	limiter *limiter
	ready   *readiness
	quotas  *prometheus.CounterVec // refusals by quota
}

// NewServer returns the whole HTTP API of docs/api.md with the operational
// routes (/healthz, /readyz, /metrics).
func NewServer(d Deps) http.Handler {
	s := newServer(d)
	mux := http.NewServeMux()
	s.addRoutes(mux)
	s.addOpsRoutes(mux)
	return s.outer(mux)
}

// NewServers returns the API without the operational routes, and the
// admin listener's handler: the operational routes with Go's profiler under
// /debug/pprof/. The admin handler has no deadline (a CPU profile takes as
// long as it is asked to) and is not counted in the request metrics.
func NewServers(d Deps) (api, admin http.Handler) {
	s := newServer(d)
	apiMux, adminMux := http.NewServeMux(), http.NewServeMux()
	s.addRoutes(apiMux)
	s.addAdminRoutes(adminMux)
	return s.outer(apiMux), withRequestID(adminMux)
}

// NewAdminServer returns the admin listener's handler alone (see
// NewServers), for a process without the API role.
func NewAdminServer(d Deps) http.Handler {
	s := newServer(d)
	mux := http.NewServeMux()
	s.addAdminRoutes(mux)
	return withRequestID(mux)
}

// NewOpsServer returns only the operational routes, for a process without
// the API role (a worker, a counter).
func NewOpsServer(d Deps) http.Handler {
	s := newServer(d)
	mux := http.NewServeMux()
	s.addOpsRoutes(mux)
	return s.outer(mux)
}

func newServer(d Deps) *server {
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.Registry == nil {
		d.Registry = prometheus.NewRegistry()
	}
	log := slog.New(LogHandler(d.Logger.Handler()))
	e := d.Edge.WithDefaults()
	return &server{Deps: d, log: log, auth: d.Auth, edge: e, shed: newShedder(e, d.Registry),
		limiter: newLimiter(e.RateLimits, d.Registry, log), ready: &readiness{checks: d.Ready, log: log},
		quotas: newQuotaRejections(d.Registry)}
}

// outer wraps every route: the request id first, so every answer and log
// line carries it, then the deadline, then the metrics, which must get the
// very request the mux gets to see the route it matched.
func (s *server) outer(mux *http.ServeMux) http.Handler {
	return withRequestID(s.deadline(s.instrument(mux)))
}

// api wraps an API route's handler in what a request meets, in this order:
// the in-flight cap, authentication (a request without a valid token is
// limited by its address), the rate limit of its class, all answered before
// any database work; then, for a route with a body, the body read within
// bodyLimit and the body memory budget; then a database slot.
func (s *server) api(class string, bodyLimit int64, h http.Handler) http.Handler {
	h = s.dbSlot(h)
	if bodyLimit > 0 {
		h = s.readBody(bodyLimit, h)
	}
	return s.capInFlight(s.requireAuth(class == classAdmin, s.rateLimit(class, h)))
}

// handleID is handle for a route with an {id}: h gets the id, and a path
// whose id is not a positive integer is a 404 of what.
func (s *server) handleID(what string, h func(w http.ResponseWriter, r *http.Request, id int64) error) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		id, err := pathID(r, "id", what)
		if err != nil {
			return err
		}
		return h(w, r, id)
	})
}

// handle adapts a handler that returns its error; the error is written in
// the API's shape.
func (s *server) handle(h func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			if q := quotaOf(err); q != "" {
				s.quotas.WithLabelValues(q).Inc()
			}
			WriteError(s.log, w, r, err)
		}
	})
}
