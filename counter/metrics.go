package counter

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metricRegister registers c on reg and returns it, or returns the collector
// already registered under the same descriptor, so two components (or two
// consumers in one test) may share a registry. A nil reg registers nothing.
func metricRegister[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		// A conflicting descriptor is a programming error the first test
		// run shows; keep the unregistered collector working.
	}
	return c
}

func metricCounter(reg prometheus.Registerer, name, help string) prometheus.Counter {
	return metricRegister(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help}))
}

func metricCounterVec(reg prometheus.Registerer, name, help string, labels ...string) *prometheus.CounterVec {
	return metricRegister(reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels))
}

func metricGauge(reg prometheus.Registerer, name, help string) prometheus.Gauge {
	return metricRegister(reg, prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help}))
}

func metricGaugeVec(reg prometheus.Registerer, name, help string, labels ...string) *prometheus.GaugeVec {
	return metricRegister(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels))
}

func metricHistogram(reg prometheus.Registerer, name, help string, buckets []float64) prometheus.Histogram {
	return metricRegister(reg, prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}))
}
