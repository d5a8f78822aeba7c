package loadgen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/poster"
)

// Runs against the real service (both paths, deadlocks, retries, open
// loop, durations) are in cmd/tagcount/loadgen_test.go; these are the
// decisions a run makes, one function at a time.

func TestConfigNeedsAStopAndAPeakRate(t *testing.T) {
	wl := mustWorkload(t, WorkloadOptions{})
	for name, c := range map[string]Config{
		"no stop":           {BaseURL: "http://x", Workload: wl},
		"peak without rate": {BaseURL: "http://x", Workload: wl, Duration: time.Second, Profile: WeekendPeak},
		"open without rate": {BaseURL: "http://x", Workload: wl, Duration: time.Second, OpenLoop: true},
		"no workload":       {BaseURL: "http://x", Duration: time.Second},
		"no service":        {Workload: wl, Duration: time.Second},
	} {
		if _, err := Run(context.Background(), c); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestConfigDefaultsBoundRetriesAndWaits(t *testing.T) {
	wl := mustWorkload(t, WorkloadOptions{})
	c := Config{BaseURL: "http://x", Workload: wl, Posts: 1}
	if err := c.defaults(); err != nil {
		t.Fatal(err)
	}
	if c.Concurrency != 64 || c.Profile != Steady || c.MaxRetries != 5 || c.MaxRetryWait != time.Second ||
		c.PollTimeout != 30*time.Second || c.DrainTimeout != time.Minute || c.OutboxWait != 15*time.Second || c.HTTPClient == nil {
		t.Errorf("defaults %+v", c)
	}
	never := Config{BaseURL: "http://x", Workload: wl, Posts: 1, MaxRetries: -1}
	if err := never.defaults(); err != nil || never.MaxRetries != 0 {
		t.Errorf("MaxRetries -1 became %d (%v), want 0: no retries", never.MaxRetries, err)
	}
}

func TestRateLimitsWorkStartsAndTheWeekendPeakRampsIt(t *testing.T) {
	if lim := (&Config{}).limiter(); lim != nil {
		t.Errorf("no rate gives limiter %v, want none", lim.Limit())
	}
	steady := Config{Rate: 100, Profile: Steady, Duration: 10 * time.Second}
	if lim := steady.limiter(); lim.Limit() != 100 || lim.Burst() != 1 {
		t.Errorf("steady 100/s: limit %v burst %d", lim.Limit(), lim.Burst())
	}
	if got := steady.rateAt(7 * time.Second); got != 100 {
		t.Errorf("steady 100/s is %g at 7 s", got)
	}
	if lim := (&Config{Rate: 2500, Profile: Steady}).limiter(); lim.Burst() != 25 {
		t.Errorf("2500/s: burst %d, want 25 (a hundredth of a second's starts)", lim.Burst())
	}

	peak := Config{Rate: 100, Profile: WeekendPeak, Duration: 10 * time.Second}
	if lim := peak.limiter(); math.Abs(float64(lim.Limit())-20) > 1e-9 {
		t.Errorf("weekend peak of 100/s starts at %v, want 20", lim.Limit())
	}
	for _, c := range []struct {
		at   time.Duration
		want float64
	}{{0, 20}, {5 * time.Second, 100}, {10 * time.Second, 20}} {
		if got := peak.rateAt(c.at); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("weekend peak of 100/s over 10 s: %g at %v, want %g", got, c.at, c.want)
		}
	}
	open := Config{Rate: 100, Profile: WeekendPeak} // stops after a number of posts
	if got := open.rateAt(30 * time.Second); math.Abs(got-100) > 1e-9 {
		t.Errorf("weekend peak without a duration: %g at 30 s, want the peak (it repeats every minute)", got)
	}
}

// serviceError is the response the real API writes for err.
func serviceError(err error) (int, http.Header, []byte) {
	w := httptest.NewRecorder()
	httpapi.WriteError(slog.New(slog.DiscardHandler), w, httptest.NewRequest(http.MethodPost, "/v1/drafts/1/post", nil), err)
	return w.Code, w.Header(), w.Body.Bytes()
}

func TestServiceErrorResponsesAreCountedByTheirCode(t *testing.T) {
	for _, c := range []struct {
		name  string
		err   error
		kind  ErrorKind
		wait  time.Duration
		retry bool
	}{
		{"deadlock", &mysql.MySQLError{Number: 1213, Message: "Deadlock found"}, ErrDeadlock, time.Second, true},
		{"lock-wait timeout", fmt.Errorf("posting: %w", &mysql.MySQLError{Number: 1205, Message: "Lock wait timeout"}), ErrLockWait, time.Second, true},
		{"unreachable dependency", mysql.ErrInvalidConn, ErrOther5xx, 5 * time.Second, true},
		{"internal", errors.New("boom"), ErrOther5xx, 0, false},
		{"conflict", drafts.ErrPosted, ErrOther, 0, false},
		{"not found", poster.ErrWorkNotFound, ErrOther, 0, false},
	} {
		he := responseError(serviceError(c.err))
		if got := classify(he); got != c.kind {
			t.Errorf("%s (%v): counted as %v, want %v", c.name, he, got, c.kind)
		}
		if wait, retry := retryable(he); wait != c.wait || retry != c.retry {
			t.Errorf("%s (%v): retry %v after %v, want %v after %v", c.name, he, retry, wait, c.retry, c.wait)
		}
	}
	if he := responseError(http.StatusBadGateway, http.Header{}, []byte("<html>bad gateway</html>")); classify(he) != ErrOther5xx || he.code != "" {
		t.Errorf("a proxy's HTML 502 read as %v, %v", he, classify(he))
	}
}

func TestRetriesWaitForRetryAfterUpToTheCapThenGiveUp(t *testing.T) {
	deadlock := responseError(serviceError(&mysql.MySQLError{Number: 1213}))
	internal := responseError(serviceError(errors.New("boom")))
	c := &client{maxRetries: 2, maxWait: 300 * time.Millisecond}
	for _, tc := range []struct {
		name    string
		c       *client
		err     error
		attempt int
		wait    time.Duration
		retry   bool
	}{
		{"a deadlock's Retry-After: 1 is capped", c, deadlock, 0, 300 * time.Millisecond, true},
		{"a long cap honours Retry-After", &client{maxRetries: 2, maxWait: 5 * time.Second}, deadlock, 0, time.Second, true},
		{"the last retry", c, deadlock, 1, 300 * time.Millisecond, true},
		{"after the last retry", c, deadlock, 2, 0, false},
		{"no retries", &client{maxRetries: 0, maxWait: time.Second}, deadlock, 0, 0, false},
		{"a 500 is not retried", c, internal, 0, 0, false},
		{"a transport error waits 50ms", c, errString("connection reset"), 0, 50 * time.Millisecond, true},
		{"a cancelled request is not retried", c, context.Canceled, 0, 0, false},
	} {
		wait, retry := tc.c.nextTry(tc.err, tc.attempt)
		if wait != tc.wait || retry != tc.retry {
			t.Errorf("%s: retry %v after %v, want %v after %v", tc.name, retry, wait, tc.retry, tc.wait)
		}
	}
}

func TestJitterSpreadsRetriesOverHalfTheirWaitAgain(t *testing.T) {
	const wait = 100 * time.Millisecond
	seen := map[time.Duration]bool{}
	for range 200 {
		got := jitter(wait)
		if got < wait || got >= wait+wait/2 {
			t.Fatalf("jitter(%v) = %v, want within [%v, %v)", wait, got, wait, wait+wait/2)
		}
		seen[got] = true
	}
	if len(seen) < 100 {
		t.Errorf("200 jittered waits took only %d distinct values", len(seen))
	}
	if got := jitter(0); got != 0 {
		t.Errorf("jitter(0) = %v", got)
	}
}

func TestBareTransactionErrorsCountAsTheirResponsesWould(t *testing.T) {
	for _, c := range []struct {
		err  error
		want ErrorKind
	}{
		{&mysql.MySQLError{Number: 1213, Message: "Deadlock found"}, ErrDeadlock},
		{fmt.Errorf("bump: %w", &mysql.MySQLError{Number: 1205, Message: "Lock wait timeout"}), ErrLockWait},
		{&mysql.MySQLError{Number: 1062, Message: "Duplicate entry"}, ErrOther5xx}, // a 500
		{errors.New("boom"), ErrOther5xx},
		{&drafts.ValidationError{Field: "tags.rating", Code: "unknown_rating", Message: "no such rating"}, ErrOther},
	} {
		if got := classifyTx(c.err); got != c.want {
			t.Errorf("%v: %v, want %v", c.err, got, c.want)
		}
	}
	wl := mustWorkload(t, WorkloadOptions{})
	if _, err := RunBare(context.Background(), nil, wl, 4, time.Second, 0); err == nil {
		t.Error("no error without a transaction")
	}
}
