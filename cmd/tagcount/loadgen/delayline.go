package loadgen

import (
	"bytes"
	"context"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
)

// DelayLine models a network link with a one-way delay between this
// process and a server: every byte written at t reaches the server's
// socket at t+delay, and every byte the server sends is handed to the
// reader delay after it arrived. Bytes keep their order, writes do not
// wait for the delay (they are in flight, as on a wire), and connections
// do not wait for each other, so the delay adds latency without limiting
// bandwidth or concurrency.
//
// Each connection runs two goroutines: one sends written bytes when they
// are due, one receives bytes as they arrive and queues them until they
// are due for Read.
type DelayLine struct {
	delay time.Duration
	clock clock
	stats delayCounters
}

// NewDelayLine returns a link that delays each direction by oneWay.
func NewDelayLine(oneWay time.Duration) *DelayLine {
	return &DelayLine{delay: max(oneWay, 0), clock: newLinkClock()}
}

// clock is the time a link delays by: real time, or a test's.
type clock interface {
	Now() time.Time
	NewTimer() alarm
}

// alarm is a reusable timer: C receives once the time set by Reset has
// come; Stop and Reset discard a pending one. Close releases it.
type alarm interface {
	Reset(at time.Time)
	Stop()
	C() <-chan time.Time
	Close()
}

// realClock is real time with the runtime's timers.
type realClock struct{}

func (realClock) Now() time.Time  { return time.Now() }
func (realClock) NewTimer() alarm { return newRuntimeAlarm() }

type runtimeAlarm struct{ t *time.Timer }

func newRuntimeAlarm() runtimeAlarm {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return runtimeAlarm{t}
}

func (a runtimeAlarm) Reset(at time.Time)  { a.t.Reset(time.Until(at)) }
func (a runtimeAlarm) Stop()               { a.t.Stop() }
func (a runtimeAlarm) C() <-chan time.Time { return a.t.C }
func (a runtimeAlarm) Close()              { a.t.Stop() }

// Delay is the one-way delay.
func (l *DelayLine) Delay() time.Duration { return l.delay }

// Dial connects to addr over TCP through the link, waiting one round trip
// of the link as a TCP handshake over it would. It returns the dial error,
// or ctx's when it ends first.
func (l *DelayLine) Dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	t := l.clock.NewTimer()
	defer t.Close()
	t.Reset(l.clock.Now().Add(2 * l.delay))
	select {
	case <-t.C():
	case <-ctx.Done():
		c.Close()
		return nil, ctx.Err()
	}
	l.stats.conns.Add(1)
	return l.Wrap(c), nil
}

// Wrap returns c seen through the link. Closing the result sends what was
// written before, then closes c.
func (l *DelayLine) Wrap(c net.Conn) net.Conn {
	dc := &delayConn{
		Conn: c, line: l,
		out: make(chan packet, delayQueue), in: make(chan packet, delayQueue),
		closing: make(chan struct{}), abandon: make(chan struct{}), broken: make(chan struct{}), pumpsDone: make(chan struct{}),
		rdl: newDeadline(), wdl: newDeadline(), rtimer: l.clock.NewTimer(),
	}
	dc.pumpsLeft.Store(2)
	go func() { dc.send(); dc.pumpDone() }()
	go func() { dc.receive(); dc.pumpDone() }()
	return dc
}

func (c *delayConn) pumpDone() {
	if c.pumpsLeft.Add(-1) == 0 {
		close(c.pumpsDone)
	}
}

// RegisterMySQL makes the MySQL driver dial DSNs whose network is name
// (user@name(host:port)/db) through the link. deregister removes it.
func (l *DelayLine) RegisterMySQL(name string) (deregister func()) {
	mysql.RegisterDialContext(name, l.Dial)
	return func() { mysql.DeregisterDialContext(name) }
}

// DelayStats counts what a link carried since it was made. A packet is one
// Write, or one read of whatever had arrived on the socket.
type DelayStats struct {
	Conns   int64
	Packets int64
	Bytes   int64
	// Waits counts the packets whose delivery waited for their due time
	// (the rest were due already when their turn came); Late is the sum
	// of how long after the due time those waits ended: wake-ups take
	// time, and more on a busy machine.
	Waits int64
	Late  time.Duration
}

// Sub returns the counts of s since before.
func (s DelayStats) Sub(before DelayStats) DelayStats {
	return DelayStats{Conns: s.Conns - before.Conns, Packets: s.Packets - before.Packets, Bytes: s.Bytes - before.Bytes,
		Waits: s.Waits - before.Waits, Late: s.Late - before.Late}
}

// Stats returns what the link carried so far.
func (l *DelayLine) Stats() DelayStats {
	c := &l.stats
	return DelayStats{Conns: c.conns.Load(), Packets: c.packets.Load(), Bytes: c.bytes.Load(), Waits: c.waits.Load(),
		Late: time.Duration(c.late.Load())}
}

