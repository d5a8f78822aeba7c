package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/tagcount/tagcount/cmd/tagcount/loadgen"
	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations/loop"
	"github.com/tagcount/tagcount/poster"
)

// wranglingSettings are loadgen's flags of the wrangling scenario.
type wranglingSettings struct {
	SeedWorks            int
	RowsPerTx, PerSecond int
	// WrangledFirst runs the run with the job before the plain one: a
	// later run benefits from a warmer machine, so measuring both orders
	// shows how much of the ratio is the order.
	WrangledFirst bool
}

func (w *wranglingSettings) register(fs *flag.FlagSet) {
	fs.IntVar(&w.SeedWorks, "wrangle-seed-works", 20_000, "with --scenario wrangling: works posted on the big tag before the load (in both runs)")
	fs.IntVar(&w.RowsPerTx, "wrangle-rows-per-tx", poster.DefaultWrangleRowsPerTx, "with --scenario wrangling: the job's rows per transaction")
	fs.IntVar(&w.PerSecond, "wrangle-rows-per-second", poster.DefaultWrangleRowsPerSecond, "with --scenario wrangling: the job's rows per second")
	fs.BoolVar(&w.WrangledFirst, "wrangled-first", false, "with --scenario wrangling: run the run with the job first (a later run meets a warmer machine)")
}

// Names of the wrangling scenario's tags.
const (
	wrangleBigTag   = "Wrangling Scenario Big Tag"
	wrangleCanonTag = "Wrangling Scenario Canonical"
)

// wranglingLog is the job's commit log: every transaction, as the poster
// reports it.
type wranglingLog struct {
	mu      sync.Mutex
	commits []poster.WrangleCommit
}

func (l *wranglingLog) add(c poster.WrangleCommit) {
	l.mu.Lock()
	l.commits = append(l.commits, c)
	l.mu.Unlock()
}

// peaks returns the most rows of one transaction, and the most rows of the
// transactions started (and committed) in any one-second window.
func (l *wranglingLog) peaks() (perTx, perSecondStarted, perSecondCommitted, txs int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.commits {
		perTx = max(perTx, c.Rows)
	}
	window := func(at func(poster.WrangleCommit) time.Time) int {
		cs := slices.Clone(l.commits)
		slices.SortFunc(cs, func(a, b poster.WrangleCommit) int { return at(a).Compare(at(b)) })
		most := 0
		for i := range cs {
			sum := 0
			for _, c := range cs[i:] {
				if at(c).Sub(at(cs[i])) >= time.Second {
					break
				}
				sum += c.Rows
			}
			most = max(most, sum)
		}
		return most
	}
	perSecondStarted = window(func(c poster.WrangleCommit) time.Time { return c.Started })
	perSecondCommitted = window(func(c poster.WrangleCommit) time.Time { return c.Committed })
	return perTx, perSecondStarted, perSecondCommitted, len(l.commits)
}

// runWranglingScenario runs the new path twice on fresh stacks whose
// databases hold the same big tag: plainly, then with the big tag made a
// synonym as the load starts, so its wrangling job runs under the load.
// It reports the job's peaks against its limits and the authors' Post p99
// of the two runs.
func (lg *loadgenSession) runWranglingScenario(ctx context.Context, stdout io.Writer) error {
	var plain, wrangled *loadgen.Result
	var log *wranglingLog
	for _, wrangle := range []bool{lg.s.Wrangling.WrangledFirst, !lg.s.Wrangling.WrangledFirst} {
		res, l, err := lg.runWrangled(ctx, wrangle)
		if err != nil {
			return err
		}
		if wrangle {
			wrangled, log = res, l
		} else {
			plain = res
		}
	}
	wrangled.Path = "new+wrangling"
	lg.rep.Results = append(lg.rep.Results, plain, wrangled)
	lg.rep.Finish()
	w := lg.s.Wrangling
	perTx, startedPeak, committedPeak, txs := log.peaks()
	p0, p1 := plain.Latency["post"].P99, wrangled.Latency["post"].P99
	ratio := p1 / p0
	lg.rep.Targets = append(lg.rep.Targets,
		loadgen.Target{Name: "wrangling job rows per transaction", Want: fmt.Sprintf("≤ %d", w.RowsPerTx), Got: fmt.Sprint(perTx), Met: perTx <= w.RowsPerTx},
		loadgen.Target{Name: "wrangling job rows in any second (by start)", Want: fmt.Sprintf("≤ %d", w.PerSecond),
			Got: fmt.Sprintf("%d (by commit %d)", startedPeak, committedPeak), Met: startedPeak <= w.PerSecond},
		loadgen.Target{Name: "Post p99 with the job / without", Want: "≤ 1.25×", Got: fmt.Sprintf("%.2f× (%.1f / %.1f ms)", ratio, p1, p0),
			Met: p0 > 0 && ratio <= 1.25})
	fmt.Fprintln(stdout)
	fmt.Fprintf(stdout, "wrangling: %d works on one tag, made a synonym as the load started; the job committed %d transactions during the run\n",
		w.SeedWorks, txs)
	if err := lg.rep.WriteText(stdout); err != nil {
		return err
	}
	return writeLoadgenFiles(lg.rep, lg.s, lg.stderr)
}

