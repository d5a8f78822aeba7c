package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tagcount/tagcount/cmd/tagcount/loadgen"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations/loop"
)

// soakRecorder counts every answer the soak's clients get, by operation
// and status, and keeps the ones that break the service's promises: a
// request that hung past its deadline, a 5xx other than 503 with
// Retry-After, and a draft or work that vanished.
type soakRecorder struct {
	hungAfter time.Duration
	start     time.Time // of the soak: when requests were sent is told from it
	nextID    atomic.Int64

	mu          sync.Mutex
	ops         map[string]*soakOpStats
	hung        []string
	bad5xx      []string
	lost        []string
	failedPosts int
}

type soakOpStats struct {
	total     int
	status    map[int]int
	codes503  map[string]int
	transport map[string]int
	max       time.Duration
}

func newSoakRecorder(hungAfter time.Duration) *soakRecorder {
	return &soakRecorder{hungAfter: hungAfter, start: time.Now(), ops: map[string]*soakOpStats{}}
}

// soakRequest names one request in the recorder's lists.
type soakRequest struct {
	op, method, path, id string
	sent                 time.Time
}

func (r *soakRecorder) describe(q soakRequest) string {
	return fmt.Sprintf("%s: %s %s sent at %s (request %s)", q.op, q.method, q.path, fmtClock(q.sent.Sub(r.start)), q.id)
}

// ended counts q, which ended after latency, in its operation's stats and
// returns them; r.mu is held.
func (r *soakRecorder) ended(q soakRequest, latency time.Duration) *soakOpStats {
	s := r.ops[q.op]
	if s == nil {
		s = &soakOpStats{status: map[int]int{}, codes503: map[string]int{}, transport: map[string]int{}}
		r.ops[q.op] = s
	}
	s.total++
	s.max = max(s.max, latency)
	return s
}

// answer records a response.
func (r *soakRecorder) answer(q soakRequest, status int, code, retryAfter string, latency time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ended(q, latency).status[status]++
	if status == http.StatusServiceUnavailable {
		r.ops[q.op].codes503[code]++
	}
	if status >= 500 && (status != http.StatusServiceUnavailable || retryAfter == "") {
		r.bad5xx = append(r.bad5xx, fmt.Sprintf("%s: %d %s, Retry-After %q", r.describe(q), status, code, retryAfter))
	}
	if latency > r.hungAfter {
		r.hung = append(r.hung, fmt.Sprintf("%s: %d %s after %v", r.describe(q), status, code, latency.Round(time.Millisecond)))
	}
}

// transportError records a request that got no answer.
func (r *soakRecorder) transportError(q soakRequest, err error, latency time.Duration) {
	kind := transportKind(err)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ended(q, latency).transport[kind]++
	if latency > r.hungAfter || kind == "client timeout" {
		r.hung = append(r.hung, fmt.Sprintf("%s: no answer after %v: %v", r.describe(q), latency.Round(time.Millisecond), err))
	}
}

func (r *soakRecorder) lostItem(what string) {
	r.mu.Lock()
	r.lost = append(r.lost, what)
	r.mu.Unlock()
}

func (r *soakRecorder) failedPost() {
	r.mu.Lock()
	r.failedPosts++
	r.mu.Unlock()
}

// transportKind names why a request got no answer: refused while its API
// was down, cut off when the API died under it, or something else.
func transportKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "cut off"
	case errors.As(err, &ne) && ne.Timeout():
		return "client timeout"
	}
	return "other"
}

// soakClient sends one author's (or the admin's) requests.
type soakClient struct {
	hc    *http.Client
	rec   *soakRecorder
	token string
}

type soakResult struct {
	status     int
	body       map[string]any
	retryAfter time.Duration
	err        error // no answer
}

func (r soakResult) ok() bool { return r.err == nil && r.status >= 200 && r.status < 300 }

