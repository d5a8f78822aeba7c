package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// linkEcho is a TCP server on loopback that sends back what it receives,
// and remembers what it received and how many connections ended.
type linkEcho struct {
	addr string
	sink bool // reads only, sends nothing back

	mu     sync.Mutex
	got    []byte
	closed int // connections the client closed
}

// closeAndCheckPumps closes c and fails t unless Close succeeded and
// returned only after the connection's goroutines did.
func closeAndCheckPumps(t *testing.T, c *delayConn, what string) {
	t.Helper()
	if err := c.Close(); err != nil {
		t.Errorf("%s: %v", what, err)
	}
	select {
	case <-c.pumpsDone:
	default:
		t.Errorf("%s returned before the connection's goroutines did", what)
	}
}

func startLinkEcho(t *testing.T) *linkEcho { return startLinkServer(t, false) }

// startLinkSink is startLinkEcho for a server that only reads. Nothing
// comes back, so the client's close always ends the connection with a FIN
// the server reads as its end: echoes arriving while the client closes
// could make the close a reset instead.
func startLinkSink(t *testing.T) *linkEcho { return startLinkServer(t, true) }

func startLinkServer(t *testing.T, sink bool) *linkEcho {
	t.Helper()
	ln := testdb.Listen(t)
	e := &linkEcho{addr: ln.Addr().String(), sink: sink}
	t.Cleanup(serveConns(ln, e.serve))
	return e
}

func (e *linkEcho) serve(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		e.mu.Lock()
		e.got = append(e.got, buf[:n]...)
		if errors.Is(err, io.EOF) {
			e.closed++
		}
		e.mu.Unlock()
		if err != nil {
			return
		}
		if e.sink {
			continue
		}
		if _, err := c.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (e *linkEcho) received() (string, int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return string(e.got), e.closed
}

// fakeClock is a link's time that moves only when the test says.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	alarms []*fakeAlarm
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_000_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer() alarm {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := &fakeAlarm{clock: c, ch: make(chan time.Time, 1)}
	c.alarms = append(c.alarms, a)
	return a
}

// Advance moves time on by d and rings the alarms whose time has come.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for _, a := range c.alarms {
		if a.armed && !a.at.After(c.now) {
			a.ring()
		}
	}
}

type fakeAlarm struct {
	clock *fakeClock
	at    time.Time
	armed bool
	ch    chan time.Time
}

func (a *fakeAlarm) Reset(at time.Time) {
	a.clock.mu.Lock()
	defer a.clock.mu.Unlock()
	a.drain()
	a.at, a.armed = at, true
	if !at.After(a.clock.now) {
		a.ring()
	}
}

func (a *fakeAlarm) Stop() {
	a.clock.mu.Lock()
	defer a.clock.mu.Unlock()
	a.armed = false
	a.drain()
}

func (a *fakeAlarm) C() <-chan time.Time { return a.ch }

func (a *fakeAlarm) Close() { a.Stop() }

func (a *fakeAlarm) ring() {
	a.armed = false
	a.ch <- a.clock.now
}

func (a *fakeAlarm) drain() {
	select {
	case <-a.ch:
	default:
	}
}

func dialThrough(t *testing.T, line *DelayLine, addr string) *delayConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	dc := line.Wrap(c).(*delayConn)
	t.Cleanup(func() { dc.Close() })
	return dc
}

func TestDelayLineRoundTripTakesAtLeastTwiceTheDelay(t *testing.T) {
	t.Parallel()
	const d = 20 * time.Millisecond
	echo := startLinkEcho(t)
	line := NewDelayLine(d)
	start := time.Now()
	c, err := line.Dial(context.Background(), echo.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if el := time.Since(start); el < 2*d {
		t.Errorf("connecting took %v, less than the handshake's round trip of %v", el, 2*d)
	}
	buf := make([]byte, 4)
	for i := range 5 {
		msg := fmt.Sprintf("p%03d", i)
		start := time.Now()
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el < 2*d {
			t.Errorf("round trip %d took %v, less than twice the one-way delay %v", i, el, d)
		}
		if string(buf) != msg {
			t.Errorf("round trip %d echoed %q, want %q", i, buf, msg)
		}
	}
	if s := line.Stats(); s.Conns != 1 || s.Packets < 10 || s.Bytes < 40 || s.Waits == 0 {
		t.Errorf("stats %+v, want 1 connection and at least 10 packets of 40 bytes, some waited for", s)
	}
}

func TestDelayLineDeliversPipelinedWritesOfManyConnectionsAfterOneDelay(t *testing.T) {
	t.Parallel()
	const d = time.Second // of the fake clock
	const conns, writes = 3, 20
	echo := startLinkEcho(t)
	clk := newFakeClock()
	line := NewDelayLine(d)
	line.clock = clk
	var cs []*delayConn
	var want []string
	for i := range conns {
		c := dialThrough(t, line, echo.addr)
		var sent bytes.Buffer
		for j := range writes {
			msg := fmt.Sprintf("c%d-w%02d;", i, j)
			// Writes are in flight at once: none waits for the delay.
			if _, err := c.Write([]byte(msg)); err != nil {
				t.Fatal(err)
			}
			sent.WriteString(msg)
		}
		cs, want = append(cs, c), append(want, sent.String())
	}
	total := 0
	for _, w := range want {
		total += len(w)
	}
	if got, _ := echo.received(); got != "" {
		t.Errorf("the server received %q before any write was due", got)
	}

	// One delay later, every connection's writes have all arrived.
	clk.Advance(d)
	testdb.WaitFor(t, 10*time.Second, "every write at the server after one delay", func() bool {
		got, _ := echo.received()
		return len(got) == total
	})
	// The echoes arrive; one delay later all of them can be read, in order.
	for i, c := range cs {
		testdb.WaitFor(t, 10*time.Second, "the echoes back at the link", func() bool { return c.received.Load() == int64(len(want[i])) })
	}
	clk.Advance(d)
	for i, c := range cs {
		c.SetReadDeadline(time.Now().Add(10 * time.Second)) // a hang would be a bug, not slowness
		buf := make([]byte, len(want[i]))
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("connection %d: reading its echoes one delay after they arrived: %v", i, err)
		}
		if string(buf) != want[i] {
			t.Errorf("connection %d read %q, want %q", i, buf, want[i])
		}
	}
}

