package loadgen

import (
	"fmt"
	"io"
	"time"

	"golang.org/x/term"
)

// progress prints a line a second to cfg.Progress until the returned stop
// is called: rewritten in place on a terminal, one line each otherwise.
func (r *run) progress(start time.Time) (stop func()) {
	w := r.cfg.Progress
	if w == nil {
		return func() {}
	}
	tty := isTerminal(w)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				if tty {
					fmt.Fprintln(w)
				}
				return
			case now := <-t.C:
				line := r.progressLine(now)
				if tty {
					fmt.Fprintf(w, "\r\033[K%s", line)
				} else {
					fmt.Fprintln(w, line)
				}
			}
		}
	}()
	return func() { close(done); <-finished }
}

func (r *run) progressLine(now time.Time) string {
	s := r.rec.snapshot(now)
	phase := "load"
	if r.stopped.Load() {
		phase = "drain"
	}
	return fmt.Sprintf("[%s %s %3.0fs] started %d  accepted %d  completed %d (%.0f/s)  post p99 %.1fms  errors %d",
		r.cfg.Path, phase, s.elapsed.Seconds(), r.started.Load(), s.accepted, s.completed, s.lastCompletedPerSec, s.lastPostP99, s.errors)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}
