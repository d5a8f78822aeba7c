package httpapi

import (
	"net/http"
	"sync"
	"time"

	"github.com/tagcount/tagcount/counter"
)

// A client that keeps sending while told to wait (a retry loop ignoring
// Retry-After) would otherwise be answered as fast as it sends, each 429
// costing a token check, a Redis round trip and an answer: on a busy
// machine, CPU taken from everyone else. So each replica remembers a
// denial until the time Redis gave, and a request of the same author (or
// address) arriving before it is a repeat: answered without asking Redis,
// and only once that time has come. The denial is exact for that long
// whichever replica a request reaches (other replicas' requests can only
// push it later), and a client that honours Retry-After never meets the
// hold. A looping client on n connections is slowed to about n requests
// per emission interval, each costing a map look-up and a timer.
const (
	// maxHold caps one hold (a limit's emission interval is well below).
	maxHold = time.Second
	// maxDenials bounds the remembered denials before expired ones are
	// dropped.
	maxDenials = 1 << 16
)

// denials are the keys told to wait, each until when.
type denials struct {
	mu    sync.Mutex
	until map[string]time.Time
}

// get returns until when key was told to wait, if that is still to come.
func (d *denials) get(key string) (time.Time, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	until, ok := d.until[key]
	if ok && !time.Now().Before(until) {
		delete(d.until, key)
		return time.Time{}, false
	}
	return until, ok
}

// set remembers that key is told to wait until until.
func (d *denials) set(key string, until time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.until) >= maxDenials {
		now := time.Now()
		for k, u := range d.until {
			if !now.Before(u) {
				delete(d.until, k)
			}
		}
		if len(d.until) >= maxDenials {
			clear(d.until) // all live: forgetting only costs Redis calls
		}
	}
	d.until[key] = until
}

// limited takes one request of class for key and returns its 429 when it
// is over the limit, after holding a repeat until its wait is over; nil
// otherwise.
func (s *server) limited(r *http.Request, class, key string) error {
	e, hold := s.limiter.allow(r.Context(), class, key)
	if e == nil {
		return nil
	}
	if hold > 0 {
		s.hold(r, hold)
	}
	return e
}

// hold waits d (at most maxHold) before a repeat is answered. A held
// request does no work, so it does not count against the in-flight cap
// that keeps room for other authors; at most as many as the cap are held
// at once, and past that a repeat is answered at once (it costs little).
func (s *server) hold(r *http.Request, d time.Duration) {
	l := s.limiter
	if l.held.Add(1) > int64(s.edge.MaxInFlight) {
		l.held.Add(-1)
		return
	}
	defer l.held.Add(-1)
	if counted, _ := r.Context().Value(inFlightKey{}).(bool); counted {
		s.shed.inFlight.Add(-1)
		defer s.shed.inFlight.Add(1)
	}
	counter.Sleep(r.Context(), min(d, maxHold))
}
