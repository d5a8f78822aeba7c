package loadgen

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram ranges: microseconds from 1 µs to 10 min.
const (
	histMin = 1
	histMax = int64(10 * time.Minute / time.Microsecond)
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, 3) }

// Bucket sizes of the time series.
const bucketWidth = time.Second

// LatencySummary is a latency distribution in milliseconds.
type LatencySummary struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P95   float64 `json:"p95_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

// summarize reads a histogram of microseconds as a LatencySummary.
func summarize(h *hdrhistogram.Histogram) LatencySummary {
	if h == nil || h.TotalCount() == 0 {
		return LatencySummary{}
	}
	ms := func(us int64) float64 { return round3(float64(us) / 1000) }
	return LatencySummary{
		Count: h.TotalCount(),
		Mean:  round3(h.Mean() / 1000),
		P50:   ms(h.ValueAtQuantile(50)),
		P95:   ms(h.ValueAtQuantile(95)),
		P99:   ms(h.ValueAtQuantile(99)),
		Max:   ms(h.Max()),
	}
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

func micros(d time.Duration) int64 {
	us := d.Microseconds()
	return min(max(us, histMin), histMax)
}

// bucket is one second of a run.
type bucket struct {
	completed int64
	accepted  int64
	errors    int64
	post      *hdrhistogram.Histogram
	save      *hdrhistogram.Histogram
}

// recorder collects a run's measurements. Safe for concurrent use.
type recorder struct {
	start time.Time

	mu             sync.Mutex
	ops            [numOps]*hdrhistogram.Histogram
	postToPosted   *hdrhistogram.Histogram
	postToCount    *hdrhistogram.Histogram
	errs           [numErrorKinds]int64
	gaveUps        int64
	created        int64
	accepted       int64
	completed      int64
	failedPosts    int64
	notCompleted   int64
	edited         int64
	deleted        int64
	probeTimeouts  int64
	missedArrivals int64
	lastCompletion time.Time
	buckets        []*bucket
	statuses       map[int]int64 // answers by HTTP status; 0: no answer (a transport error)
	noRetryAfter   int64         // 429s and 503s without a Retry-After
	window         *Window       // Config.Window: the same figures, for a live series; nil for none
}

func newRecorder(start time.Time) *recorder {
	r := &recorder{start: start, postToPosted: newHist(), postToCount: newHist(), statuses: map[int]int64{}}
	for i := range r.ops {
		r.ops[i] = newHist()
	}
	return r
}

// bucketAt returns the bucket of time t; r.mu must be held.
func (r *recorder) bucketAt(t time.Time) *bucket {
	i := int(t.Sub(r.start) / bucketWidth)
	if i < 0 {
		i = 0
	}
	for len(r.buckets) <= i {
		r.buckets = append(r.buckets, &bucket{
			post: hdrhistogram.New(histMin, histMax, 2),
			save: hdrhistogram.New(histMin, histMax, 2),
		})
	}
	return r.buckets[i]
}

func (r *recorder) latency(op Op, d time.Duration, at time.Time) {
	us := micros(d)
	r.mu.Lock()
	r.ops[op].RecordValue(us)
	switch op {
	case OpPost:
		r.bucketAt(at).post.RecordValue(us)
	case OpSave:
		r.bucketAt(at).save.RecordValue(us)
	}
	r.mu.Unlock()
	r.window.latency(op, us)
}

// status counts an answer with HTTP status code (0: none came), and
// whether a 429 or 503 came without the Retry-After the API promises.
func (r *recorder) status(code int, retryAfter bool) {
	r.mu.Lock()
	r.statuses[code]++
	if (code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable) && !retryAfter {
		r.noRetryAfter++
	}
	r.mu.Unlock()
	r.window.status(code, retryAfter)
}

// statusCounts returns the answers by status, "transport" for none; r.mu
// must be held.
func (r *recorder) statusCounts() map[string]int64 {
	return StatusCounts(r.statuses)
}

// StatusCounts names the counts of answers by HTTP status as a report
// shows them: the status as a string, "transport" when no answer came.
func StatusCounts(byCode map[int]int64) map[string]int64 {
	out := make(map[string]int64, len(byCode))
	for code, n := range byCode {
		k := strconv.Itoa(code)
		if code == 0 {
			k = "transport"
		}
		out[k] = n
	}
	return out
}

func (r *recorder) failure(k ErrorKind) {
	r.mu.Lock()
	r.errs[k]++
	r.bucketAt(time.Now()).errors++
	r.mu.Unlock()
}

// errorCounts returns the failures by kind; r.mu must be held.
func (r *recorder) errorCounts() Errors {
	return Errors{Deadlock: r.errs[ErrDeadlock], LockWait: r.errs[ErrLockWait], Other5xx: r.errs[ErrOther5xx], Other: r.errs[ErrOther], GaveUp: r.gaveUps}
}

func (r *recorder) count(field *int64) {
	r.mu.Lock()
	*field++
	r.mu.Unlock()
}

func (r *recorder) gaveUp() { r.count(&r.gaveUps) }

func (r *recorder) postAccepted(at time.Time) {
	r.mu.Lock()
	r.accepted++
	r.bucketAt(at).accepted++
	r.mu.Unlock()
	r.window.accept()
}

// postCompleted records that a posted work exists, posted after d.
func (r *recorder) postCompleted(at time.Time, d time.Duration, async bool) {
	r.mu.Lock()
	r.completed++
	r.bucketAt(at).completed++
	if at.After(r.lastCompletion) {
		r.lastCompletion = at
	}
	if async {
		r.postToPosted.RecordValue(micros(d))
	}
	r.mu.Unlock()
	r.window.complete()
}

func (r *recorder) countVisible(d time.Duration) {
	r.mu.Lock()
	r.postToCount.RecordValue(micros(d))
	r.mu.Unlock()
	r.window.fresh(micros(d))
}

// snapshot is what the progress line shows.
type snapshot struct {
	elapsed                          time.Duration
	accepted, completed, errors      int64
	lastCompletedPerSec, lastPostP99 float64
}

func (r *recorder) snapshot(now time.Time) snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := snapshot{elapsed: now.Sub(r.start), accepted: r.accepted, completed: r.completed}
	for _, n := range r.errs {
		s.errors += n
	}
	// The last whole second.
	if i := int(now.Sub(r.start)/bucketWidth) - 1; i >= 0 && i < len(r.buckets) {
		b := r.buckets[i]
		s.lastCompletedPerSec = float64(b.completed)
		s.lastPostP99 = float64(b.post.ValueAtQuantile(99)) / 1000
	}
	return s
}

// SeriesPoint is one second of a run.
type SeriesPoint struct {
	Second       int     `json:"t_s"`
	Completed    int64   `json:"posts_completed"`
	Accepted     int64   `json:"posts_accepted"`
	Errors       int64   `json:"errors"`
	PostP99Ms    float64 `json:"post_p99_ms"`
	SaveP99Ms    float64 `json:"save_p99_ms"`
	PostRequests int64   `json:"post_requests"`
}

func (r *recorder) series() []SeriesPoint {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]SeriesPoint, len(r.buckets))
	for i, b := range r.buckets {
		out[i] = SeriesPoint{
			Second: i, Completed: b.completed, Accepted: b.accepted, Errors: b.errors,
			PostP99Ms: float64(b.post.ValueAtQuantile(99)) / 1000, SaveP99Ms: float64(b.save.ValueAtQuantile(99)) / 1000,
			PostRequests: b.post.TotalCount(),
		}
	}
	return out
}
