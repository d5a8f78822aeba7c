package loadgen

import (
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/tagcount/tagcount/drafts"
)

func mustWorkload(t testing.TB, o WorkloadOptions) *Workload {
	t.Helper()
	w, err := NewWorkload(o)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestSameSeedGivesTheSameWorks(t *testing.T) {
	a := mustWorkload(t, WorkloadOptions{Seed: 42})
	b := mustWorkload(t, WorkloadOptions{Seed: 42})
	// b generates in another order: a work depends on its slot only.
	for _, slot := range []int64{999, 3, 0, 12345, 1} {
		b.Work(slot + 1)
		if got, want := b.Work(slot), a.Work(slot); !reflect.DeepEqual(got, want) {
			t.Fatalf("slot %d differs between two workloads of seed 42:\n%+v\n%+v", slot, got, want)
		}
	}
	c := mustWorkload(t, WorkloadOptions{Seed: 43})
	same := 0
	for slot := range int64(50) {
		if reflect.DeepEqual(a.Work(slot).Posted.Tags, c.Work(slot).Posted.Tags) {
			same++
		}
	}
	if same > 5 {
		t.Fatalf("%d of 50 works have the same tags under seeds 42 and 43", same)
	}
}

func TestSlotsMapToAuthorsRoundRobin(t *testing.T) {
	w := mustWorkload(t, WorkloadOptions{Seed: 1, Authors: 10})
	for slot, want := range map[int64][2]int64{0: {1, 0}, 9: {10, 0}, 10: {1, 1}, 25: {6, 2}} {
		wk := w.Work(slot)
		if wk.AuthorID != want[0] || wk.Index != want[1] {
			t.Errorf("slot %d: author %d index %d, want %v", slot, wk.AuthorID, wk.Index, want)
		}
	}
}

func TestTagsAreDrawnLikeTheArchive(t *testing.T) {
	const n = 40_000
	w := mustWorkload(t, WorkloadOptions{Seed: 7, ProbeEvery: -1})
	ratings := map[string]int{}
	var nawa, withCategory, tags, twoFandoms int
	for slot := range int64(n) {
		wk := w.Work(slot)
		for _, c := range []drafts.Content{wk.Draft, wk.Posted} {
			if err := c.Validate(); err != nil {
				t.Fatalf("slot %d: invalid content: %v", slot, err)
			}
		}
		tg := wk.Posted.Tags
		ratings[tg.Rating]++
		if len(tg.Warnings) == 1 && tg.Warnings[0] == "No Archive Warnings Apply" {
			nawa++
		}
		if len(tg.Categories) > 0 {
			withCategory++
		}
		if len(tg.Fandoms) == 2 {
			twoFandoms++
		}
		if len(tg.Fandoms) < 1 || len(tg.Fandoms) > 2 || len(tg.Warnings) < 1 {
			t.Fatalf("slot %d: %d fandoms, %d warnings", slot, len(tg.Fandoms), len(tg.Warnings))
		}
		tags += len(tg.List())
	}
	share := func(k int) float64 { return float64(k) / n }
	within := func(what string, got, want, tol float64) {
		t.Helper()
		if math.Abs(got-want) > tol {
			t.Errorf("%s: share %.4f, want %.2f ± %.3f", what, got, want, tol)
		}
	}
	within("Teen And Up Audiences", share(ratings["Teen And Up Audiences"]), 0.31, 0.01)
	within("General Audiences", share(ratings["General Audiences"]), 0.30, 0.01)
	within("Explicit", share(ratings["Explicit"]), 0.18, 0.01)
	within("Mature", share(ratings["Mature"]), 0.16, 0.01)
	within("Not Rated", share(ratings["Not Rated"]), 0.05, 0.005)
	within("No Archive Warnings Apply alone", share(nawa), 2.0/3, 0.01)
	within("works with a category", share(withCategory), 0.70, 0.015)
	within("works with two fandoms", share(twoFandoms), 0.20, 0.01)
	if mean := float64(tags) / n; mean < 9.5 || mean > 10.8 {
		t.Errorf("%.2f tags a work on average, want about 10", mean)
	}
}

func TestLaterEditsAndDeletesFollowTheMix(t *testing.T) {
	const n = 40_000
	w := mustWorkload(t, WorkloadOptions{Seed: 3, EditShare: 0.10, DeleteShare: 0.05})
	var edits, deletes int
	for slot := range int64(n) {
		wk := w.Work(slot)
		switch wk.Later {
		case LaterEdit:
			edits++
			if err := wk.Edit.Validate(); err != nil {
				t.Fatalf("slot %d: invalid edit: %v", slot, err)
			}
			if reflect.DeepEqual(wk.Edit.Tags.List(), wk.Posted.Tags.List()) {
				t.Fatalf("slot %d: the edit changes no tag", slot)
			}
			if wk.Edit.Tags.Rating != wk.Posted.Tags.Rating || !reflect.DeepEqual(wk.Edit.Tags.Fandoms, wk.Posted.Tags.Fandoms) {
				t.Fatalf("slot %d: the edit changed the rating or fandoms", slot)
			}
			if wk.Probe != "" && !slices.Contains(wk.Edit.Tags.Freeforms, wk.Probe) {
				t.Fatalf("slot %d: the edit dropped the probe tag", slot)
			}
		case LaterDelete:
			deletes++
		}
		if wk.Later == LaterNone && wk.Delay != 0 {
			t.Fatalf("slot %d: a delay with nothing to do later", slot)
		}
	}
	if s := float64(edits) / n; math.Abs(s-0.10) > 0.007 {
		t.Errorf("edited share %.4f, want 0.10", s)
	}
	if s := float64(deletes) / n; math.Abs(s-0.05) > 0.005 {
		t.Errorf("deleted share %.4f, want 0.05", s)
	}
}

func TestEveryProbeEveryWorkCarriesItsOwnTag(t *testing.T) {
	w := mustWorkload(t, WorkloadOptions{Seed: 1, ProbeEvery: 10, ProbePrefix: "probe run7"})
	for slot := range int64(30) {
		wk := w.Work(slot)
		if (slot%10 == 0) != (wk.Probe != "") {
			t.Fatalf("slot %d: probe %q", slot, wk.Probe)
		}
		if wk.Probe != "" && (!strings.HasPrefix(wk.Probe, "probe run7 ") || !slices.Contains(wk.Posted.Tags.Freeforms, wk.Probe)) {
			t.Fatalf("slot %d: probe %q not among %v", slot, wk.Probe, wk.Posted.Tags.Freeforms)
		}
	}
}

func TestBadWorkloadOptionsAreRejected(t *testing.T) {
	for name, o := range map[string]WorkloadOptions{
		"shares over 1":  {EditShare: 0.7, DeleteShare: 0.5},
		"exponent 1":     {Vocabulary: Vocabulary{Exponent: 1}},
		"huge body":      {BodyChars: drafts.MaxBody + 1},
		"negative count": {Authors: -1},
	} {
		if _, err := NewWorkload(o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestZipfRanksFollowThePowerLaw(t *testing.T) {
	z, err := newZipf(1000, 1.1, 1)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	counts := make([]int, 1000)
	const n = 400_000
	for range n {
		k := z.rank(r)
		if k < 0 || k >= 1000 {
			t.Fatalf("rank %d out of [0,1000)", k)
		}
		counts[k]++
	}
	// P(k) ∝ (1+k)^-1.1: the head's ratios are powers of 2 and 3/2.
	for _, c := range []struct {
		a, b int
		want float64
	}{{0, 1, math.Pow(2, 1.1)}, {1, 2, math.Pow(1.5, 1.1)}, {0, 3, math.Pow(4, 1.1)}} {
		got := float64(counts[c.a]) / float64(counts[c.b])
		if math.Abs(got-c.want)/c.want > 0.04 {
			t.Errorf("count(rank %d)/count(rank %d) = %.3f, want %.3f", c.a, c.b, got, c.want)
		}
	}
	// The exact share of rank 0.
	var norm float64
	for k := 1; k <= 1000; k++ {
		norm += math.Pow(float64(k), -1.1)
	}
	if got, want := float64(counts[0])/n, 1/norm; math.Abs(got-want) > 0.005 {
		t.Errorf("share of rank 0 %.4f, want %.4f", got, want)
	}
}

func TestZipfRejectsBadParameters(t *testing.T) {
	for _, c := range []struct {
		n    int
		s, v float64
	}{{0, 1.1, 1}, {10, 1, 1}, {10, 0.5, 1}, {10, 1.1, 0.5}} {
		if _, err := newZipf(c.n, c.s, c.v); err == nil {
			t.Errorf("newZipf(%d, %g, %g): no error", c.n, c.s, c.v)
		}
	}
}

func TestWeekendPeakRampsUpAndDown(t *testing.T) {
	const period = 100
	f := func(s float64) float64 { return WeekendPeak.factor(secs(s), secs(period)) }
	if got := f(0); math.Abs(got-0.2) > 1e-9 {
		t.Errorf("at the start %.3f of the peak, want 0.2", got)
	}
	if got := f(50); math.Abs(got-1) > 1e-9 {
		t.Errorf("at the middle %.3f of the peak, want 1", got)
	}
	if !(f(10) < f(30) && f(30) < f(50) && f(50) > f(70) && f(70) > f(90)) {
		t.Errorf("not a ramp up then down: %.2f %.2f %.2f %.2f %.2f", f(10), f(30), f(50), f(70), f(90))
	}
	if Steady.factor(secs(37), secs(period)) != 1 {
		t.Error("steady is not flat")
	}
	if _, err := ParseProfile("monday"); err == nil {
		t.Error("unknown profile accepted")
	}
}
