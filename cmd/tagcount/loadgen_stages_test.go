package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestStagesReportEachHistogramsQuantilesFromItsBuckets(t *testing.T) {
	reg := prometheus.NewRegistry()
	stage := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tagcount_post_stage_seconds", Buckets: []float64{0.01, 0.1, 1}}, []string{"stage"})
	reg.MustRegister(stage)
	// 50 pickups within 10 ms, 50 between 100 ms and 1 s: p50 at the first
	// bucket's bound, p99 interpolated to 98% of the way into the third.
	for range 50 {
		stage.WithLabelValues("pickup").Observe(0.005)
		stage.WithLabelValues("pickup").Observe(0.5)
	}
	var b bytes.Buffer
	writeStages(&b, "new", reg)
	out := b.String()
	if !strings.Contains(out, "job pickup") || !strings.Contains(out, "10.0     982.0       100") {
		t.Errorf("stages:\n%s\nwant job pickup at p50 10.0 ms, p99 982.0 ms, 100 seen", out)
	}
	if strings.Contains(out, "batch wait") {
		t.Errorf("a stage with no samples is listed:\n%s", out)
	}
}
