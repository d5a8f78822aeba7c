package counter

import (
	"github.com/prometheus/client_golang/prometheus"
)

// reconcileMetrics are the reconcile job's Prometheus metrics. The "last
// run" gauges describe the last finished run over all tags (single-tag
// recounts leave them alone).
type reconcileMetrics struct {
	drifted     prometheus.Gauge
	corrected   prometheus.Gauge
	totalDrift  prometheus.Gauge
	duration    prometheus.Gauge
	lastSuccess prometheus.Gauge
	corrections prometheus.Counter
	runs        *prometheus.CounterVec
}

// newReconcileMetrics registers the metrics on reg (nil registers nothing);
// two Reconcilers on one registry share them.
func newReconcileMetrics(reg prometheus.Registerer) *reconcileMetrics {
	return &reconcileMetrics{
		drifted: metricGauge(reg, "tagcount_reconcile_last_drifted_tags",
			"Tags whose count had drifted, found by the last finished full reconcile run."),
		corrected: metricGauge(reg, "tagcount_reconcile_last_corrected_tags",
			"Tags corrected by the last finished full reconcile run (0 for a dry run)."),
		totalDrift: metricGauge(reg, "tagcount_reconcile_last_total_abs_drift",
			"Sum of absolute drift found by the last finished full reconcile run."),
		duration: metricGauge(reg, "tagcount_reconcile_last_duration_seconds",
			"Duration of the last finished full reconcile run."),
		lastSuccess: metricGauge(reg, "tagcount_reconcile_last_success_timestamp_seconds",
			"Unix time at which the last successful full reconcile run finished."),
		corrections: metricCounter(reg, "tagcount_reconcile_corrections_total",
			"Count corrections written by reconcile."),
		runs: metricCounterVec(reg, "tagcount_reconcile_runs_total",
			"Reconcile runs finished, by state (done, failed).", "state"),
	}
}

func (m *reconcileMetrics) observe(rep ReconcileReport) {
	m.runs.WithLabelValues(rep.State).Inc()
	if rep.TagID != 0 || rep.State != ReconcileStateDone {
		return
	}
	m.drifted.Set(float64(rep.TagsDrifted))
	m.corrected.Set(float64(rep.TagsCorrected))
	m.totalDrift.Set(float64(rep.TotalAbsDrift))
	m.duration.Set(rep.Duration().Seconds())
	m.lastSuccess.Set(float64(rep.FinishedAt.Unix()))
}
