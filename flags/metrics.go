package flags

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	evaluations  *prometheus.CounterVec // flag, result
	evalErrors   prometheus.Counter
	syncs        *prometheus.CounterVec // result
	lastSync     prometheus.Gauge
	source       *prometheus.GaugeVec // source
	backupErrors prometheus.Counter

	// Pre-resolved children for the named flags, to keep evaluations cheap.
	on, off map[string]prometheus.Counter
}

// newMetrics builds the collectors and registers them with reg (nil: not
// registered). A second registration on one registry panics: a process has
// one Client.
func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		evaluations:  f.NewCounterVec(prometheus.CounterOpts{Name: "tagcount_flags_evaluations_total", Help: "Flag evaluations by flag and result (on/off); flags not named by the service count as flag=\"other\"."}, []string{"flag", "result"}),
		evalErrors:   f.NewCounter(prometheus.CounterOpts{Name: "tagcount_flags_evaluation_errors_total", Help: "Flag evaluations that failed on a malformed definition and returned off."}),
		syncs:        f.NewCounterVec(prometheus.CounterOpts{Name: "tagcount_flags_syncs_total", Help: "Fetches of flag definitions from the Unleash server by result (ok, not_modified, error)."}, []string{"result"}),
		lastSync:     f.NewGauge(prometheus.GaugeOpts{Name: "tagcount_flags_last_sync_timestamp_seconds", Help: "Unix time of the last successful fetch from the Unleash server; 0 if none yet."}),
		source:       f.NewGaugeVec(prometheus.GaugeOpts{Name: "tagcount_flags_source", Help: "1 for where the flag definitions in use came from (server, backup, bootstrap, default), 0 for the others."}, []string{"source"}),
		backupErrors: f.NewCounter(prometheus.CounterOpts{Name: "tagcount_flags_backup_errors_total", Help: "Failed writes of the flag backup file."}),
	}
	for _, r := range []string{"ok", "not_modified", "error"} {
		m.syncs.WithLabelValues(r)
	}
	m.on = map[string]prometheus.Counter{}
	m.off = map[string]prometheus.Counter{}
	for _, d := range definitions {
		m.on[d.Name] = m.evaluations.WithLabelValues(d.Name, "on")
		m.off[d.Name] = m.evaluations.WithLabelValues(d.Name, "off")
	}
	return m
}

func (m *metrics) evaluated(name string, on bool) {
	counters := m.off
	if on {
		counters = m.on
	}
	if c, ok := counters[name]; ok {
		c.Inc()
		return
	}
	result := "off"
	if on {
		result = "on"
	}
	m.evaluations.WithLabelValues("other", result).Inc()
}

func (m *metrics) synced(t time.Time) {
	m.lastSync.Set(float64(t.UnixNano()) / 1e9)
}

func (m *metrics) setSource(source string) {
	for _, s := range []string{SourceServer, SourceBackup, SourceBootstrap, SourceDefault} {
		v := 0.0
		if s == source {
			v = 1
		}
		m.source.WithLabelValues(s).Set(v)
	}
}
