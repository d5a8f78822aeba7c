package httpapi

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// addRoutes maps the whole HTTP API of docs/api.md.
func (s *server) addRoutes(mux *http.ServeMux) {
	author := func(h http.Handler) http.Handler { return s.requireAuth(false, h) }
	admin := func(h http.Handler) http.Handler { return s.requireAuth(true, h) }

	mux.Handle("POST /v1/drafts", author(s.handleCreateDraft()))
	mux.Handle("GET /v1/drafts/{id}", author(s.handleGetDraft()))
	mux.Handle("PUT /v1/drafts/{id}", author(s.handleReplaceDraft()))
	mux.Handle("DELETE /v1/drafts/{id}", author(s.handleDeleteDraft()))
	mux.Handle("POST /v1/drafts/{id}/post", author(s.handlePostDraft()))
	mux.Handle("GET /v1/works/{id}", author(s.handleGetWork()))
	mux.Handle("PUT /v1/works/{id}", author(s.handleUpdateWork()))
	mux.Handle("DELETE /v1/works/{id}", author(s.handleDeleteWork()))

	mux.Handle("GET /v1/tags/{id}", author(s.handleGetTag()))
	mux.Handle("GET /v1/tags", author(s.handleListTags()))

	mux.Handle("POST /v1/admin/reconcile", admin(s.handleStartReconcile()))
	mux.Handle("GET /v1/admin/reconcile/{id}", admin(s.handleGetReconcile()))
	mux.Handle("GET /v1/admin/reconcile/{id}/corrections", admin(s.handleListCorrections()))
	mux.Handle("POST /v1/admin/tags/{id}/recount", admin(s.handleRecount()))
	mux.Handle("GET /v1/admin/flags", admin(s.handleGetFlags()))
	mux.Handle("GET /v1/admin/counter", admin(s.handleGetCounter()))
	mux.Handle("POST /v1/admin/counter/pause", admin(s.handlePauseCounter()))
	mux.Handle("POST /v1/admin/counter/resume", admin(s.handleResumeCounter()))
	mux.Handle("POST /v1/admin/works/{id}/hide", admin(s.handleHideWork(true)))
	mux.Handle("POST /v1/admin/works/{id}/unhide", admin(s.handleHideWork(false)))

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
