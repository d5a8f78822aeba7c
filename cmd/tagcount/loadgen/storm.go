package loadgen

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/tagcount/tagcount/migrations/loop"
)

// StormConfig is a retry storm: one token sending the same request as fast
// as its connections go, ignoring every Retry-After, the way a client's
// retry loop gone wrong does.
type StormConfig struct {
	BaseURL string // the service, e.g. http://127.0.0.1:8080
	Token   string
	Method  string
	Path    string
	Body    []byte // sent with Content-Type application/json when not nil
	// Conns is how many connections send at once, each a request at a
	// time (default 64).
	Conns int
	// UntilRejected ends the storm at its first 429: the token is then
	// over its limit.
	UntilRejected bool
}

// StormResult is what a storm sent and got back.
type StormResult struct {
	Seconds  float64          `json:"s"`
	Conns    int              `json:"connections"`
	Requests int64            `json:"requests"`
	PerSec   float64          `json:"requests_per_s"`
	Statuses map[string]int64 `json:"statuses"`
	// Missing429RetryAfter counts 429s without a Retry-After header.
	Missing429RetryAfter int64          `json:"missing_429_retry_after"`
	Latency              LatencySummary `json:"latency"`
	// ClientCPUSeconds is the CPU the storm's own connections used: each
	// runs on a thread of its own, measured alone, so it can be told apart
	// from the service's CPU in the same process.
	ClientCPUSeconds float64 `json:"client_cpu_s"`
}

// stormTally is one connection's counts, merged at the end so the storm's
// connections share no lock.
type stormTally struct {
	statuses   map[int]int64
	missingRA  int64
	latency    *hdrhistogram.Histogram
	cpuSeconds float64
	rejected   func() // called on each 429, when set
}

// RunStorm runs the storm until ctx ends and returns what it measured. It
// fails only on a bad BaseURL.
func RunStorm(ctx context.Context, cfg StormConfig) (*StormResult, error) {
	host, err := hostOf("storm", cfg.BaseURL)
	if err != nil {
		return nil, err
	}
	cfg.Conns = loop.OrDefault(cfg.Conns, 64)
	req := rawRequest(cfg.Method, cfg.Path, host, cfg.Token, cfg.Body)
	var rejected func()
	if cfg.UntilRejected {
		ctx, rejected = context.WithCancel(ctx)
		defer rejected()
	}
	tallies := make([]*stormTally, cfg.Conns)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range tallies {
		tallies[i] = &stormTally{statuses: map[int]int64{}, latency: newHist(), rejected: rejected}
		wg.Go(func() { stormConn(ctx, host, req, tallies[i]) })
	}
	wg.Wait()
	return mergeStorm(tallies, cfg.Conns, time.Since(start)), nil
}

func mergeStorm(tallies []*stormTally, conns int, took time.Duration) *StormResult {
	res := &StormResult{Seconds: round3(took.Seconds()), Conns: conns}
	byCode := map[int]int64{}
	lat := newHist()
	for _, t := range tallies {
		for code, n := range t.statuses {
			byCode[code] += n
			res.Requests += n
		}
		res.Missing429RetryAfter += t.missingRA
		res.ClientCPUSeconds += t.cpuSeconds
		lat.Merge(t.latency)
	}
	res.Statuses = StatusCounts(byCode)
	res.Latency = summarize(lat)
	res.ClientCPUSeconds = round3(res.ClientCPUSeconds)
	if took > 0 {
		res.PerSec = round3(float64(res.Requests) / took.Seconds())
	}
	return res
}

// rawRequest is the bytes of one HTTP/1.1 request on a kept-alive
// connection: the storm writes them as they are, spending as little of the
// machine's CPU on its own side as a client can.
func rawRequest(method, path, host, token string, body []byte) []byte {
	head := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n", method, path, host, token)
	if body != nil {
		head += fmt.Sprintf("Content-Type: application/json\r\nContent-Length: %d\r\n", len(body))
	}
	return append([]byte(head+"\r\n"), body...)
}