func TestDelayLineCloseSendsWhatWasWrittenThenStopsItsGoroutines(t *testing.T) {
	t.Parallel()
	echo := startLinkSink(t)
	c := dialThrough(t, NewDelayLine(20*time.Millisecond), echo.addr)
	if _, err := c.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	closeAndCheckPumps(t, c, "Close")
	if _, err := c.Write([]byte("more")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close: %v, want net.ErrClosed", err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Close: %v, want net.ErrClosed", err)
	}
	if err := c.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v, want net.ErrClosed", err)
	}
	testdb.WaitFor(t, 10*time.Second, "the server to see the bytes written before Close, then the end", func() bool {
		got, closed := echo.received()
		return got == "bye" && closed == 1
	})
}

func TestDelayLineReadsThePeersDataThenItsEnd(t *testing.T) {
	t.Parallel()
	ln := testdb.Listen(t)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Write([]byte("hello, "))
		c.Write([]byte("goodbye"))
		c.Close()
	}()
	c := dialThrough(t, NewDelayLine(5*time.Millisecond), ln.Addr().String())
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "hello, goodbye" {
		t.Errorf("read %q (%v), want the peer's bytes then EOF", got, err)
	}
	closeAndCheckPumps(t, c, "Close after the peer's end")
}

func TestDelayLineReadTimesOutAtItsDeadlineAndKeepsTheBytes(t *testing.T) {
	t.Parallel()
	echo := startLinkEcho(t)
	clk := newFakeClock()
	line := NewDelayLine(time.Second)
	line.clock = clk
	c := dialThrough(t, line, echo.addr)
	if _, err := c.Write([]byte("late")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(-time.Second))
	var ne net.Error
	if _, err := c.Read(make([]byte, 4)); !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("Read past its deadline: %v, want a timeout", err)
	}
	c.SetReadDeadline(time.Time{})
	clk.Advance(time.Second)
	testdb.WaitFor(t, 10*time.Second, "the echo back at the link", func() bool { return c.received.Load() == 4 })
	clk.Advance(time.Second)
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "late" {
		t.Errorf("after the timeout, read %q (%v), want the echo", buf, err)
	}
}

func TestDelayLineCarriesTheMySQLDriver(t *testing.T) {
	t.Parallel()
	line := NewDelayLine(time.Millisecond)
	netName := "tcp+delay-" + t.Name()
	defer line.RegisterMySQL(netName)()
	cfg, err := mysql.ParseDSN(testdb.ServerDSN())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Net != "tcp" {
		t.Skipf("the test server is reached over %s, not TCP", cfg.Net)
	}
	cfg.Net = netName
	db, err := migrations.Open(context.Background(), cfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var one int
	if err := db.QueryRow("SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1 through the link: %d, %v", one, err)
	}
	if s := line.Stats(); s.Conns == 0 || s.Packets < 4 {
		t.Errorf("stats %+v: the driver did not talk through the link", s)
	}
}

func TestDelayCostComparesTheSameTrafficWithAndWithoutTheLink(t *testing.T) {
	t.Parallel()
	c, err := MeasureDelayCost(context.Background(), 250*time.Microsecond, 4, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", c)
	if c.DirectRoundTrips == 0 || c.DelayRoundTrips == 0 || c.DirectCPUUs <= 0 || c.DelayCPUUs <= 0 {
		t.Errorf("a phase measured nothing: %+v", c)
	}
	// A round trip through the link is at least one write and one read.
	if c.PacketsPerRT < 2 || c.CPUUsPerPacket < 0 {
		t.Errorf("cost %+v", c)
	}
}
