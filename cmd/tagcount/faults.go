//go:build faults

package main

import "flag"

// registerFaults adds the fault-injection flags: the process soak test
// builds the binary with -tags faults (soak_procs_test.go), and a
// production build has none of them.
func registerFaults(fs *flag.FlagSet, s *settings) {
	fs.Float64Var(&s.PublishDropRate, "fault-publish-drop-rate", 0, "testing only: share of announcements the worker drops, as if lost")
}
