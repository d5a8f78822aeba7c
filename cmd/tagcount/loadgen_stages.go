package main

import (
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// freshnessStages are the service's histograms that split Post → small-tag
// count into its stages, in the order a post passes them: name, label
// value (empty: none) and what it measures.
var freshnessStages = []struct{ metric, label, what string }{
	{"tagcount_post_stage_seconds", "pickup", "job pickup (Post answered → its job runs)"},
	{"tagcount_post_stage_seconds", "batch_wait", "batch wait (job → its posting transaction; the limit's wait)"},
	{"tagcount_post_stage_seconds", "transaction", "posting transaction (per batch)"},
	{"tagcount_post_queued_seconds", "", "Post → work written (the three above)"},
	{"tagcount_event_age_seconds", "", "publish + Kafka + consume (outbox commit → counter reads it)"},
	{"tagcount_flush_duration_seconds", "", "apply transaction (per batch)"},
}

// writeStages writes, for each freshness stage, the p50 and p99 of its
// histogram in reg (estimated within buckets, as Prometheus'
// histogram_quantile does) and how many it saw.
func writeStages(w io.Writer, path string, reg *prometheus.Registry) {
	mfs, err := reg.Gather()
	if err != nil {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "loadgen: %s: freshness by stage (the service's histograms; p50 / p99 ms, count):\n", path)
	for _, st := range freshnessStages {
		h := findHistogram(mfs, st.metric, st.label)
		if h == nil || h.GetSampleCount() == 0 {
			continue
		}
		fmt.Fprintf(&b, "  %-64s %9.1f %9.1f %9d\n", st.what, 1000*bucketQuantile(h, 0.5), 1000*bucketQuantile(h, 0.99), h.GetSampleCount())
	}
	io.WriteString(w, b.String())
}

// findHistogram returns the histogram name (with any label = value) in mfs.
func findHistogram(mfs []*dto.MetricFamily, name, value string) *dto.Histogram {
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if value == "" || (len(m.GetLabel()) > 0 && m.GetLabel()[0].GetValue() == value) {
				return m.GetHistogram()
			}
		}
	}
	return nil
}

// bucketQuantile estimates quantile q of h by linear interpolation within
// its cumulative buckets; beyond the last bound it answers that bound.
func bucketQuantile(h *dto.Histogram, q float64) float64 {
	rank := q * float64(h.GetSampleCount())
	lower, below := 0.0, 0.0
	for _, bk := range h.GetBucket() {
		upper, n := bk.GetUpperBound(), float64(bk.GetCumulativeCount())
		if n >= rank {
			if n == below {
				return upper
			}
			return lower + (upper-lower)*(rank-below)/(n-below)
		}
		lower, below = upper, n
		if math.IsInf(upper, 1) {
			break
		}
	}
	return lower
}
