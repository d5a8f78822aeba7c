package reconcile

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// metrics are the reconcile job's Prometheus metrics. The "last
// run" gauges describe the last finished run over all tags (single-tag
// recounts leave them alone).
type metrics struct {
	drifted     prometheus.Gauge
	corrected   prometheus.Gauge
	totalDrift  prometheus.Gauge
	duration    prometheus.Gauge
	lastSuccess prometheus.Gauge
	corrections prometheus.Counter
	runs        *prometheus.CounterVec
	negative    prometheus.Gauge
	publicDrift prometheus.Gauge
	filterDrift prometheus.Gauge
}

// newMetrics registers the metrics on reg (nil registers nothing). A
// second registration on one registry panics: a process has one Reconciler.
func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		drifted:     f.NewGauge(prometheus.GaugeOpts{Name: "tagcount_reconcile_last_drifted_tags", Help: "Tags whose count had drifted, found by the last finished full reconcile run."}),
		corrected:   f.NewGauge(prometheus.GaugeOpts{Name: "tagcount_reconcile_last_corrected_tags", Help: "Tags corrected by the last finished full reconcile run (0 for a dry run)."}),
		totalDrift:  f.NewGauge(prometheus.GaugeOpts{Name: "tagcount_reconcile_last_total_abs_drift", Help: "Sum of absolute drift found by the last finished full reconcile run."}),
		duration:    f.NewGauge(prometheus.GaugeOpts{Name: "tagcount_reconcile_last_duration_seconds", Help: "Duration of the last finished full reconcile run."}),
		lastSuccess: f.NewGauge(prometheus.GaugeOpts{Name: "tagcount_reconcile_last_success_timestamp_seconds", Help: "Unix time at which the last successful full reconcile run finished."}),
		corrections: f.NewCounter(prometheus.CounterOpts{Name: "tagcount_reconcile_corrections_total", Help: "Count corrections written by reconcile."}),
		runs:        f.NewCounterVec(prometheus.CounterOpts{Name: "tagcount_reconcile_runs_total", Help: "Reconcile runs finished, by state (done, failed)."}, []string{"state"}),
		negative: f.NewGauge(prometheus.GaugeOpts{Name: "tagcount_reconcile_negative_counts",
			Help: "Tags with a negative stored count found by the last finished full reconcile run: always a bug."}),
		publicDrift: f.NewGauge(prometheus.GaugeOpts{Name: "tagcount_reconcile_last_total_abs_public_drift",
			Help: "Sum of absolute public_count drift found by the last finished full reconcile run."}),
		filterDrift: f.NewGauge(prometheus.GaugeOpts{Name: "tagcount_reconcile_last_total_abs_filter_drift",
			Help: "Sum of absolute filter_count and public_filter_count drift found by the last finished full reconcile run."}),
	}
}

func (m *metrics) observe(rep Report) {
	m.runs.WithLabelValues(rep.State).Inc()
	if rep.TagID != 0 || rep.Scope != "" || rep.State != StateDone {
		return
	}
	m.negative.Set(float64(rep.NegativeCounts))
	m.publicDrift.Set(float64(rep.TotalAbsPublicDrift))
	m.filterDrift.Set(float64(rep.TotalAbsFilterDrift + rep.TotalAbsPublicFilterDrift))
	m.drifted.Set(float64(rep.TagsDrifted))
	m.corrected.Set(float64(rep.TagsCorrected))
	m.totalDrift.Set(float64(rep.TotalAbsDrift))
	m.duration.Set(rep.Duration().Seconds())
	m.lastSuccess.Set(float64(rep.FinishedAt.Unix()))
}