// runWrangled runs the new path once on a fresh stack seeded with the big
// tag; with wrangle, the tag is made a synonym as the load starts, and the
// job's commit log is returned.
func (lg *loadgenSession) runWrangled(ctx context.Context, wrangle bool) (*loadgen.Result, *wranglingLog, error) {
	log := &wranglingLog{}
	label := "new_plain"
	if wrangle {
		label = "new_wrangling"
	}
	database := "tagcount_loadgen_" + lg.runID + "_" + label
	w := lg.s.Wrangling
	st, stop, err := loadgenStack(ctx, lg.s, lg.runID+"-"+label, "new", database, lg.secret, lg.log, true, func(o *stackOptions) {
		o.WrangleRowsPerTx, o.WrangleRowsPerSecond, o.OnWrangleCommit = w.RowsPerTx, w.PerSecond, log.add
	})
	if err != nil {
		return nil, nil, fmt.Errorf("starting the %s run's service: %w", label, err)
	}
	defer func() {
		if err := stop(); err != nil {
			fmt.Fprintf(lg.stderr, "loadgen: stopping the %s run's service: %v\n", label, err)
		}
		loadgenDrop(lg.server, database, lg.s.KeepDB, lg.stderr)
	}()
	big, canon, err := seedBigTag(ctx, st, w.SeedWorks, lg.stderr)
	if err != nil {
		return nil, nil, err
	}
	if wrangle {
		job, err := st.Poster.MakeSynonym(ctx, big, canon)
		if err != nil {
			return nil, nil, err
		}
		fmt.Fprintf(lg.stderr, "loadgen: wrangling job %d re-files the big tag's works under the load\n", job.ID)
	}
	cfg := lg.base
	cfg.Path, cfg.BaseURL, cfg.Auth, cfg.DB = "new", st.URL, st.Auth, st.DB
	res, err := lg.profiled(ctx, cfg)
	return res, log, err
}

// seedBigTag posts n works using the big tag (every fourth also the
// canonical one) through the bulk posting transaction, waits until the
// counter has applied every small tag's rows, and returns the two tags.
func seedBigTag(ctx context.Context, st *stack, n int, stderr io.Writer) (big, canon int64, err error) {
	fmt.Fprintf(stderr, "loadgen: seeding %d works on the big tag\n", n)
	ref := tags.NewRef(tags.TypeFreeform, wrangleBigTag)
	canonRef := tags.NewRef(tags.TypeFreeform, wrangleCanonTag)
	for done := 0; done < n; done += 500 {
		contents := make([]drafts.Content, 0, 500)
		for i := done; i < min(n, done+500); i++ {
			c := drafts.Content{Title: fmt.Sprintf("seed %d", i), Body: "Seeded."}
			c.Tags.Add(ref)
			if i%4 == 0 {
				c.Tags.Add(canonRef)
			}
			contents = append(contents, c)
		}
		if _, err := st.Poster.PostContents(ctx, 1, poster.PathNew, contents); err != nil {
			return 0, 0, fmt.Errorf("seeding the big tag: %w", err)
		}
	}
	for {
		_, small, err := counter.OutboxDepth(ctx, st.DB, counter.DefaultTiers().MediumFrom)
		if err != nil || small == 0 {
			break
		}
		if err := loop.Sleep(ctx, 200*time.Millisecond); err != nil {
			return 0, 0, err
		}
	}
	for i, r := range []tags.Ref{ref, canonRef} {
		t, ok, err := tags.ByKey(ctx, st.DB, r.Type, tags.NameKey(r.Name))
		if err != nil || !ok {
			return 0, 0, fmt.Errorf("the seeded tag %q: %v", r.Name, err)
		}
		if i == 0 {
			big = t.ID
		} else {
			canon = t.ID
		}
	}
	return big, canon, nil
}
