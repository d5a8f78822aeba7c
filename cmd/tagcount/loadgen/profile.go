package loadgen

import (
	"fmt"
	"math"
	"time"
)

// Profile shapes the target rate over a run.
type Profile string

// Rate profiles.
const (
	// Steady holds the rate.
	Steady Profile = "steady"
	// WeekendPeak ramps from a fifth of the rate up to all of it at the
	// middle of the period and back down, like a weekend's evening peak.
	WeekendPeak Profile = "weekend-peak"
)

// ParseProfile returns the named profile.
func ParseProfile(s string) (Profile, error) {
	switch p := Profile(s); p {
	case "", Steady:
		return Steady, nil
	case WeekendPeak:
		return p, nil
	}
	return "", fmt.Errorf("unknown profile %q (want steady or weekend-peak)", s)
}

// factor is the share of the peak rate at elapsed time t of a period.
func (p Profile) factor(t, period time.Duration) float64 {
	if p != WeekendPeak || period <= 0 {
		return 1
	}
	x := math.Mod(t.Seconds()/period.Seconds(), 1)
	s := math.Sin(math.Pi * x)
	return 0.2 + 0.8*s*s
}
