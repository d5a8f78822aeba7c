package rollout

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

var states = []string{StateRunning, StatePaused, StateDone, StateRolledBack, StateAborted}

type metrics struct {
	percent   prometheus.Gauge
	step      prometheus.Gauge
	state     *prometheus.GaugeVec
	rollbacks *prometheus.CounterVec
	value     *prometheus.GaugeVec
	bound     *prometheus.GaugeVec
}

// newMetrics registers the runner's collectors on reg (nil: none).
func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		percent: f.NewGauge(prometheus.GaugeOpts{Name: "tagcount_rollout_percent", Help: "The new-path flag's rollout percentage as the latest rollout plan last set it."}),
		step:    f.NewGauge(prometheus.GaugeOpts{Name: "tagcount_rollout_step", Help: "The latest rollout plan's current step, counted from 1."}),
		state: f.NewGaugeVec(prometheus.GaugeOpts{Name: "tagcount_rollout_state",
			Help: "1 for the latest rollout plan's state (running, paused, done, rolled_back, aborted), 0 for the others."}, []string{"state"}),
		rollbacks: f.NewCounterVec(prometheus.CounterOpts{Name: "tagcount_rollout_rollbacks_total",
			Help: "Rollout plans this process rolled back, by the guard that failed."}, []string{"guard"}),
		value: f.NewGaugeVec(prometheus.GaugeOpts{Name: "tagcount_rollout_guard_value",
			Help: "Each rollout guard's value at the runner's last read (ratio, seconds, rows or drafts)."}, []string{"guard"}),
		bound: f.NewGaugeVec(prometheus.GaugeOpts{Name: "tagcount_rollout_guard_bound",
			Help: "Each rollout guard's bound, in the unit of its value."}, []string{"guard"}),
	}
	for _, s := range states {
		m.state.WithLabelValues(s)
	}
	for _, g := range []string{GuardErrorRatio, GuardPostP99, GuardFreshness, GuardOutboxAge, GuardConsumerLag, GuardBacklog} {
		m.rollbacks.WithLabelValues(g)
	}
	return m
}

func (m *metrics) plan(p Plan) {
	m.percent.Set(float64(p.Percent))
	m.step.Set(float64(p.Current + 1))
	for _, s := range states {
		v := 0.0
		if s == p.State {
			v = 1
		}
		m.state.WithLabelValues(s).Set(v)
	}
}

func (m *metrics) guards(v Verdict) {
	for _, g := range v.Guards {
		m.value.WithLabelValues(g.Name).Set(g.Value)
		m.bound.WithLabelValues(g.Name).Set(g.Bound)
	}
}