// do sends a request to base and records what came back. A request cut
// short because the load is stopping is not recorded.
func (c *soakClient) do(ctx context.Context, op, base, method, path string, body any) soakResult {
	var rd io.Reader
	if body != nil {
		j, _ := json.Marshal(body)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return soakResult{err: err}
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	q := soakRequest{op: op, method: method, path: path, id: "soak-" + strconv.FormatInt(c.rec.nextID.Add(1), 10), sent: time.Now()}
	req.Header.Set("X-Request-ID", q.id)
	res, err := c.hc.Do(req)
	var raw []byte
	if err == nil {
		raw, err = io.ReadAll(res.Body)
		res.Body.Close()
	}
	latency := time.Since(q.sent)
	if err != nil {
		if ctx.Err() == nil {
			c.rec.transportError(q, err, latency)
		}
		return soakResult{err: err}
	}
	out := soakResult{status: res.StatusCode}
	json.Unmarshal(raw, &out.body)
	e, _ := out.body["error"].(map[string]any)
	code, _ := e["code"].(string)
	c.rec.answer(q, res.StatusCode, code, res.Header.Get("Retry-After"), latency)
	if s, err := strconv.Atoi(res.Header.Get("Retry-After")); err == nil {
		out.retryAfter = time.Duration(s) * time.Second
	}
	return out
}

// pause is how long a client waits after r before its next request: the
// Retry-After it was asked for (capped), a short wait after no answer, or
// a person's pace.
func pause(rng *rand.Rand, r soakResult) time.Duration {
	switch {
	case r.err != nil:
		return 250 * time.Millisecond
	case r.status == http.StatusServiceUnavailable || r.status == http.StatusTooManyRequests:
		return min(max(r.retryAfter, 100*time.Millisecond), 5*time.Second)
	}
	return 100*time.Millisecond + time.Duration(rng.Int64N(int64(200*time.Millisecond)))
}

func contentBody(c drafts.Content, visibility string) map[string]any {
	return map[string]any{"title": c.Title, "body": c.Body, "tags": c.Tags, "visibility": visibility}
}

// soakAuthor is one author writing, posting, editing and deleting works
// through its path's API, now and then through the other one (a rollout
// step moving it), while the faults go on.
type soakAuthor struct {
	id          int64
	c, admin    *soakClient
	home, other string
	wl          *loadgen.Workload
	slot        int64 // the author's next workload slot
	authors     int64
	rng         *rand.Rand
	pending     []soakDraft // posts asked for, not yet seen posted
	works       []soakWork
}

type soakDraft struct {
	id    string
	acked bool // a Post of it was answered 2xx: the service owes the post
}

type soakWork struct {
	id     string
	hidden bool
}

// run drives the author until ctx ends.
func (a *soakAuthor) run(ctx context.Context) {
	for ctx.Err() == nil {
		wait := a.checkPending(ctx)
		if wait == 0 {
			wait = a.act(ctx)
		}
		loop.Sleep(ctx, wait) // the author's pace, or the Retry-After asked for
	}
}

func (a *soakAuthor) act(ctx context.Context) time.Duration {
	u := a.rng.Float64()
	switch {
	case u < 0.5 || len(a.works) == 0:
		return a.write(ctx)
	case u < 0.68:
		return a.edit(ctx)
	case u < 0.78:
		return a.delete(ctx)
	case u < 0.83:
		return a.hide(ctx)
	}
	return a.read(ctx)
}

// base picks the API of the author's path, or one time in twenty the
// other path's.
func (a *soakAuthor) base() string {
	if a.rng.IntN(20) == 0 {
		return a.other
	}
	return a.home
}

// write saves a new draft and posts it.
func (a *soakAuthor) write(ctx context.Context) time.Duration {
	wk := a.wl.Work(a.slot)
	a.slot += a.authors
	vis := "public"
	if a.rng.IntN(5) == 0 {
		vis = "registered"
	}
	r := a.c.do(ctx, "create draft", a.home, "POST", "/v1/drafts", contentBody(wk.Posted, vis))
	if r.status != http.StatusCreated {
		return pause(a.rng, r)
	}
	return a.post(ctx, soakDraft{id: id(r.body, "id")})
}

// post posts d: a work at once (legacy path), or d stays pending until it
// reads posted.
func (a *soakAuthor) post(ctx context.Context, d soakDraft) time.Duration {
	r := a.c.do(ctx, "post", a.home, "POST", "/v1/drafts/"+d.id+"/post", nil)
	d.acked = d.acked || r.ok()
	if r.ok() && r.body["state"] == drafts.StatePosted {
		a.works = append(a.works, soakWork{id: id(r.body, "work_id")})
	} else {
		a.pending = append(a.pending, d) // queued, or to post again
	}
	return pause(a.rng, r)
}

// checkPending reads the oldest pending draft: posted drafts become works,
// drafts whose post failed or was not taken are posted again. It returns
// 0 when the author may go on at once.
func (a *soakAuthor) checkPending(ctx context.Context) time.Duration {
	if len(a.pending) == 0 || a.rng.IntN(2) == 0 {
		return 0
	}
	d := a.pending[0]
	a.pending = a.pending[1:]
	r := a.c.do(ctx, "read draft", a.home, "GET", "/v1/drafts/"+d.id, nil)
	switch {
	case r.status == http.StatusNotFound:
		a.c.rec.lostItem(fmt.Sprintf("draft %s of author %d: 404 while its post was pending", d.id, a.id))
		return 0
	case r.status != http.StatusOK:
		a.pending = append(a.pending, d)
		return pause(a.rng, r)
	case r.body["state"] == drafts.StatePosted:
		a.works = append(a.works, soakWork{id: id(r.body, "work_id")})
		return 0
	case r.body["state"] == drafts.StateQueued:
		a.pending = append(a.pending, d)
		return 0
	case r.body["state"] == drafts.StateFailed:
		a.c.rec.failedPost()
	case d.acked:
		a.c.rec.lostItem(fmt.Sprintf("the Post of draft %s of author %d: accepted, but the draft reads %v again", d.id, a.id, r.body["state"]))
	}
	// failed, or never taken (the Post got a 503 or no answer): post again.
	return a.post(ctx, d)
}

func (a *soakAuthor) pickWork() *soakWork { return &a.works[a.rng.IntN(len(a.works))] }

// edit replaces a work's content with another work's tags.
func (a *soakAuthor) edit(ctx context.Context) time.Duration {
	w := a.pickWork()
	c := a.wl.Work(1_000_000 + a.rng.Int64N(1_000_000)).Posted
	vis := "public"
	if a.rng.IntN(5) == 0 {
		vis = "registered"
	}
	r := a.c.do(ctx, "edit work", a.base(), "PUT", "/v1/works/"+w.id, contentBody(c, vis))
	a.checkFound(r, "work "+w.id)
	return pause(a.rng, r)
}

// delete deletes a work. It is forgotten before the request is sent: a
// delete that got no answer may have happened.
func (a *soakAuthor) delete(ctx context.Context) time.Duration {
	i := a.rng.IntN(len(a.works))
	w := a.works[i]
	a.works = append(a.works[:i], a.works[i+1:]...)
	r := a.c.do(ctx, "delete work", a.base(), "DELETE", "/v1/works/"+w.id, nil)
	a.checkFound(r, "work "+w.id)
	return pause(a.rng, r)
}

// hide has a moderator hide or show one of the author's works.
func (a *soakAuthor) hide(ctx context.Context) time.Duration {
	w := a.pickWork()
	verb := "hide"
	if w.hidden {
		verb = "unhide"
	}
	r := a.admin.do(ctx, "hide/unhide work", a.home, "POST", "/v1/admin/works/"+w.id+"/"+verb, nil)
	if r.ok() {
		w.hidden = !w.hidden
	}
	a.checkFound(r, "work "+w.id)
	return pause(a.rng, r)
}

// read reads a work or one of the counts an archive page shows.
func (a *soakAuthor) read(ctx context.Context) time.Duration {
	if a.rng.IntN(2) == 0 {
		w := a.pickWork()
		r := a.c.do(ctx, "read work", a.home, "GET", "/v1/works/"+w.id, nil)
		a.checkFound(r, "work "+w.id)
		return pause(a.rng, r)
	}
	ids := make([]string, 20)
	for i := range ids {
		ids[i] = strconv.Itoa(1 + a.rng.IntN(500))
	}
	q := "/v1/tags?ids=" + strings.Join(ids, ",")
	if a.rng.IntN(4) == 0 {
		q += "&consistency=exact"
	}
	return pause(a.rng, a.c.do(ctx, "read counts", a.home, "GET", q, nil))
}

// checkFound records a 404 for something the author owns and never
// deleted: it was lost.
func (a *soakAuthor) checkFound(r soakResult, what string) {
	if r.status == http.StatusNotFound {
		a.c.rec.lostItem(fmt.Sprintf("%s of author %d: 404 though never deleted", what, a.id))
	}
}

// probe posts a work carrying tag, a tag of its own, through base and
// returns once the tag's plain (tiered) count shows it, or ctx's error.
func (c *soakClient) probe(ctx context.Context, base, tag string) error {
	body := contentBody(drafts.Content{Title: tag, Body: "A probe.", Tags: drafts.Tags{Rating: "Not Rated",
		Warnings: []string{"No Archive Warnings Apply"}, Fandoms: []string{"Soak Probes"}, Freeforms: []string{tag}}}, "public")
	var draft string
	for draft == "" {
		if r := c.do(ctx, "probe: create draft", base, "POST", "/v1/drafts", body); r.status == http.StatusCreated {
			draft = id(r.body, "id")
		} else if err := loop.Sleep(ctx, 100*time.Millisecond); err != nil { // retrying while the service recovers
			return err
		}
	}
	for {
		if r := c.do(ctx, "probe: post", base, "POST", "/v1/drafts/"+draft+"/post", nil); r.ok() {
			break
		}
		if err := loop.Sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	q := "/v1/tags?type=freeform&name=" + url.QueryEscape(tag)
	for {
		if r := c.do(ctx, "probe: read count", base, "GET", q, nil); r.status == http.StatusOK && r.body["count"] == float64(1) {
			return nil
		}
		if err := loop.Sleep(ctx, 100*time.Millisecond); err != nil { // polling the count
			return err
		}
	}
}

// scrapeCounter reads a counter's value from a process's /metrics; 0 when
// the process does not answer.
func scrapeCounter(hc *http.Client, base, name string) float64 {
	res, err := hc.Get(base + "/metrics")
	if err != nil {
		return 0
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}
