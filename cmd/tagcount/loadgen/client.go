package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// ErrorKind is how a failed request is counted.
type ErrorKind int

// Kinds of failed request.
const (
	ErrDeadlock ErrorKind = iota // 503 {"error":{"code":"deadlock"}}
	ErrLockWait                  // 503 {"error":{"code":"lock_wait_timeout"}}
	ErrOther5xx                  // any other 5xx
	ErrOther                     // unexpected 4xx, transport errors, bad responses
	numErrorKinds
)

func (k ErrorKind) String() string {
	return [...]string{"deadlock", "lock_wait_timeout", "other_5xx", "other"}[k]
}

// Op names the requests whose latency is measured.
type Op int

// Requests measured.
const (
	OpSave       Op = iota // POST /v1/drafts, PUT /v1/drafts/{id}
	OpPost                 // POST /v1/drafts/{id}/post
	OpWorkEdit             // PUT /v1/works/{id}
	OpWorkDelete           // DELETE /v1/works/{id}
	OpRead                 // GET /v1/drafts/{id}, GET /v1/tags?name=
	numOps
)

func (o Op) String() string {
	return [...]string{"save", "post", "work_edit", "work_delete", "read"}[o]
}

// httpError is a response the client did not expect.
type httpError struct {
	status     int
	code       string
	retryAfter time.Duration
}

func (e *httpError) Error() string {
	if e.code != "" {
		return fmt.Sprintf("HTTP %d %s", e.status, e.code)
	}
	return fmt.Sprintf("HTTP %d", e.status)
}

// classify returns the kind of a failed request's error.
func classify(err error) ErrorKind {
	var he *httpError
	if !errors.As(err, &he) {
		return ErrOther
	}
	switch {
	case he.status == http.StatusServiceUnavailable && he.code == "deadlock":
		return ErrDeadlock
	case he.status == http.StatusServiceUnavailable && he.code == "lock_wait_timeout":
		return ErrLockWait
	case he.status >= 500:
		return ErrOther5xx
	}
	return ErrOther
}

// retryable reports whether a request that failed with err may be sent
// again: a 503 (the API promises nothing was applied), a 429 rate_limited
// (nothing was done; a client that honours Retry-After comes back after
// it) or a transport error. A quota's 429 is not retried: its wait is
// until midnight.
func retryable(err error) (time.Duration, bool) {
	var he *httpError
	if errors.As(err, &he) {
		return he.retryAfter, he.status == http.StatusServiceUnavailable ||
			(he.status == http.StatusTooManyRequests && he.code == "rate_limited")
	}
	return 0, !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// flexID accepts an id written as a JSON number or string.
type flexID int64

func (f *flexID) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		b = []byte(s)
	}
	if string(b) == "null" || len(b) == 0 {
		*f = 0
		return nil
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	*f = flexID(n)
	return err
}

// draftResponse is what the client reads of a draft or post response.
type draftResponse struct {
	ID     flexID `json:"id"`
	State  string `json:"state"`
	WorkID flexID `json:"work_id"`
}

// tagResponse is what the client reads of a tag's count.
type tagResponse struct {
	ID    flexID `json:"id"`
	Count int64  `json:"count"`
	Tier  string `json:"tier"`
}

type errorResponse struct {
	Error struct {
		Code string `json:"code"`
	} `json:"error"`
}

// client sends the web app's requests and records each attempt's latency
// and failure in rec.
type client struct {
	base       string
	hc         *http.Client
	rec        *recorder
	maxRetries int
	maxWait    time.Duration
}

// do sends one request, retrying 503s and transport errors up to
// maxRetries times (waiting Retry-After, capped at maxWait, plus jitter),
// and decodes a
// success body into out (when out is not nil). want lists the success
// statuses. It returns the status of the success.
func (c *client) do(ctx context.Context, op Op, method, path, token string, body []byte, want []int, out any) (int, error) {
	for attempt := 0; ; attempt++ {
		status, err := c.once(ctx, op, method, path, token, body, want, out)
		if err == nil {
			return status, nil
		}
		c.rec.failure(classify(err))
		wait, ok := c.nextTry(err, attempt)
		if !ok || ctx.Err() != nil {
			c.rec.gaveUp()
			return 0, err
		}
		t := time.NewTimer(jitter(wait))
		select {
		case <-ctx.Done():
			t.Stop()
			c.rec.gaveUp()
			return 0, ctx.Err()
		case <-t.C:
		}
	}
}

// nextTry reports whether a request that failed with err on attempt (0
// for the first) is sent again, and after how long: the Retry-After it
// asked for, capped at maxWait, or 50ms without one.
func (c *client) nextTry(err error, attempt int) (time.Duration, bool) {
	wait, ok := retryable(err)
	if !ok || attempt >= c.maxRetries {
		return 0, false
	}
	if wait <= 0 {
		wait = 50 * time.Millisecond
	}
	return min(wait, c.maxWait), true
}

// jitter spreads a retry over [wait, 1.5·wait): requests that deadlocked
// together and all waited the same Retry-After would otherwise come back
// in the same instant and deadlock again.
func jitter(wait time.Duration) time.Duration {
	if wait <= 1 {
		return wait
	}
	return wait + rand.N(wait/2)
}

func (c *client) once(ctx context.Context, op Op, method, path, token string, body []byte, want []int, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		c.rec.latency(op, time.Since(start), start)
		c.rec.status(0, false)
		return 0, err
	}
	c.rec.status(resp.StatusCode, resp.Header.Get("Retry-After") != "")
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	c.rec.latency(op, time.Since(start), start)
	if err != nil {
		return 0, err
	}
	for _, s := range want {
		if resp.StatusCode == s {
			if out != nil && len(data) > 0 {
				if err := json.Unmarshal(data, out); err != nil {
					return 0, fmt.Errorf("%s %s: decoding %d response: %w", method, path, resp.StatusCode, err)
				}
			}
			return resp.StatusCode, nil
		}
	}
	return 0, responseError(resp.StatusCode, resp.Header, data)
}

// responseError is the error of a response with an unwanted status: its
// API error code, if the body has one, and the wait its Retry-After asks for.
func responseError(status int, h http.Header, body []byte) *httpError {
	he := &httpError{status: status}
	var eb errorResponse
	if json.Unmarshal(body, &eb) == nil {
		he.code = eb.Error.Code
	}
	if s, err := strconv.Atoi(h.Get("Retry-After")); err == nil {
		he.retryAfter = time.Duration(s) * time.Second
	}
	return he
}

func idPath(prefix string, id int64, suffix string) string {
	return prefix + strconv.FormatInt(id, 10) + suffix
}

// tagPath is the count look-up of a tag by name and type.
func tagPath(name, typ string) string {
	return "/v1/tags?" + url.Values{"name": {name}, "type": {typ}}.Encode()
}
