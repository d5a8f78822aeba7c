package loadgen

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

func TestAWorkloadsAuthorBaseGivesItsAuthorsIdsOfTheirOwn(t *testing.T) {
	w := mustWorkload(t, WorkloadOptions{Seed: 1, Authors: 3, AuthorBase: 100})
	for slot, want := range []int64{101, 102, 103, 101} {
		if got := w.Work(int64(slot)).AuthorID; got != want {
			t.Errorf("slot %d: author %d; want %d", slot, got, want)
		}
	}
	if _, err := NewWorkload(WorkloadOptions{AuthorBase: -1}); err == nil {
		t.Error("a negative author base was accepted")
	}
}

// tooMany answers every request 429, with Retry-After on all but every
// fifth.
func tooMany(t *testing.T) *httptest.Server {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%5 != 0 {
			w.Header().Set("Retry-After", "1")
		}
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestAStormSendsUntilItsContextEndsAndCountsWhatItGot(t *testing.T) {
	t.Parallel()
	srv := tooMany(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond) // how long the storm runs
	defer cancel()
	res, err := RunStorm(ctx, StormConfig{BaseURL: srv.URL, Token: "t", Method: "POST", Path: "/v1/drafts", Body: []byte(`{}`), Conns: 2})
	if err != nil {
		t.Fatal(err)
	}
	n := res.Statuses["429"]
	// The server numbers the requests it answered; a connection's last
	// one may go unread when the storm stops.
	if d := res.Missing429RetryAfter - n/5; n == 0 || n != res.Requests || d < -2 || d > 2 {
		t.Errorf("storm result %+v; want every request answered 429, one in five without Retry-After", res)
	}
}

func TestStatusCountsNamesAnswersByStatusAndTransportErrors(t *testing.T) {
	got := fmt.Sprint(StatusCounts(map[int]int64{0: 2, 201: 3, 429: 1}))
	if want := "map[201:3 429:1 transport:2]"; got != want {
		t.Errorf("StatusCounts = %s; want %s", got, want)
	}
}
