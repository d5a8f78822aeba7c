//go:build linux

package loadgen

import (
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// newLinkClock returns the clock of a link on Linux: real time, with
// alarms that are both a runtime timer and a timerfd in Go's network
// poller, whichever rings first. The runtime's timers are precise while
// the process is busy, but an idle runtime sleeps in its poller in whole
// milliseconds, so a 250 µs link would behave like a 1 ms one; a timerfd
// wakes the poller when it expires, but the goroutine it readies waits
// behind the busy process's others (milliseconds, measured).
func newLinkClock() clock { return timerfdClock{} }

type timerfdClock struct{}

func (timerfdClock) Now() time.Time { return time.Now() }

// NewTimer returns a timerfd alarm, or a runtime timer when the system
// has no timerfd to give.
func (timerfdClock) NewTimer() alarm {
	if a, err := newFDAlarm(); err == nil {
		return a
	}
	return newRuntimeAlarm()
}

// fdAlarm is a timerfd read by a goroutine of its own and a runtime
// timer, either of which passes the time on to C when the time set by the
// latest Reset has come.
type fdAlarm struct {
	f  *os.File
	fd int
	rt *time.Timer
	ch chan time.Time

	mu    sync.Mutex
	at    time.Time
	armed bool
}

func newFDAlarm() (*fdAlarm, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	// A non-blocking descriptor makes a File that reads through the poller.
	a := &fdAlarm{f: os.NewFile(uintptr(fd), "timerfd"), fd: fd, ch: make(chan time.Time, 1)}
	a.rt = time.AfterFunc(time.Hour, a.ring)
	a.rt.Stop()
	go a.forward()
	return a, nil
}

// ring is the runtime timer's expiry.
func (a *fdAlarm) ring() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.armed {
		a.fireOrArm()
	}
}

func (a *fdAlarm) forward() {
	var buf [8]byte // the number of expiries
	for {
		if _, err := a.f.Read(buf[:]); err != nil {
			return // closed
		}
		a.mu.Lock()
		if a.armed {
			a.fireOrArm()
		}
		a.mu.Unlock()
	}
}

// fireOrArm sends the time to C if the alarm's time has come, and arms
// the timerfd for the rest otherwise (an expiry of an earlier Reset).
func (a *fdAlarm) fireOrArm() {
	wait := time.Until(a.at)
	if wait > 0 {
		a.rt.Reset(wait)
		ts := unix.NsecToTimespec(int64(wait))
		if unix.TimerfdSettime(a.fd, 0, &unix.ItimerSpec{Value: ts}, nil) == nil {
			return
		}
	}
	a.disarm()
	select {
	case a.ch <- time.Now():
	default:
	}
}

func (a *fdAlarm) Reset(at time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.drain()
	a.at, a.armed = at, true
	a.fireOrArm()
}

func (a *fdAlarm) Stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.disarm()
	a.drain()
}

// disarm stops both clocks, so that the one that did not ring does not
// wake a goroutine for nothing.
func (a *fdAlarm) disarm() {
	a.armed = false
	a.rt.Stop()
	unix.TimerfdSettime(a.fd, 0, &unix.ItimerSpec{}, nil)
}

func (a *fdAlarm) C() <-chan time.Time { return a.ch }

// Close releases the timerfd and ends its goroutine.
func (a *fdAlarm) Close() {
	a.Stop()
	a.f.Close()
}

func (a *fdAlarm) drain() {
	select {
	case <-a.ch:
	default:
	}
}
