// Package httpapi is tagcount's one HTTP layer: every route (routes.go shows
// the whole surface), the handlers and their request and response types,
// decoding and encoding, bearer-token authentication, the error shape and
// the one table that maps the domain packages' errors to statuses
// (errors.go). It is the only package below main that serves HTTP; the
// domain packages it calls know nothing of it.
package httpapi

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/reconcile"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/flags"
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

	// Registry is served at /metrics; the server's own request metrics are
	// registered on it.
	Registry *prometheus.Registry
	// Ready lists what /readyz checks.
	Ready []Check
}

// Check is one readiness check: Err returns nil when the dependency answers.
type Check struct {
	Name string
	Err  func(ctx context.Context) error
}

type server struct {
	Deps
	log  *slog.Logger
	auth Auth
}

// NewServer returns the whole HTTP API of docs/api.md with the operational
// routes (/healthz, /readyz, /metrics).
func NewServer(d Deps) http.Handler {
	s := newServer(d)
	mux := http.NewServeMux()
	s.addRoutes(mux)
	s.addOpsRoutes(mux)
	return s.instrument(mux)
}

// NewOpsServer returns only the operational routes, for a process without
// the API role (a worker, a counter).
func NewOpsServer(d Deps) http.Handler {
	s := newServer(d)
	mux := http.NewServeMux()
	s.addOpsRoutes(mux)
	return s.instrument(mux)
}

func newServer(d Deps) *server {
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.Registry == nil {
		d.Registry = prometheus.NewRegistry()
	}
	return &server{Deps: d, log: d.Logger, auth: d.Auth}
}

// handle adapts a handler that returns its error; the error is written in
// the API's shape.
func (s *server) handle(h func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			WriteError(s.log, w, r, err)
		}
	})
}
