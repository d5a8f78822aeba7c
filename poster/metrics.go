package poster

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	posts           *prometheus.CounterVec
	duration        *prometheus.HistogramVec
	enqueueFailures prometheus.Counter
	requeued        prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		posts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tagcount_posts_total",
			Help: "Posts by path (legacy: posted in the request; new: recorded and queued) and result.",
		}, []string{"path", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tagcount_post_duration_seconds",
			Help:    "Time to answer a Post, by path.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"path"}),
		enqueueFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tagcount_post_enqueue_failures_total",
			Help: "Post jobs that could not be enqueued at once (the requeuer enqueues them later).",
		}),
		requeued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tagcount_post_requeued_total",
			Help: "Post jobs enqueued again by the requeuer for drafts left queued.",
		}),
	}
	if reg != nil {
		// A process may run two posters (the API's and the worker's, each
		// with its own pool) on one registry: they share the collectors.
		m.posts = register(reg, m.posts)
		m.duration = register(reg, m.duration)
		m.enqueueFailures = register(reg, m.enqueueFailures)
		m.requeued = register(reg, m.requeued)
	}
	return m
}

// register registers c, or returns the equal collector already registered.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		if are, ok := err.(prometheus.AlreadyRegisteredError); ok {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err)
	}
	return c
}

func (m *metrics) observe(path string, start time.Time, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.posts.WithLabelValues(path, result).Inc()
	m.duration.WithLabelValues(path).Observe(time.Since(start).Seconds())
}
