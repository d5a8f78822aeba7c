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
	enqueueBatch    prometheus.Histogram
	limit           prometheus.Gauge
	stage           *prometheus.HistogramVec
	queuedFor       prometheus.Histogram
	backlog         prometheus.Gauge
	backlogAge      prometheus.Gauge

	wrangleRows      prometheus.Counter
	wrangleWorks     prometheus.Counter
	wrangleChanges   prometheus.Counter
	wrangleJobs      *prometheus.GaugeVec
	wrangleRowsPerTx prometheus.Histogram
}

// newMetrics registers the poster's collectors on reg (nil: none). A second
// registration on one registry panics: a process has one Poster.
func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		posts:           f.NewCounterVec(prometheus.CounterOpts{Name: "tagcount_posts_total", Help: "Posts by path (legacy: posted in the request; new: recorded and queued) and result."}, []string{"path", "result"}),
		duration:        f.NewHistogramVec(prometheus.HistogramOpts{Name: "tagcount_post_duration_seconds", Help: "Time to answer a Post, by path.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"path"}),
		enqueueFailures: f.NewCounter(prometheus.CounterOpts{Name: "tagcount_post_enqueue_failures_total", Help: "Post jobs that could not be enqueued at once (the requeuer enqueues them later)."}),
		batchSize:       f.NewHistogram(prometheus.HistogramOpts{Name: "tagcount_post_batch_size", Help: "Drafts posted per posting transaction of the group commit.", Buckets: prometheus.ExponentialBuckets(1, 2, 8)}),
		enqueueBatch:    f.NewHistogram(prometheus.HistogramOpts{Name: "tagcount_post_enqueue_batch_size", Help: "Posts' jobs enqueued together as one asynq job by the group enqueue.", Buckets: prometheus.ExponentialBuckets(1, 2, 8)}),
		limit:           f.NewGauge(prometheus.GaugeOpts{Name: "tagcount_posting_limit_drafts_per_second", Help: "The adaptive limit on drafts posted per second by posting jobs: it falls while authors' requests slow down, and grows back while they do not."}),
		stage: f.NewHistogramVec(prometheus.HistogramOpts{Name: "tagcount_post_stage_seconds", Help: "Where a queued post's time goes before its work is written: pickup (Post answered to its job running), batch_wait (job to its posting transaction, the adaptive limit's wait included), transaction (the posting transaction, once per batch).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 19)}, []string{"stage"}),
		queuedFor:  f.NewHistogram(prometheus.HistogramOpts{Name: "tagcount_post_queued_seconds", Help: "Time from a Post (or an edit or delete) being queued to its work being written, on the new path.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
		backlog:    f.NewGauge(prometheus.GaugeOpts{Name: "tagcount_posting_backlog_drafts", Help: "Drafts queued for posting (posts, edits, deletes not yet done), at the requeuer's last pass."}),
		backlogAge: f.NewGauge(prometheus.GaugeOpts{Name: "tagcount_posting_backlog_oldest_age_seconds", Help: "Age of the oldest queued draft at the requeuer's last pass (0 when none waits)."}),
		requeued:   f.NewCounter(prometheus.CounterOpts{Name: "tagcount_post_requeued_total", Help: "Post jobs enqueued again by the requeuer for drafts left queued."}),
	}
	m.wrangleRows = f.NewCounter(prometheus.CounterOpts{Name: "tagcount_wrangle_rows_written_total",
		Help: "Rows written by wrangling jobs: work_filters rows inserted and deleted, and outbox rows."})
	m.wrangleWorks = f.NewCounter(prometheus.CounterOpts{Name: "tagcount_wrangle_works_examined_total",
		Help: "Works a wrangling job re-filed (or found filed right)."})
	m.wrangleChanges = f.NewCounter(prometheus.CounterOpts{Name: "tagcount_wrangle_filter_changes_total",
		Help: "Times a wrangling job moved a work into or out of a tag's filter."})
	m.wrangleJobs = f.NewGaugeVec(prometheus.GaugeOpts{Name: "tagcount_wrangle_jobs",
		Help: "Wrangling jobs by state (running, done, superseded), as the runner last read them."}, []string{"state"})
	m.wrangleRowsPerTx = f.NewHistogram(prometheus.HistogramOpts{Name: "tagcount_wrangle_rows_per_transaction",
		Help: "Rows written by one transaction of a wrangling job (at most --wrangle-rows-per-tx).", Buckets: prometheus.ExponentialBuckets(1, 2, 12)})
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