type delayCounters struct {
	conns, packets, bytes, waits, late atomic.Int64
}

// delivered counts a packet handed on; woke is when its wait ended, zero
// when it did not wait.
func (c *delayCounters) delivered(n int, due, woke time.Time) {
	c.packets.Add(1)
	c.bytes.Add(int64(n))
	if woke.IsZero() {
		return
	}
	c.waits.Add(1)
	c.late.Add(int64(max(woke.Sub(due), 0)))
}

// delayQueue is how many packets may be in flight each way before Write,
// or the reading of the socket, waits: the link's buffer.
const delayQueue = 64

// closeFlush bounds how long Close waits beyond the delay for bytes in
// flight to be written to a peer that does not read them.
const closeFlush = time.Second

// packet is bytes in flight, due at due; err ends the stream after them.
type packet struct {
	due  time.Time
	data []byte
	err  error
}

// delayConn is a net.Conn through a DelayLine. The embedded Conn is the
// real connection; only its addresses are used directly.
type delayConn struct {
	net.Conn
	line *DelayLine

	out       chan packet   // written, to be sent when due
	in        chan packet   // received, to be read when due
	closing   chan struct{} // closed by Close
	abandon   chan struct{} // closed when Close stops waiting to send
	closeOnce sync.Once
	broken    chan struct{} // closed when sending failed; werr says why
	werr      error
	pumpsDone chan struct{} // closed when send and receive returned
	pumpsLeft atomic.Int32
	received  atomic.Int64 // bytes read from the real connection

	rmu    sync.Mutex // one Read at a time; guards the fields below
	rbuf   []byte     // the rest of the packet being read
	rerr   error      // the stream's end, once rbuf is read
	rnext  *packet    // taken from in, not yet due
	rtimer alarm

	rdl, wdl *deadline
}

// Write queues a copy of b to be sent one delay from now. It waits only
// when the link's buffer is full, and fails once the connection is closed
// or sending failed.
func (c *delayConn) Write(b []byte) (int, error) {
	select {
	case <-c.closing:
		return 0, net.ErrClosed
	case <-c.broken:
		return 0, c.werr
	default:
	}
	if len(b) == 0 {
		return 0, nil
	}
	p := packet{due: c.line.clock.Now().Add(c.line.delay), data: bytes.Clone(b)}
	select {
	case c.out <- p:
		return len(b), nil
	case <-c.closing:
		return 0, net.ErrClosed
	case <-c.broken:
		return 0, c.werr
	case <-c.wdl.wait():
		return 0, os.ErrDeadlineExceeded
	}
}

// send writes each packet to the real connection when it is due, those
// due together in one write. After Close it sends what was written before,
// then closes the real connection.
func (c *delayConn) send() {
	defer c.Conn.Close()
	clk := c.line.clock
	t := clk.NewTimer()
	defer t.Close()
	var next *packet // taken from out, not yet due
	for {
		p, ok := c.nextOut(next)
		if !ok {
			return
		}
		var woke time.Time
		if p.due.After(clk.Now()) {
			t.Reset(p.due)
			select {
			case <-t.C():
				woke = clk.Now()
			case <-c.abandon:
				return
			}
		}
		c.line.stats.delivered(len(p.data), p.due, woke)
		bufs := net.Buffers{p.data}
		bufs, next = c.dueOut(bufs)
		if _, err := bufs.WriteTo(c.Conn); err != nil {
			c.werr = err
			close(c.broken)
			return
		}
	}
}

// nextOut returns next if set, else the next packet written, waiting for
// one; after Close, only those already written (false when none is left).
func (c *delayConn) nextOut(next *packet) (packet, bool) {
	if next != nil {
		return *next, true
	}
	select {
	case p := <-c.out:
		return p, true
	case <-c.closing:
	}
	select {
	case p := <-c.out:
		return p, true
	default:
		return packet{}, false
	}
}

// dueOut appends to bufs the packets written and already due, and returns
// the first one not yet due, if it took one.
func (c *delayConn) dueOut(bufs net.Buffers) (net.Buffers, *packet) {
	for {
		select {
		case p := <-c.out:
			if p.due.After(c.line.clock.Now()) {
				return bufs, &p
			}
			c.line.stats.delivered(len(p.data), p.due, time.Time{})
			bufs = append(bufs, p.data)
		default:
			return bufs, nil
		}
	}
}

