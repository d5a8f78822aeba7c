package counter

import (
	"errors"

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

func newReconcileMetrics(reg prometheus.Registerer) *reconcileMetrics {
	m := &reconcileMetrics{
		drifted: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tagcount_reconcile_last_drifted_tags",
			Help: "Tags whose count had drifted, found by the last finished full reconcile run.",
		}),
		corrected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tagcount_reconcile_last_corrected_tags",
			Help: "Tags corrected by the last finished full reconcile run (0 for a dry run).",
		}),
		totalDrift: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tagcount_reconcile_last_total_abs_drift",
			Help: "Sum of absolute drift found by the last finished full reconcile run.",
		}),
		duration: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tagcount_reconcile_last_duration_seconds",
			Help: "Duration of the last finished full reconcile run.",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tagcount_reconcile_last_success_timestamp_seconds",
			Help: "Unix time at which the last successful full reconcile run finished.",
		}),
		corrections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tagcount_reconcile_corrections_total",
			Help: "Count corrections written by reconcile.",
		}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tagcount_reconcile_runs_total",
			Help: "Reconcile runs finished, by state (done, failed).",
		}, []string{"state"}),
	}
	if reg == nil {
		return m
	}
	m.drifted = reconcileRegister(reg, m.drifted)
	m.corrected = reconcileRegister(reg, m.corrected)
	m.totalDrift = reconcileRegister(reg, m.totalDrift)
	m.duration = reconcileRegister(reg, m.duration)
	m.lastSuccess = reconcileRegister(reg, m.lastSuccess)
	m.corrections = reconcileRegister(reg, m.corrections)
	m.runs = reconcileRegister(reg, m.runs)
	return m
}

// reconcileRegister registers c, or returns the collector already registered
// under its name (two Reconcilers on one registry share metrics).
func reconcileRegister[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
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
