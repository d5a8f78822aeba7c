package loadgen

import (
	"math"
	"net/http"
	"testing"
	"time"
)

func TestSummaryPercentilesOfAUniformSpread(t *testing.T) {
	h := newHist()
	for ms := int64(1); ms <= 1000; ms++ {
		h.RecordValue(ms * 1000) // microseconds
	}
	s := summarize(h)
	for _, c := range []struct {
		name      string
		got, want float64
	}{{"p50", s.P50, 500}, {"p95", s.P95, 950}, {"p99", s.P99, 990}, {"max", s.Max, 1000}, {"mean", s.Mean, 500.5}} {
		// HdrHistogram with 3 significant digits: within 0.1%.
		if math.Abs(c.got-c.want)/c.want > 0.001 {
			t.Errorf("%s = %.3f ms, want %.1f", c.name, c.got, c.want)
		}
	}
	if s.Count != 1000 {
		t.Errorf("count %d", s.Count)
	}
	if (summarize(newHist()) != LatencySummary{}) {
		t.Error("an empty histogram has figures")
	}
}

func TestSummaryOfASkewedDistributionShowsTheTail(t *testing.T) {
	h := newHist()
	for range 985 {
		h.RecordValue(2_000) // 2 ms
	}
	for range 15 {
		h.RecordValue(800_000) // 800 ms
	}
	s := summarize(h)
	if math.Abs(s.P95-2) > 0.01 || math.Abs(s.P99-800) > 1 || math.Abs(s.Max-800) > 1 {
		t.Errorf("p95 %.3f p99 %.3f max %.3f, want 2, 800, 800", s.P95, s.P99, s.Max)
	}
}

func TestLatenciesOutOfRangeAreClamped(t *testing.T) {
	if micros(0) != histMin || micros(time.Hour) != histMax {
		t.Errorf("micros(0)=%d micros(1h)=%d", micros(0), micros(time.Hour))
	}
}

func TestRecorderBucketsBySecond(t *testing.T) {
	start := time.Unix(1000, 0)
	r := newRecorder(start)
	r.postCompleted(start.Add(200*time.Millisecond), 0, false)
	r.postCompleted(start.Add(2500*time.Millisecond), 40*time.Millisecond, true)
	r.postCompleted(start.Add(2600*time.Millisecond), 60*time.Millisecond, true)
	r.latency(OpPost, 30*time.Millisecond, start.Add(2100*time.Millisecond))
	s := r.series()
	if len(s) != 3 {
		t.Fatalf("%d buckets, want 3", len(s))
	}
	if s[0].Completed != 1 || s[1].Completed != 0 || s[2].Completed != 2 {
		t.Errorf("completed per second %d %d %d, want 1 0 2", s[0].Completed, s[1].Completed, s[2].Completed)
	}
	if math.Abs(s[2].PostP99Ms-30) > 0.5 || s[2].PostRequests != 1 {
		t.Errorf("second 2: post p99 %.2f ms over %d requests", s[2].PostP99Ms, s[2].PostRequests)
	}
	if got := summarize(r.postToPosted); got.Count != 2 || math.Abs(got.Max-60) > 0.1 {
		t.Errorf("post to posted %+v", got)
	}
}

func TestErrorsAreCountedByKind(t *testing.T) {
	for _, c := range []struct {
		err   error
		want  ErrorKind
		retry bool
	}{
		{&httpError{status: http.StatusServiceUnavailable, code: "deadlock"}, ErrDeadlock, true},
		{&httpError{status: http.StatusServiceUnavailable, code: "lock_wait_timeout"}, ErrLockWait, true},
		{&httpError{status: http.StatusServiceUnavailable, code: "dependency_unavailable"}, ErrOther5xx, true},
		{&httpError{status: http.StatusInternalServerError, code: "internal"}, ErrOther5xx, false},
		{&httpError{status: http.StatusUnprocessableEntity, code: "too_many_tags"}, ErrOther, false},
		{errString("connection reset"), ErrOther, true},
	} {
		if got := classify(c.err); got != c.want {
			t.Errorf("%v: kind %v, want %v", c.err, got, c.want)
		}
		if _, retry := retryable(c.err); retry != c.retry {
			t.Errorf("%v: retryable %v, want %v", c.err, retry, c.retry)
		}
	}
}

type errString string

func (e errString) Error() string { return string(e) }

func TestFlexIDReadsNumbersAndStrings(t *testing.T) {
	for in, want := range map[string]int64{`12`: 12, `"34"`: 34, `null`: 0} {
		var f flexID
		if err := f.UnmarshalJSON([]byte(in)); err != nil || int64(f) != want {
			t.Errorf("%s: %d, %v", in, f, err)
		}
	}
}
