package loadgen

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestSpikeShapeRunsAtHalfThenTwiceThenHalfTheCapacity(t *testing.T) {
	s := SpikeShape{Capacity: 200, Before: 10 * time.Second, During: 5 * time.Second, After: 20 * time.Second}
	for at, want := range map[time.Duration]float64{0: 100, 9 * time.Second: 100, 10 * time.Second: 400, 14 * time.Second: 400, 15 * time.Second: 100} {
		if got := s.RateAt(at); got != want {
			t.Errorf("rate at %v = %v, want %v", at, got, want)
		}
	}
	if s.Duration() != 35*time.Second {
		t.Errorf("duration %v", s.Duration())
	}
}

func TestSpikeReportFindsThePhasesP99sAndWhenTheBacklogDrained(t *testing.T) {
	shape := SpikeShape{Capacity: 100, Before: 3 * time.Second, During: 2 * time.Second, After: 5 * time.Second}
	res := &Result{Check: &Check{Exact: true}}
	saves := []float64{10, 12, 11, 16, 14, 13, 12, 11, 10, 10}
	var samples []BacklogSample
	backlog := []int64{1, 2, 1, 50, 120, 90, 40, 2, 0, 0}
	for i := range 10 {
		res.Series = append(res.Series, SeriesPoint{Second: i, SaveP99Ms: saves[i], PostP99Ms: 2 * saves[i], PostRequests: 5})
		samples = append(samples, BacklogSample{At: time.Duration(i)*time.Second + 500*time.Millisecond, Drafts: backlog[i], OldestAgeS: float64(backlog[i]) / 10})
	}
	r := NewSpikeReport("new", shape, res, samples)
	if r.SaveP99Ms[PhaseBefore] != 11 || r.SaveP99Ms[PhaseSpike] != 16 {
		t.Errorf("save p99 by phase %v; want before 11 (median of 10, 12, 11), spike 16 (of 16, 14)", r.SaveP99Ms)
	}
	// The spike ends at 5 s; the backlog is back at its level before (at
	// most 2 drafts) in the sample at 7.5 s.
	if r.PeakBacklog != 120 || r.DrainedAfterS != 2.5 {
		t.Errorf("peak %d, drained after %v s; want 120 and 2.5", r.PeakBacklog, r.DrainedAfterS)
	}
	if len(r.Seconds) != 10 || r.Seconds[4].Phase != PhaseSpike || r.Seconds[4].Backlog != 120 || r.Seconds[4].RatePerSec != 200 {
		t.Errorf("second 4: %+v", r.Seconds[4])
	}
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"MET     save p99 during the spike vs before", "1.45×", "MET     backlog gone after the spike", "2.5 s (peak 120 drafts"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}
