//go:build linux

package loadgen

import "syscall"

// rusageThread is Linux's RUSAGE_THREAD: the calling thread alone.
const rusageThread = 1

// threadCPU is the user+system CPU time, in seconds, of the OS thread the
// calling goroutine runs on; the caller locks itself to its thread
// (runtime.LockOSThread) for the figure to be its own.
func threadCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}
