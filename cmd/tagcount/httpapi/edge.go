package httpapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"golang.org/x/sync/semaphore"

	"github.com/tagcount/tagcount/migrations"
)

// Defaults of Edge. Every request ends (docs/design.md invariant 12): the
// request deadline bounds the work, the server's timeouts bound the client's
// side, and the write timeout outlasts the deadline so the 503 that ends a
// request past its deadline is still delivered.
const (
	DefaultRequestTimeout    = 10 * time.Second
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 15 * time.Second
	DefaultWriteTimeout      = DefaultRequestTimeout + writeMargin
	DefaultIdleTimeout       = 60 * time.Second
	DefaultMaxHeaderBytes    = 64 << 10 // a bearer token is a few hundred bytes
	// DefaultMaxInFlight is enough requests to keep a pool of 64
	// connections busy while bodies arrive and answers leave (four per
	// connection), few enough that a flood is refused rather than queued.
	// It does not shrink with the pool: a request past the pool's size
	// waits up to QueueWait for a database slot (DBSlots) before 503.
	DefaultMaxInFlight = 256
	// DefaultQueueWait is how long a request waits for a database slot (or
	// for room to read its body) before it is answered 503 overloaded: a
	// quick "try again" beats a queue that only grows.
	DefaultQueueWait = time.Second
	// DefaultBodyBytesInFlight caps the request bodies held in memory at
	// once: sixteen 4 MiB bodies, or a thousand typical ones.
	DefaultBodyBytesInFlight = 64 << 20
)

// writeMargin is how much longer than the deadline the write timeout is by
// default: time to write the answer of a request that used all of it.
const writeMargin = 20 * time.Second

// Edge is how the HTTP layer keeps the service answering: deadlines, the
// http.Server's timeouts, shedding when full, and rate limits. Zero fields
// take the defaults above, except RateLimits, whose zero limits are off.
type Edge struct {
	// RequestTimeout is every request's deadline; past it the request is
	// answered 503 timeout.
	RequestTimeout time.Duration
	// MaxInFlight caps the API requests being served at once; past it they
	// are answered 503 overloaded at once.
	MaxInFlight int
	// DBSlots caps the API requests doing their work (past reading the
	// body) at once; it is the size of the database pool.
	DBSlots int
	// QueueWait bounds the wait for a database slot or for body memory.
	QueueWait time.Duration
	// BodyBytesInFlight caps the bytes of request bodies held at once.
	BodyBytesInFlight int64
	RateLimits        RateLimits

	// The http.Server's own timeouts and header limit.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	MaxHeaderBytes                                            int
}

// WithDefaults returns e with its zero fields set to the defaults; a zero
// write timeout is the deadline plus a margin to write the answer.
func (e Edge) WithDefaults() Edge {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&e.RequestTimeout, DefaultRequestTimeout)
	def(&e.QueueWait, DefaultQueueWait)
	def(&e.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&e.ReadTimeout, DefaultReadTimeout)
	def(&e.WriteTimeout, e.RequestTimeout+writeMargin)
	def(&e.IdleTimeout, DefaultIdleTimeout)
	def(&e.RateLimits.Timeout, DefaultRateLimitTimeout)
	if e.MaxInFlight <= 0 {
		e.MaxInFlight = DefaultMaxInFlight
	}
	if e.DBSlots <= 0 {
		e.DBSlots = migrations.DefaultMaxOpenConns
	}
	if e.BodyBytesInFlight <= 0 {
		e.BodyBytesInFlight = DefaultBodyBytesInFlight
	}
	if e.MaxHeaderBytes <= 0 {
		e.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if e.RateLimits.Prefix == "" {
		e.RateLimits.Prefix = DefaultRateLimitPrefix
	}
	return e
}

// Reasons a request is shed, the label of tagcount_http_shed_total.
const (
	shedInFlight  = "in_flight"
	shedDBWait    = "db_wait"
	shedBodyBytes = "body_bytes"
)

// shedder refuses work the process cannot take now.
type shedder struct {
	edge      Edge
	inFlight  atomic.Int64
	dbSlots   *semaphore.Weighted
	bodies    *semaphore.Weighted
	bodyBytes atomic.Int64
	dbInUse   atomic.Int64 // slots of dbSlots held
	shed      *prometheus.CounterVec
}

func newShedder(e Edge, reg prometheus.Registerer) *shedder {
	sh := &shedder{edge: e, dbSlots: semaphore.NewWeighted(int64(e.DBSlots)),
		bodies: semaphore.NewWeighted(e.BodyBytesInFlight)}
	f := promauto.With(reg)
	sh.shed = f.NewCounterVec(prometheus.CounterOpts{
		Name: "tagcount_http_shed_total", Help: "API requests answered 503 overloaded, by reason (in_flight, db_wait, body_bytes).",
	}, []string{"reason"})
	for _, r := range []string{shedInFlight, shedDBWait, shedBodyBytes} {
		sh.shed.WithLabelValues(r)
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "tagcount_http_in_flight", Help: "API requests being served."},
		func() float64 { return float64(sh.inFlight.Load()) })
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "tagcount_http_db_slots_in_use", Help: "API requests holding a database slot."},
		func() float64 { return float64(sh.dbInUse.Load()) })
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "tagcount_http_body_bytes_in_flight", Help: "Bytes of request bodies held in memory."},
		func() float64 { return float64(sh.bodyBytes.Load()) })
	return sh
}

func (sh *shedder) overloaded(reason string) *Error {
	sh.shed.WithLabelValues(reason).Inc()
	return unavailable("overloaded", "the service is overloaded; nothing was saved, try again shortly", 1)
}

