//go:build !faults

package main

import "flag"

// registerFaults adds no flag: fault injection builds only with -tags
// faults (faults.go).
func registerFaults(*flag.FlagSet, *settings) {}
