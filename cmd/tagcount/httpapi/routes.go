package httpapi

import (
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// addRoutes maps the whole HTTP API of docs/api.md.
func (s *server) addRoutes(mux *http.ServeMux) {
	// The document that describes all of this (openapi.yaml), for clients without a token yet.
	mux.Handle("GET /v1/openapi.json", s.handleOpenAPI())

	mux.Handle("POST /v1/drafts", s.api(classWrite, DefaultBodyLimit, s.handleCreateDraft()))
	mux.Handle("GET /v1/drafts/{id}", s.api(classRead, 0, s.handleGetDraft()))
	mux.Handle("PUT /v1/drafts/{id}", s.api(classWrite, DefaultBodyLimit, s.handleReplaceDraft()))
	mux.Handle("DELETE /v1/drafts/{id}", s.api(classWrite, 0, s.handleDeleteDraft()))
	mux.Handle("POST /v1/drafts/{id}/post", s.api(classWrite, 0, s.handlePostDraft()))
	mux.Handle("GET /v1/works/{id}", s.api(classRead, 0, s.handleGetWork()))
	mux.Handle("PUT /v1/works/{id}", s.api(classWrite, DefaultBodyLimit, s.handleUpdateWork()))
	mux.Handle("DELETE /v1/works/{id}", s.api(classWrite, 0, s.handleDeleteWork()))

	mux.Handle("GET /v1/tags/{id}", s.api(classRead, 0, s.handleGetTag()))
	mux.Handle("GET /v1/tags", s.api(classRead, 0, s.handleListTags()))

	mux.Handle("POST /v1/admin/reconcile", s.api(classAdmin, reconcileBodyLimit, s.handleStartReconcile()))
	mux.Handle("GET /v1/admin/reconcile/{id}", s.api(classAdmin, 0, s.handleGetReconcile()))
	mux.Handle("GET /v1/admin/reconcile/{id}/corrections", s.api(classAdmin, 0, s.handleListCorrections()))
	mux.Handle("POST /v1/admin/tags/{id}/recount", s.api(classAdmin, reconcileBodyLimit, s.handleRecount()))
	mux.Handle("PUT /v1/admin/tags/{id}/synonym-of", s.api(classAdmin, reconcileBodyLimit, s.handleMakeSynonym()))
	mux.Handle("DELETE /v1/admin/tags/{id}/synonym-of", s.api(classAdmin, 0, s.handleUnsynonym()))
	mux.Handle("GET /v1/admin/wrangling/{id}", s.api(classAdmin, 0, s.handleGetWrangling()))
	mux.Handle("GET /v1/admin/flags", s.api(classAdmin, 0, s.handleGetFlags()))
	mux.Handle("GET /v1/admin/counter", s.api(classAdmin, 0, s.handleGetCounter()))
	mux.Handle("POST /v1/admin/counter/pause", s.api(classAdmin, 0, s.handlePauseCounter()))
	mux.Handle("POST /v1/admin/counter/resume", s.api(classAdmin, reconcileBodyLimit, s.handleResumeCounter()))
	mux.Handle("POST /v1/admin/works/{id}/hide", s.api(classAdmin, 0, s.handleHideWork(true)))
	mux.Handle("POST /v1/admin/works/{id}/unhide", s.api(classAdmin, 0, s.handleHideWork(false)))
	mux.Handle("POST /v1/admin/rollout", s.api(classAdmin, reconcileBodyLimit, s.handleStartRollout()))
	mux.Handle("GET /v1/admin/rollout", s.api(classAdmin, 0, s.handleGetRollout()))
	mux.Handle("POST /v1/admin/rollout/pause", s.api(classAdmin, 0, s.handleRolloutChange("pause")))
	mux.Handle("POST /v1/admin/rollout/resume", s.api(classAdmin, 0, s.handleRolloutChange("resume")))
	mux.Handle("POST /v1/admin/rollout/abort", s.api(classAdmin, 0, s.handleRolloutChange("abort")))
	mux.Handle("GET /v1/admin/rollout/history", s.api(classAdmin, 0, s.handleRolloutHistory()))
	// Health is read when things go wrong: no database slot to wait for.
	mux.Handle("GET /v1/admin/health", s.requireAuth(true, s.rateLimit(classAdmin, s.handleHealth())))

	mux.Handle("/", s.handle(func(w http.ResponseWriter, r *http.Request) error {
		return &Error{Status: http.StatusNotFound, Code: "no_such_route", Message: "no route " + r.Method + " " + r.URL.Path}
	}))
}

// addOpsRoutes maps what every process serves, unauthenticated.
func (s *server) addOpsRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		encode(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.Handle("GET /readyz", s.handleReady())
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{Registry: s.Registry}))
}

// addAdminRoutes maps what the admin listener (--admin-addr) serves: the
// operational routes and Go's profiler, which has no place on a public port.
func (s *server) addAdminRoutes(mux *http.ServeMux) {
	s.addOpsRoutes(mux)
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	// Index serves the named profiles (heap, goroutine, allocs, block, mutex, threadcreate).
	mux.HandleFunc("GET /debug/pprof/{profile}", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}
