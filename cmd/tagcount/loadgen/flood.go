package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tagcount/tagcount/migrations/loop"
)

// FloodConfig is a connection flood: many connections held open at once,
// some sending nothing, the others sending a large body slowly, each
// opened again as soon as the server closes it.
type FloodConfig struct {
	BaseURL string
	// Conns is how many connections are held at once (default 2,000).
	Conns int
	// IdleShare is the share of them that send nothing (default 0.5).
	IdleShare float64
	// Tokens sign the slow bodies' requests, one per connection in turn:
	// valid tokens of many authors, so neither authentication nor an
	// author's rate limit stops a request before its body is read.
	Tokens []string
	// BodyBytes is the Content-Length each slow body announces (default
	// 1 MiB); Trickle is how often it sends its next 64 bytes (default 1 s).
	BodyBytes int
	Trickle   time.Duration
}

// FloodResult is what a flood's connections went through.
type FloodResult struct {
	Seconds float64 `json:"s"`
	Conns   int     `json:"connections"`
	// Opened counts connections opened (again after every close).
	Opened int64 `json:"opened"`
	// Statuses are the answers the slow bodies got.
	Statuses map[string]int64 `json:"statuses"`
	// ClosedUnanswered counts connections the server closed without an
	// answer (an idle one past its header timeout).
	ClosedUnanswered int64 `json:"closed_unanswered"`
}

type flood struct {
	cfg        FloodConfig
	host       string
	heads      [][]byte // a slow body's request head, per token
	chunk      []byte   // what a slow body sends each time
	opened     atomic.Int64
	unanswered atomic.Int64
	mu         sync.Mutex
	statuses   map[int]int64
}

// hostOf returns the host of a scenario's base URL, or an error naming the
// scenario.
func hostOf(scenario, baseURL string) (string, error) {
	u, err := url.Parse(baseURL)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("loadgen: %s: bad base URL %q", scenario, baseURL)
	}
	return u.Host, nil
}

// RunFlood holds the flood's connections until ctx ends, then closes them
// all and returns what happened. It fails only on a bad config.
func RunFlood(ctx context.Context, cfg FloodConfig) (*FloodResult, error) {
	host, err := hostOf("flood", cfg.BaseURL)
	if err != nil {
		return nil, err
	}
	cfg.Conns = loop.OrDefault(cfg.Conns, 2000)
	cfg.IdleShare = loop.OrDefault(cfg.IdleShare, 0.5)
	cfg.BodyBytes = loop.OrDefault(cfg.BodyBytes, 1<<20)
	cfg.Trickle = loop.OrDefault(cfg.Trickle, time.Second)
	idle := int(float64(cfg.Conns) * min(cfg.IdleShare, 1))
	if len(cfg.Tokens) == 0 && idle < cfg.Conns {
		return nil, errors.New("loadgen: flood: slow bodies need tokens")
	}
	f := &flood{cfg: cfg, host: host, statuses: map[int]int64{}, chunk: []byte(strings.Repeat(" ", 64))}
	for _, tok := range cfg.Tokens {
		f.heads = append(f.heads, fmt.Appendf(nil,
			"POST /v1/drafts HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
			host, tok, cfg.BodyBytes))
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i := range cfg.Conns {
		wg.Go(func() {
			// The flood's own garbage counts in the process's memory: one
			// reader per connection slot, reused across reconnects.
			br := bufio.NewReaderSize(nil, 512)
			for ctx.Err() == nil {
				if i < idle {
					f.idle(ctx)
				} else {
					f.slowBody(ctx, f.heads[i%len(f.heads)], br)
				}
			}
		})
	}
	wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	return &FloodResult{Seconds: round3(time.Since(start).Seconds()), Conns: cfg.Conns, Opened: f.opened.Load(),
		Statuses: StatusCounts(f.statuses), ClosedUnanswered: f.unanswered.Load()}, nil
}

// dial opens one connection, closed when ctx ends or when the returned
// close is called; nil after a pause when it cannot (the server refuses
// connections: that is the flood's doing).
func (f *flood) dial(ctx context.Context) (conn net.Conn, close func()) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", f.host)
	if err != nil {
		loop.Sleep(ctx, 50*time.Millisecond)
		return nil, nil
	}
	f.opened.Add(1)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	return conn, func() { stop(); conn.Close() }
}

// idle opens a connection and sends nothing until the server closes it.
func (f *flood) idle(ctx context.Context) {
	conn, closeConn := f.dial(ctx)
	if conn == nil {
		return
	}
	defer closeConn()
	var b [1]byte
	if _, err := conn.Read(b[:]); err != nil && ctx.Err() == nil {
		f.unanswered.Add(1)
	}
}

// slowBody sends head, announcing a large body, then the body a little at
// a time until the server answers or closes the connection; br is the
// caller's reader, reset onto the connection.
func (f *flood) slowBody(ctx context.Context, head []byte, br *bufio.Reader) {
	conn, closeConn := f.dial(ctx)
	if conn == nil {
		return
	}
	defer closeConn()
	if _, err := conn.Write(head); err != nil {
		return
	}
	br.Reset(conn)
	chunk := f.chunk
	for sent := 0; ctx.Err() == nil; sent += len(chunk) {
		if sent < f.cfg.BodyBytes {
			conn.SetWriteDeadline(time.Now().Add(f.cfg.Trickle))
			conn.Write(chunk[:min(len(chunk), f.cfg.BodyBytes-sent)])
		}
		// Waiting for an answer is the pause between chunks.
		conn.SetReadDeadline(time.Now().Add(f.cfg.Trickle))
		if _, err := br.Peek(1); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			if ctx.Err() == nil {
				f.unanswered.Add(1)
			}
			return
		}
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if resp, err := http.ReadResponse(br, nil); err == nil {
			resp.Body.Close()
			f.mu.Lock()
			f.statuses[resp.StatusCode]++
			f.mu.Unlock()
		}
		return
	}
}
