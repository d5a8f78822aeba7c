//go:build !linux

package loadgen

// newLinkClock returns the clock of a link: real time with the runtime's
// timers, which an idle process may wake up to a millisecond late.
func newLinkClock() clock { return realClock{} }
