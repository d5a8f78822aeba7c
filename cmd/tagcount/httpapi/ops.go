package httpapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// instrument counts and times requests by route pattern.
func (s *server) instrument(next http.Handler) http.Handler {
	f := promauto.With(s.Registry)
	requests := f.NewCounterVec(prometheus.CounterOpts{
		Name: "tagcount_http_requests_total", Help: "HTTP requests by route and status code.",
	}, []string{"route", "code"})
	duration := f.NewHistogramVec(prometheus.HistogramOpts{
		Name: "tagcount_http_request_duration_seconds", Help: "HTTP request latency by route.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"route"})
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
		s.log.DebugContext(r.Context(), "request", "method", r.Method, "path", r.URL.Path, "status", sw.status, "duration", time.Since(start))
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
