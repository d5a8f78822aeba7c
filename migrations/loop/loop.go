// Package loop holds the few shapes the service's background loops and
// retries share: one cancellable sleep, the every-interval loop, and the
// one-line default of a config's sizes and intervals. It is nested under
// migrations, the bottom layer every package already imports, so that
// domain packages share it without depending on each other.
package loop

import (
	"context"
	"time"
)

// Sleep waits for d and returns nil, or returns ctx's error as soon as ctx
// ends. It is the one cancellable sleep of the service's loops and retries.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// OrDefault returns v, or def when v is zero or negative: how a config
// fills in the fields its caller left unset (a negative size or interval
// would make no sense, and some would panic a ticker).
func OrDefault[T int | int64 | float64 | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// Every runs once immediately and then every interval until ctx ends, and
// returns nil. It is the shape of the service's background loops (the
// sweeper, the read cache's refresher, the poster's requeuer): each has a
// config with defaults, a runOnce that tests call directly, and a Run that
// is Every(ctx, interval, runOnce). A failing round is the loop's to log;
// the next round tries again.
func Every(ctx context.Context, interval time.Duration, once func(ctx context.Context)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		once(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
