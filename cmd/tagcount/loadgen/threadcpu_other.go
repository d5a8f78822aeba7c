//go:build !linux

package loadgen

// threadCPU is unknown off Linux: 0, and a storm's client CPU is not
// told apart from the service's.
func threadCPU() float64 { return 0 }
