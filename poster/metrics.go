package poster

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	posts           *prometheus.CounterVec
	duration        *prometheus.HistogramVec
	enqueueFailures prometheus.Counter
	requeued        prometheus.Counter
	batchSize       prometheus.Histogram
	queuedFor       prometheus.Histogram
	backlog         prometheus.Gauge
	backlogAge      prometheus.Gauge
}

// newMetrics registers the poster's collectors on reg (nil: none). A second
// registration on one registry panics: a process has one Poster.
func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		posts: f.NewCounterVec(prometheus.CounterOpts{
			Name: "tagcount_posts_total",
			Help: "Posts by path (legacy: posted in the request; new: recorded and queued) and result.",
		}, []string{"path", "result"}),
		duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tagcount_post_duration_seconds",
			Help:    "Time to answer a Post, by path.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"path"}),
		enqueueFailures: f.NewCounter(prometheus.CounterOpts{
			Name: "tagcount_post_enqueue_failures_total",
			Help: "Post jobs that could not be enqueued at once (the requeuer enqueues them later).",
		}),
		batchSize: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "tagcount_post_batch_size",
			Help:    "Drafts posted per posting transaction of the group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 8),
		}),
		queuedFor: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "tagcount_post_queued_seconds",
			Help:    "Time from a Post (or an edit or delete) being queued to its work being written, on the new path.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		backlog: f.NewGauge(prometheus.GaugeOpts{
			Name: "tagcount_posting_backlog_drafts",
			Help: "Drafts queued for posting (posts, edits, deletes not yet done), at the requeuer's last pass.",
		}),
		backlogAge: f.NewGauge(prometheus.GaugeOpts{
			Name: "tagcount_posting_backlog_oldest_age_seconds",
			Help: "Age of the oldest queued draft at the requeuer's last pass (0 when none waits).",
		}),
		requeued: f.NewCounter(prometheus.CounterOpts{
			Name: "tagcount_post_requeued_total",
			Help: "Post jobs enqueued again by the requeuer for drafts left queued.",
		}),
	}
	return m
}

func (m *metrics) observe(path string, start time.Time, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.posts.WithLabelValues(path, result).Inc()
	m.duration.WithLabelValues(path).Observe(time.Since(start).Seconds())
}