// stormConn sends req over one connection after the other until ctx ends,
// on a thread of its own whose CPU it adds to t.
func stormConn(ctx context.Context, host string, req []byte, t *stormTally) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu0 := threadCPU()
	defer func() { t.cpuSeconds = threadCPU() - cpu0 }()
	var d net.Dialer
	for ctx.Err() == nil {
		conn, err := d.DialContext(ctx, "tcp", host)
		if err != nil {
			t.statuses[0]++
			loop.Sleep(ctx, 10*time.Millisecond)
			continue
		}
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		stormOn(conn, req, t)
		stop()
		conn.Close()
	}
}

// stormOn sends req on conn and reads each answer until the connection
// fails or the server closes it.
func stormOn(conn net.Conn, req []byte, t *stormTally) {
	br := bufio.NewReader(conn)
	for {
		start := time.Now()
		conn.SetDeadline(start.Add(30 * time.Second))
		if _, err := conn.Write(req); err != nil {
			return
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		t.statuses[resp.StatusCode]++
		t.latency.RecordValue(micros(time.Since(start)))
		if resp.StatusCode == http.StatusTooManyRequests {
			if resp.Header.Get("Retry-After") == "" {
				t.missingRA++
			}
			if t.rejected != nil {
				t.rejected()
			}
		}
		if resp.Close {
			return
		}
	}
}

// primeLimit bounds the storm that brings the token over its limit before
// its rejections are priced.
const primeLimit = 30 * time.Second

// MeasureRejections prices a storm's rejected requests: it measures this
// process's CPU over window with no load, storms until the first 429, then
// measures cfg's storm alone for another window, and takes the storm's own
// connections' CPU and the idle CPU off the latter. redisAddr names the
// limiter's Redis, whose server CPU is reported beside (when it runs on
// this machine). It returns the cost and
// the storm's result, or the storm's error.
func MeasureRejections(ctx context.Context, cfg StormConfig, window time.Duration, redisAddr string) (*RejectionCost, *StormResult, error) {
	idle0 := processCPU()
	if err := loop.Sleep(ctx, window); err != nil {
		return nil, nil, err
	}
	idle := processCPU() - idle0
	// The idle window let the token's bucket fill again: storm until it
	// is over its limit, so the window measured is one of rejections.
	prime := cfg
	prime.UntilRejected = true
	pctx, pcancel := context.WithTimeout(ctx, primeLimit)
	_, err := RunStorm(pctx, prime)
	pcancel()
	if err != nil {
		return nil, nil, err
	}
	redisPID := findRedisServer(redisAddr)
	cpu0, redis0 := processCPU(), procCPU(redisPID)
	sctx, cancel := context.WithTimeout(ctx, window)
	defer cancel()
	storm, err := RunStorm(sctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	c := &RejectionCost{Seconds: storm.Seconds, Requests: storm.Requests, Rejected: storm.Statuses["429"],
		ProcessCPUSeconds: round3(processCPU() - cpu0), ClientCPUSeconds: storm.ClientCPUSeconds,
		IdleCPUSeconds: round3(idle * storm.Seconds / window.Seconds()), RedisCPUSeconds: -1}
	c.ServiceCPUSeconds = round3(max(c.ProcessCPUSeconds-c.ClientCPUSeconds-c.IdleCPUSeconds, 0))
	if c.Seconds > 0 {
		c.ServiceCores = round3(c.ServiceCPUSeconds / c.Seconds)
	}
	if c.Rejected > 0 {
		c.MicrosPerRejection = round3(c.ServiceCPUSeconds * 1e6 / float64(c.Rejected))
	}
	if r1 := procCPU(redisPID); r1 >= 0 && redis0 >= 0 {
		c.RedisCPUSeconds = round3(r1 - redis0)
	}
	return c, storm, nil
}
