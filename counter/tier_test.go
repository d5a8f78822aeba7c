package counter

import (
	"testing"
	"time"
)

func TestTiersFollowTheDesignTable(t *testing.T) {
	t.Parallel()
	var tiers Tiers // zero value: the defaults
	cases := []struct {
		count    int64
		tier     Tier
		interval time.Duration
	}{
		{0, TierSmall, 0},
		{999, TierSmall, 0},
		{1000, TierMedium, 3 * time.Minute},
		{39_999, TierMedium, 40 * time.Minute},
		{40_000, TierLarge, 30 * time.Minute},
		{250_000, TierLarge, 30 * time.Minute},
	}
	for _, c := range cases {
		if got := tiers.WithDefaults().of(c.count); got != c.tier {
			t.Errorf("of(%d) = %v, want %v", c.count, got, c.tier)
		}
		if got := tiers.Interval(c.count); got != c.interval {
			t.Errorf("Interval(%d) = %v, want %v", c.count, got, c.interval)
		}
	}
	prev := time.Duration(0)
	for n := int64(1000); n < 40_000; n += 500 {
		iv := tiers.Interval(n)
		if iv < prev {
			t.Fatalf("medium interval shrinks at %d: %v < %v", n, iv, prev)
		}
		prev = iv
	}
	d := tiers.WithDefaults()
	for range 1000 {
		j := d.jittered(40 * time.Minute)
		if j < 36*time.Minute || j > 44*time.Minute {
			t.Fatalf("jittered 40m = %v, outside ±10%%", j)
		}
	}
	if got := (Tiers{Jitter: -1}).WithDefaults().jittered(time.Minute); got != time.Minute {
		t.Errorf("negative Jitter still jitters: %v", got)
	}
}
