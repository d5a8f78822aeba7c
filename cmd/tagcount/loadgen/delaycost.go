package loadgen

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// DelayCost is what a delay line costs this process's CPU, from a
// calibration: ping-pong traffic over loopback, first direct and then
// through a delay line, with this process's CPU time (getrusage) read
// around each phase. The echo server and the clients run in both phases,
// so the difference per round trip is the delay line's: its goroutines,
// timers, copies and the garbage they make. An idle process pays more per
// timer wake-up than a busy one, so under load the true cost is likely
// lower.
type DelayCost struct {
	Conns            int     `json:"conns"`
	PhaseSeconds     float64 `json:"phase_s"`
	DirectRoundTrips int64   `json:"direct_round_trips"`
	DirectCPUUs      float64 `json:"direct_cpu_us_per_round_trip"`
	DelayRoundTrips  int64   `json:"delayed_round_trips"`
	DelayCPUUs       float64 `json:"delayed_cpu_us_per_round_trip"`
	PacketsPerRT     float64 `json:"delayed_packets_per_round_trip"`
	// CPUUsPerPacket is the difference per round trip over the packets of
	// a round trip; 0 when noise made it negative.
	CPUUsPerPacket float64 `json:"cpu_us_per_packet"`
}

// calibrationMessage is about a small statement or a short result.
const calibrationMessage = 128

// MeasureDelayCost runs conns ping-pong clients against an echo server on
// loopback for phase, first directly and then through a delay line of
// oneWay, and returns the CPU the delay line added per packet. It fails
// when loopback cannot be used or ctx ends.
func MeasureDelayCost(ctx context.Context, oneWay time.Duration, conns int, phase time.Duration) (DelayCost, error) {
	c := DelayCost{Conns: max(conns, 1), PhaseSeconds: round3(phase.Seconds())}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return c, err
	}
	stopEcho := serveEcho(ln)
	defer stopEcho()
	direct := func(nc net.Conn) net.Conn { return nc }
	rts, cpu, err := pingPong(ctx, ln.Addr().String(), c.Conns, phase, direct)
	if err != nil {
		return c, err
	}
	c.DirectRoundTrips, c.DirectCPUUs = rts, perRoundTrip(cpu, rts)
	line := NewDelayLine(oneWay)
	if rts, cpu, err = pingPong(ctx, ln.Addr().String(), c.Conns, phase, line.Wrap); err != nil {
		return c, err
	}
	c.DelayRoundTrips, c.DelayCPUUs = rts, perRoundTrip(cpu, rts)
	if rts > 0 {
		c.PacketsPerRT = round3(float64(line.Stats().Packets) / float64(rts))
	}
	if c.PacketsPerRT > 0 {
		c.CPUUsPerPacket = round3(max(c.DelayCPUUs-c.DirectCPUUs, 0) / c.PacketsPerRT)
	}
	return c, nil
}

func perRoundTrip(cpuSeconds float64, rts int64) float64 {
	if rts == 0 {
		return 0
	}
	return round3(cpuSeconds * 1e6 / float64(rts))
}

// pingPong runs conns clients, each sending a message and reading its
// echo until phase is over, and returns the round trips and this
// process's CPU seconds meanwhile. Connections are made, and closed,
// outside the measured time.
func pingPong(ctx context.Context, addr string, conns int, phase time.Duration, wrap func(net.Conn) net.Conn) (int64, float64, error) {
	cs := make([]net.Conn, 0, conns)
	defer func() {
		for _, c := range cs {
			c.Close()
		}
	}()
	var d net.Dialer
	for range conns {
		nc, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return 0, 0, err
		}
		cs = append(cs, wrap(nc))
	}
	var rts atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	cpu0 := processCPU()
	end := time.Now().Add(phase)
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg, buf := make([]byte, calibrationMessage), make([]byte, calibrationMessage)
			for time.Now().Before(end) && ctx.Err() == nil {
				if _, err := c.Write(msg); err != nil {
					failed.Store(&err)
					return
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					failed.Store(&err)
					return
				}
				rts.Add(1)
			}
		}()
	}
	wg.Wait()
	cpu := processCPU() - cpu0
	if err := failed.Load(); err != nil {
		return 0, 0, *err
	}
	return rts.Load(), cpu, ctx.Err()
}

// serveEcho sends back whatever each connection to ln receives, until
// stop closes ln and the connections and waits for them.
func serveEcho(ln net.Listener) (stop func()) {
	return serveConns(ln, func(c net.Conn) {
		defer c.Close()
		io.Copy(c, c)
	})
}

// serveConns runs serve on its own goroutine for each connection to ln,
// until stop closes ln and the connections and waits for them.
func serveConns(ln net.Listener, serve func(net.Conn)) (stop func()) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() { serve(c) })
		}
	})
	return func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}
}

// DBLink is the network hop modelled between the in-process service and
// its database: every packet delayed by OneWayMs each way.
type DBLink struct {
	OneWayMs float64   `json:"one_way_delay_ms"`
	Cost     DelayCost `json:"cpu_calibration"`
}

// DBLinkUse is what a run sent through the delay line to the database,
// from the end of the service's start to the end of the drain.
type DBLinkUse struct {
	OneWayMs     float64 `json:"one_way_delay_ms"`
	ConnsOpened  int64   `json:"conns_opened"`
	Packets      int64   `json:"packets"`
	Bytes        int64   `json:"bytes"`
	PacketsPerWk float64 `json:"packets_per_posted_work"`
	// LateUsMean is how long after their due time the waits for packets
	// ended, on average: what the link added to the delay it models
	// (timer wake-ups, scheduling on a busy machine).
	LateUsMean float64 `json:"late_us_mean"`
	// CPUSeconds estimates the link's own CPU: Packets times the
	// calibration's CPU per packet (Report.DBLink.Cost). CPUShare is that
	// over the process's CPU during the run.
	CPUSeconds float64 `json:"cpu_s_est"`
	CPUShare   float64 `json:"cpu_share_est"`
}

// linkUse prices what the link carried between before and after; works
// and processCPU are the run's posted works and CPU seconds.
func linkUse(line *DelayLine, cost *DelayCost, before, after DelayStats, works int64, processCPU float64) *DBLinkUse {
	d := after.Sub(before)
	u := &DBLinkUse{OneWayMs: round3(float64(line.Delay()) / 1e6), ConnsOpened: d.Conns, Packets: d.Packets, Bytes: d.Bytes}
	if works > 0 {
		u.PacketsPerWk = round3(float64(d.Packets) / float64(works))
	}
	if d.Waits > 0 {
		u.LateUsMean = round3(float64(d.Late.Nanoseconds()) / 1e3 / float64(d.Waits))
	}
	if cost != nil {
		u.CPUSeconds = round3(float64(d.Packets) * cost.CPUUsPerPacket / 1e6)
		if processCPU > 0 {
			u.CPUShare = round3(u.CPUSeconds / processCPU)
		}
	}
	return u
}