// deadline gives every request the edge's deadline.
func (s *server) deadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), s.edge.RequestTimeout)
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// capInFlight answers 503 overloaded at once when MaxInFlight requests are
// being served: queueing them would only make every answer later.
func (s *server) capInFlight(next http.Handler) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		defer s.shed.inFlight.Add(-1)
		if s.shed.inFlight.Add(1) > int64(s.edge.MaxInFlight) {
			return s.shed.overloaded(shedInFlight)
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), inFlightKey{}, true)))
		return nil
	})
}

// inFlightKey marks a request's context as counted in flight.
type inFlightKey struct{}

// dbSlot runs next holding one of DBSlots slots, waiting at most QueueWait
// for one (503 overloaded past it), so requests beyond what the pool can
// serve are refused quickly instead of queueing for a connection until
// their deadline. next's answer is held in memory and written once the
// slot is released: a client that reads its answer slowly, or never, holds
// a slot of the in-flight cap until the write timeout, not a database slot.
func (s *server) dbSlot(next http.Handler) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		if err := s.acquire(r.Context(), s.shed.dbSlots, 1, shedDBWait); err != nil {
			return err
		}
		s.shed.dbInUse.Add(1)
		answer := &heldAnswer{w: w}
		func() {
			defer func() { s.shed.dbInUse.Add(-1); s.shed.dbSlots.Release(1) }()
			next.ServeHTTP(answer, r)
		}()
		answer.send()
		return nil
	})
}

// heldAnswer is a ResponseWriter that keeps the status and body until send
// writes them to w; headers go to w's at once, as nothing sends them early.
type heldAnswer struct {
	w      http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (a *heldAnswer) Header() http.Header { return a.w.Header() }

func (a *heldAnswer) WriteHeader(status int) {
	if a.status == 0 {
		a.status = status
	}
}

func (a *heldAnswer) Write(p []byte) (int, error) {
	a.WriteHeader(http.StatusOK)
	return a.body.Write(p)
}

// Unwrap lets a handler's http.ResponseController reach the connection.
func (a *heldAnswer) Unwrap() http.ResponseWriter { return a.w }

// send writes the held answer; one with no status and no body is left to
// net/http (a 200 with no body).
func (a *heldAnswer) send() {
	if a.status != 0 {
		a.w.WriteHeader(a.status)
		a.w.Write(a.body.Bytes())
	}
}

// acquire takes n of sem within QueueWait: the request's own error when its
// context ends first, 503 overloaded (counted under reason) when the wait
// runs out.
func (s *server) acquire(ctx context.Context, sem *semaphore.Weighted, n int64, reason string) error {
	if sem.TryAcquire(n) {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, s.edge.QueueWait)
	defer cancel()
	if err := sem.Acquire(wctx, n); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return s.shed.overloaded(reason)
	}
	return nil
}

// readBody reads the request body (up to limit bytes) into memory before
// next runs, within BodyBytesInFlight bytes of bodies held at once, and by
// the request's deadline: a slow client is cut off rather than holding a
// slot. A body's bytes are counted against BodyBytesInFlight as they
// arrive, not as its Content-Length announces them, so bodies that trickle
// in hold only what they sent. A body over limit is read to the limit and
// dropped, and next's decode answers 413 at its place in the order of
// checks, as it answers a body that could not be read.
func (s *server) readBody(limit int64, next http.Handler) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		var held int64
		defer func() { s.shed.bodyBytes.Add(-held); s.shed.bodies.Release(held) }()
		reserve := func(n int64) error {
			if err := s.acquire(r.Context(), s.shed.bodies, n, shedBodyBytes); err != nil {
				return err
			}
			held += n
			s.shed.bodyBytes.Add(n)
			return nil
		}
		if r.ContentLength > limit {
			reserve = nil // read to the limit, keep nothing
		}
		body, err := readAll(w, r, limit, reserve)
		if err != nil {
			return err
		}
		r.Body = body
		next.ServeHTTP(w, r)
		return nil
	})
}

// bodyChunk is how much of a body is read at once: the most a request
// holds beyond what reserve has counted.
const bodyChunk = 32 << 10

// readAll reads r's body by the request's deadline, each chunk counted with
// reserve as it arrives (or, when reserve is nil, dropped), and returns
// what the handler reads in its place: the bytes, or the read's error. An
// error of reserve (503 overloaded, or the request's end) is returned as
// it is.
func readAll(w http.ResponseWriter, r *http.Request, limit int64, reserve func(int64) error) (io.ReadCloser, error) {
	rc := http.NewResponseController(w)
	if d, ok := r.Context().Deadline(); ok {
		rc.SetReadDeadline(d)
	}
	src := http.MaxBytesReader(w, r.Body, limit)
	var body []byte
	chunk := make([]byte, min(bodyChunk, limit+1))
	var err error
	for {
		var n int
		n, err = src.Read(chunk)
		if n > 0 && reserve != nil {
			if rerr := reserve(int64(n)); rerr != nil {
				return nil, rerr // the deadline stays: the server must not wait for the rest
			}
			body = append(body, chunk[:n]...)
		}
		if err != nil {
			break
		}
	}
	if err == io.EOF {
		err = nil
		rc.SetReadDeadline(time.Time{})
	} // else the deadline stays: the server must not wait for the rest before answering
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, &Error{Status: http.StatusRequestTimeout, Code: "request_timeout",
			Message: "the request body did not arrive before the request's deadline"}
	case err != nil:
		return errBody{err}, nil
	}
	return io.NopCloser(bytes.NewReader(body)), nil
}

// errBody is a request body that fails with err.
type errBody struct{ err error }

func (b errBody) Read([]byte) (int, error) { return 0, b.err }
func (b errBody) Close() error             { return nil }