// receive reads the real connection as bytes arrive and queues them, due
// one delay later, until the connection ends or is closed.
func (c *delayConn) receive() {
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Conn.Read(buf)
		if n == 0 && err == nil {
			continue
		}
		p := packet{due: c.line.clock.Now().Add(c.line.delay), data: bytes.Clone(buf[:n]), err: err}
		c.received.Add(int64(n))
		select {
		case c.in <- p:
		case <-c.closing:
			return
		}
		if err != nil {
			return
		}
	}
}

// Read returns bytes that arrived at least one delay ago, waiting for the
// next to become due when none are. It returns the real connection's
// error (io.EOF when the peer closed) after the bytes before it, and fails
// at the read deadline or once the connection is closed.
func (c *delayConn) Read(b []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	select {
	case <-c.closing:
		return 0, net.ErrClosed
	default:
	}
	if len(b) == 0 {
		return 0, nil
	}
	if len(c.rbuf) == 0 && c.rerr == nil {
		if err := c.awaitIn(); err != nil {
			return 0, err
		}
	}
	n := copy(b, c.rbuf)
	c.rbuf = c.rbuf[n:]
	// Bytes that arrived since, and are due too, fill the rest of b.
	for n < len(b) && len(c.rbuf) == 0 && c.rerr == nil && c.takeDueIn() {
		m := copy(b[n:], c.rbuf)
		c.rbuf = c.rbuf[m:]
		n += m
	}
	if n == 0 && c.rerr != nil {
		return 0, c.rerr
	}
	return n, nil
}

// awaitIn waits for the next packet received to become due and makes it
// the one being read. A packet that was not due when the wait failed is
// kept for the next Read.
func (c *delayConn) awaitIn() error {
	if c.rnext == nil {
		select {
		case p := <-c.in:
			c.rnext = &p
		case <-c.closing:
			return net.ErrClosed
		case <-c.rdl.wait():
			return os.ErrDeadlineExceeded
		}
	}
	var woke time.Time
	if clk := c.line.clock; c.rnext.due.After(clk.Now()) {
		c.rtimer.Reset(c.rnext.due)
		select {
		case <-c.rtimer.C():
			woke = clk.Now()
		case <-c.closing:
			c.rtimer.Stop()
			return net.ErrClosed
		case <-c.rdl.wait():
			c.rtimer.Stop()
			return os.ErrDeadlineExceeded
		}
	}
	c.takeIn(woke)
	return nil
}

// takeDueIn makes the next packet received the one being read if it is
// due, without waiting, and reports whether it did.
func (c *delayConn) takeDueIn() bool {
	if c.rnext == nil {
		select {
		case p := <-c.in:
			c.rnext = &p
		default:
			return false
		}
	}
	if c.rnext.due.After(c.line.clock.Now()) {
		return false
	}
	c.takeIn(time.Time{})
	return true
}

func (c *delayConn) takeIn(woke time.Time) {
	p := c.rnext
	c.rnext = nil
	c.rbuf, c.rerr = p.data, p.err
	if len(p.data) > 0 {
		c.line.stats.delivered(len(p.data), p.due, woke)
	}
}

// Close stops Read and Write at once, sends what was written before (for
// at most one delay plus closeFlush), closes the real connection and
// returns when the connection's goroutines have. A second Close returns
// net.ErrClosed.
func (c *delayConn) Close() error {
	first := false
	c.closeOnce.Do(func() {
		first = true
		close(c.closing)
		// Real time, whatever the link's clock: Close must return.
		c.Conn.SetWriteDeadline(time.Now().Add(c.line.delay + closeFlush))
		time.AfterFunc(c.line.delay+closeFlush, func() { close(c.abandon) })
	})
	if !first {
		return net.ErrClosed
	}
	<-c.pumpsDone
	c.rmu.Lock() // a Read under way returns at once: closing is closed
	c.rtimer.Close()
	c.rmu.Unlock()
	return nil
}

// SetDeadline sets the read and write deadlines of the link's side: Read
// waiting for bytes, Write waiting for room in the link's buffer.
func (c *delayConn) SetDeadline(t time.Time) error {
	c.rdl.set(t)
	c.wdl.set(t)
	return nil
}

func (c *delayConn) SetReadDeadline(t time.Time) error  { c.rdl.set(t); return nil }
func (c *delayConn) SetWriteDeadline(t time.Time) error { c.wdl.set(t); return nil }

// deadline is a settable deadline whose channel is closed while it has
// passed, as net.Pipe's are.
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	cancel chan struct{}
}

func newDeadline() *deadline { return &deadline{cancel: make(chan struct{})} }

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired: wait for it to close cancel
	}
	d.timer = nil
	closed := isClosed(d.cancel)
	if t.IsZero() {
		if closed {
			d.cancel = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.cancel = make(chan struct{})
		}
		cancel := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(cancel) })
		return
	}
	if !closed {
		close(d.cancel)
	}
}

// wait returns a channel closed once the deadline passes.
func (d *deadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
