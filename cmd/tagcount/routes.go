package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/drafts/api"
)

// routes maps the whole HTTP API of API.md.
func (s *stack) routes(d *drafts.Handlers, tags *counter.Reader, rec *counter.Reconciler) http.Handler {
	mux := http.NewServeMux()
	author := func(h http.Handler) http.Handler { return s.Auth.Require(false, h) }
	admin := func(h http.Handler) http.Handler { return s.Auth.Require(true, h) }

	mux.Handle("POST /v1/drafts", author(d.HandleCreateDraft()))
	mux.Handle("GET /v1/drafts/{id}", author(d.HandleGetDraft()))
	mux.Handle("PUT /v1/drafts/{id}", author(d.HandleReplaceDraft()))
	mux.Handle("DELETE /v1/drafts/{id}", author(d.HandleDeleteDraft()))
	mux.Handle("POST /v1/drafts/{id}/post", author(d.HandlePostDraft()))
	mux.Handle("GET /v1/works/{id}", author(d.HandleGetWork()))
	mux.Handle("PUT /v1/works/{id}", author(d.HandleUpdateWork()))
	mux.Handle("DELETE /v1/works/{id}", author(d.HandleDeleteWork()))

	mux.Handle("GET /v1/tags/{id}", author(tags.HandleGetTag()))
	mux.Handle("GET /v1/tags", author(tags.HandleListTags()))

	mux.Handle("POST /v1/admin/reconcile", admin(rec.HandleStart()))
	mux.Handle("GET /v1/admin/reconcile/{id}", admin(rec.HandleReport()))
	mux.Handle("POST /v1/admin/tags/{id}/recount", admin(rec.HandleRecount()))
	mux.Handle("GET /v1/admin/flags", admin(s.Flags.Handler()))

	s.ops(mux)
	mux.Handle("/", api.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		return &api.Error{Status: http.StatusNotFound, Code: "no_such_route", Message: "no route " + r.Method + " " + r.URL.Path}
	}))
	return s.instrument(mux)
}

// opsRoutes is the HTTP surface of a process without the API role.
func (s *stack) opsRoutes() http.Handler {
	mux := http.NewServeMux()
	s.ops(mux)
	return s.instrument(mux)
}

func (s *stack) ops(mux *http.ServeMux) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		api.Encode(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.handleReady)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.Registry, promhttp.HandlerOpts{Registry: s.Registry}))
}

// handleReady reports whether each dependency this process uses answers.
func (s *stack) handleReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	checks := map[string]string{}
	ok := true
	check := func(name string, err error) {
		if err != nil {
			checks[name] = err.Error()
			ok = false
		} else {
			checks[name] = "ok"
		}
	}
	check("mysql", s.DB.PingContext(ctx))
	if s.opts.API || s.opts.Worker {
		check("redis", pingRedis(ctx, s.opts.RedisAddr))
	}
	if s.opts.Worker || s.opts.Counter {
		var d net.Dialer
		var err error = errNoBroker
		for _, b := range s.Brokers {
			var c net.Conn
			if c, err = d.DialContext(ctx, "tcp", b); err == nil {
				c.Close()
				break
			}
		}
		check("kafka", err)
	}
	status := http.StatusOK
	if !ok {
		status = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", "5")
	}
	api.Encode(w, status, map[string]any{"ready": ok, "checks": checks})
}

var errNoBroker = errors.New("no Kafka broker configured")

// instrument counts and times requests by route pattern.
func (s *stack) instrument(next http.Handler) http.Handler {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tagcount_http_requests_total", Help: "HTTP requests by route and status code.",
	}, []string{"route", "code"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "tagcount_http_request_duration_seconds", Help: "HTTP request latency by route.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"route"})
	s.Registry.MustRegister(requests, duration)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		requests.WithLabelValues(route, strconv.Itoa(sw.status)).Inc()
		duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
		s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", sw.status, "duration", time.Since(start))
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
