package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/tagcount/tagcount/cmd/tagcount/loadgen"
	"github.com/tagcount/tagcount/drafts"
)

// spikeSettings are the flags of loadgen's spike scenario.
type spikeSettings struct {
	Before, During, After time.Duration
}

func (c *spikeSettings) register(fs *flag.FlagSet) {
	fs.DurationVar(&c.Before, "spike-before", 30*time.Second, "spike: how long the load runs at half of --rate (the path's capacity) before the spike")
	fs.DurationVar(&c.During, "spike-for", 60*time.Second, "spike: how long the load runs at twice --rate")
	fs.DurationVar(&c.After, "spike-after", 150*time.Second, "spike: how long the load runs at half of --rate after the spike")
}

// validate checks the spike flags of s (nothing for another scenario).
func (c spikeSettings) validate(s loadgenSettings) error {
	if s.Scenario != loadgen.ScenarioSpike {
		return nil
	}
	if s.URL != "" || s.Capacity.Find || s.Rate <= 0 || c.Before <= 0 || c.During <= 0 || c.After <= 0 {
		return errors.New("--scenario spike needs --rate (the path's capacity, works/s) and positive --spike-* durations, and runs its own in-process stack (not --url or --find-capacity)")
	}
	return nil
}

// runSpike runs the spike scenario on the first of --paths, on a fresh
// in-process stack, sampling the service's backlog of queued posts every
// second, and prints and writes the report.
func (lg *loadgenSession) runSpike(ctx context.Context, args []string, stdout io.Writer, path string) error {
	shape := loadgen.SpikeShape{Capacity: lg.s.Rate, Before: lg.s.Spike.Before, During: lg.s.Spike.During, After: lg.s.Spike.After}
	database := "tagcount_loadgen_" + lg.runID + "_spike"
	st, stop, err := loadgenStack(ctx, lg.s, lg.runID, path, database, lg.secret, lg.log, true)
	if err != nil {
		return fmt.Errorf("starting the %s path's service: %w", path, err)
	}
	defer func() {
		if err := stop(); err != nil {
			fmt.Fprintf(lg.stderr, "loadgen: stopping the %s path's service: %v\n", path, err)
		}
		loadgenDrop(lg.server, database, lg.s.KeepDB, lg.stderr)
	}()
	cfg := lg.base
	cfg.Path, cfg.BaseURL, cfg.Auth, cfg.DB = path, st.URL, st.Auth, st.DB
	cfg.Rate, cfg.RateAt, cfg.OpenLoop, cfg.Duration, cfg.Posts = 2*shape.Capacity, shape.RateAt, true, shape.Duration(), 0
	cfg.Concurrency = max(lg.s.Concurrency, lg.s.Capacity.InFlight)
	// Posts queued at the spike's peak wait for the backlog to drain.
	cfg.PollTimeout, cfg.DrainTimeout = max(cfg.PollTimeout, 5*time.Minute), max(cfg.DrainTimeout, 5*time.Minute)
	fmt.Fprintf(lg.stderr, "loadgen: spike on the %s path at %s: %.0f/s for %v, %.0f/s for %v, %.0f/s for %v\n", path, st.URL,
		shape.Capacity/2, shape.Before, 2*shape.Capacity, shape.During, shape.Capacity/2, shape.After)
	sctx, stopSampling := context.WithCancel(ctx)
	var samples []loadgen.BacklogSample
	var wg sync.WaitGroup
	start := time.Now()
	wg.Go(func() {
		samples = sampleBacklog(sctx, &drafts.Store{DB: st.DB}, start, func() float64 {
			return metricValue(st.Registry, "tagcount_posting_limit_drafts_per_second")
		})
	})
	res, err := loadgen.Run(ctx, cfg)
	stopSampling()
	wg.Wait()
	writeStages(lg.stderr, path, st.Registry)
	if err != nil {
		return err
	}
	rep := loadgen.NewSpikeReport(path, shape, res, samples)
	rep.Command, rep.Started, rep.Machine = "tagcount loadgen "+strings.Join(args, " "), start, lg.rep.Machine
	fmt.Fprintln(stdout)
	if err := rep.WriteText(stdout); err != nil {
		return err
	}
	if lg.s.OutJSON != "" {
		if err := rep.WriteJSON(lg.s.OutJSON); err != nil {
			return err
		}
		fmt.Fprintf(lg.stderr, "loadgen: wrote %s\n", lg.s.OutJSON)
	}
	return ctx.Err()
}

// sampleBacklog reads the backlog of queued posts (and the posting limit,
// from limit) every second from start until ctx ends, and returns the
// samples.
func sampleBacklog(ctx context.Context, store *drafts.Store, start time.Time, limit func() float64) []loadgen.BacklogSample {
	var out []loadgen.BacklogSample
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return out
		case now := <-t.C:
			qctx, cancel := context.WithTimeout(ctx, time.Second)
			n, oldest, err := store.Backlog(qctx)
			cancel()
			if err != nil {
				continue
			}
			s := loadgen.BacklogSample{At: now.Sub(start), Drafts: n, Limit: limit()}
			if !oldest.IsZero() {
				s.OldestAgeS = max(0, now.Sub(oldest).Seconds())
			}
			out = append(out, s)
		}
	}
}
