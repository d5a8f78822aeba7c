package httpapi

import (
	"net/http"
	"sync"
	"time"

	"github.com/tagcount/tagcount/migrations/loop"
)

// A client that keeps sending while told to wait (a retry loop ignoring
// Retry-After) would otherwise be answered as fast as it sends, each 429
// costing a token check, a Redis round trip and an answer: on a busy
// machine, CPU taken from everyone else. So each replica remembers a
// denial: until when Redis said the key is over its limit, and the
// Retry-After the client was given (whole seconds, so no earlier). A
// request of the same author (or address) arriving before the former is
// a repeat: answered 429 without asking Redis, and only once the
// Retry-After given has passed. The denial is exact for that long
// whichever replica a request reaches (other replicas' requests can only
// push it later), and a client that honours Retry-After never meets the
// hold. A looping client on n connections is slowed to about n requests
// per Retry-After, each costing a map look-up and a timer.
const (
	// maxHold caps one hold.
	maxHold = time.Second
	// maxDenials bounds the remembered denials before expired ones are
	// dropped.
	maxDenials = 1 << 16
)

// denial is one key told to wait.
type denial struct {
	until   time.Time // when the limit allows the key one more request
	retryAt time.Time // when the Retry-After the client was given ends
}

// denials are the keys told to wait.
type denials struct {
	mu    sync.Mutex
	until map[string]denial
}

// get returns the denial of key, if its limit still refuses it.
func (d *denials) get(key string) (denial, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dn, ok := d.until[key]
	if ok && !time.Now().Before(dn.until) {
		delete(d.until, key)
		return denial{}, false
	}
	return dn, ok
}

// set remembers the denial of key.
func (d *denials) set(key string, dn denial) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.until) >= maxDenials {
		now := time.Now()
		for k, u := range d.until {
			if !now.Before(u.until) {
				delete(d.until, k)
			}
		}
		if len(d.until) >= maxDenials {
			clear(d.until) // all live: forgetting only costs Redis calls
		}
	}
	d.until[key] = dn
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
	loop.Sleep(r.Context(), min(d, maxHold))
}
