package counter

import (
	"math/rand/v2"
	"time"

	"github.com/tagcount/tagcount/migrations/loop"
)

// Tier is a tag's size class; it decides how often the counter writes the
// tag's count and how long the read path may serve a cached count.
type Tier int

// The size tiers of docs/design.md.
const (
	TierSmall  Tier = iota // flushed every batch, never served stale
	TierMedium             // deferred for an interval growing with size
	TierLarge              // deferred for a fixed interval, read cache refreshed ahead
)

// String returns "small", "medium" or "large".
func (t Tier) String() string {
	switch t {
	case TierMedium:
		return "medium"
	case TierLarge:
		return "large"
	default:
		return "small"
	}
}

// Tiers configures the size tiers. The zero value means the defaults of
// DefaultTiers; set a field to override it.
type Tiers struct {
	// MediumFrom is the smallest count of a medium tag (default 1,000).
	MediumFrom int64
	// LargeFrom is the smallest count of a large tag (default 40,000).
	LargeFrom int64
	// MediumMinInterval and MediumMaxInterval bound a medium tag's flush
	// interval, which grows linearly with its count from MediumMin at
	// MediumFrom to MediumMax just below LargeFrom (defaults 3 and 40 min).
	MediumMinInterval time.Duration
	MediumMaxInterval time.Duration
	// LargeInterval is a large tag's flush interval (default 30 min).
	LargeInterval time.Duration
	// Jitter spreads flush times of deferred tags uniformly over
	// interval×(1±Jitter) so tags first seen together do not all flush
	// together. 0 means the default 0.1; a negative value disables jitter
	// (tests).
	Jitter float64
	// RefreshAhead is the fraction of a large tag's read-cache lifetime
	// after which the read path refreshes it in the background, so no
	// reader waits for it (default 0.8).
	RefreshAhead float64
}

// DefaultTiers returns the production defaults of docs/design.md.
func DefaultTiers() Tiers {
	return Tiers{
		MediumFrom:        1_000,
		LargeFrom:         40_000,
		MediumMinInterval: 3 * time.Minute,
		MediumMaxInterval: 40 * time.Minute,
		LargeInterval:     30 * time.Minute,
		Jitter:            0.1,
		RefreshAhead:      0.8,
	}
}

// WithDefaults returns t with every zero field set to its default (a
// negative Jitter stays: none). Applying it twice changes nothing.
func (t Tiers) WithDefaults() Tiers {
	d := DefaultTiers()
	t.MediumFrom = loop.OrDefault(t.MediumFrom, d.MediumFrom)
	t.LargeFrom = loop.OrDefault(t.LargeFrom, d.LargeFrom)
	t.LargeFrom = max(t.LargeFrom, t.MediumFrom)
	t.MediumMinInterval = loop.OrDefault(t.MediumMinInterval, d.MediumMinInterval)
	t.MediumMaxInterval = loop.OrDefault(t.MediumMaxInterval, d.MediumMaxInterval)
	t.MediumMaxInterval = max(t.MediumMaxInterval, t.MediumMinInterval)
	t.LargeInterval = loop.OrDefault(t.LargeInterval, d.LargeInterval)
	if t.Jitter == 0 {
		t.Jitter = d.Jitter
	}
	if t.Jitter > 0.5 {
		t.Jitter = 0.5
	}
	if t.RefreshAhead <= 0 || t.RefreshAhead >= 1 {
		t.RefreshAhead = d.RefreshAhead
	}
	return t
}

// Interval returns the flush interval (and read-cache lifetime) of a tag
// with count uses, without jitter: 0 for a small tag.
func (t Tiers) Interval(count int64) time.Duration { return t.WithDefaults().interval(count) }

// of returns the tier of a tag with count uses (t with its defaults applied).
func (t Tiers) of(count int64) Tier {
	switch {
	case count >= t.LargeFrom:
		return TierLarge
	case count >= t.MediumFrom:
		return TierMedium
	default:
		return TierSmall
	}
}

// interval is Interval for t with its defaults applied.
func (t Tiers) interval(count int64) time.Duration {
	switch t.of(count) {
	case TierLarge:
		return t.LargeInterval
	case TierMedium:
		span := t.LargeFrom - t.MediumFrom
		if span <= 1 {
			return t.MediumMinInterval
		}
		frac := float64(count-t.MediumFrom) / float64(span-1)
		return t.MediumMinInterval + time.Duration(frac*float64(t.MediumMaxInterval-t.MediumMinInterval))
	default:
		return 0
	}
}

// jittered returns d spread uniformly over d×(1±Jitter). t must have its
// defaults applied.
func (t Tiers) jittered(d time.Duration) time.Duration {
	if t.Jitter <= 0 || d <= 0 {
		return d
	}
	f := 1 + t.Jitter*(2*rand.Float64()-1)
	return time.Duration(float64(d) * f)
}
