package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"

	"github.com/olekukonko/tablewriter"
	"github.com/peterbourgon/ff/v3"
	"github.com/schollz/progressbar/v3"

	"github.com/tagcount/tagcount/counter/reconcile"
	"github.com/tagcount/tagcount/migrations"
)

// reconcileFlags are the flags of `tagcount reconcile`.
type reconcileFlags struct {
	dsn    string
	dryRun bool
	tag    int64
	perSec float64
	chunk  int
	pause  time.Duration
	level  slog.Level
}

// runReconcile runs `tagcount reconcile`: one reconcile run now, in this
// process, with a progress bar on stderr and a summary table on stdout. It
// fails (exit 1) when another run is in progress.
func runReconcile(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parseReconcile(args, stderr)
	if err != nil {
		return err
	}
	db, err := migrations.Open(ctx, f.dsn)
	if err != nil {
		return err
	}
	defer db.Close()

	bar := &reconcileBar{w: stderr}
	r := reconcile.New(reconcile.Config{
		DB:                   db,
		ChunkSize:            f.chunk,
		CorrectionsPerSecond: f.perSec,
		ChunkPause:           f.pause,
		Logger:               slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: f.level})),
		Progress:             bar.progress,
	})
	defer r.Close()

	rep, err := r.Run(ctx, reconcile.Options{DryRun: f.dryRun, TagID: f.tag})
	bar.finish(err)
	switch {
	case errors.Is(err, reconcile.ErrRunning):
		return fmt.Errorf("%w: nothing was done; wait for it to finish (GET /v1/admin/reconcile/{id} shows its progress) and run this again", err)
	case errors.Is(err, reconcile.ErrTagNotFound):
		return fmt.Errorf("reconcile: tag %d does not exist", f.tag)
	}
	if rep.ID != 0 {
		if werr := writeReconcileSummary(stdout, rep); werr != nil && err == nil {
			err = werr
		}
	}
	return err
}

// parseReconcile parses and checks reconcile's flags; it returns
// flag.ErrHelp after printing them when args ask for help.
func parseReconcile(args []string, stderr io.Writer) (reconcileFlags, error) {
	var f reconcileFlags
	fs := flag.NewFlagSet("tagcount reconcile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.dsn, "mysql-dsn", migrations.DefaultDSN, "MySQL/MariaDB DSN (go-sql-driver format)")
	fs.BoolVar(&f.dryRun, "dry-run", false, "report drift without correcting it")
	fs.Int64Var(&f.tag, "tag", 0, "reconcile only this tag id")
	fs.Float64Var(&f.perSec, "rate", reconcile.DefaultCorrectionsPerSecond, "most corrections written per second")
	fs.IntVar(&f.chunk, "chunk", reconcile.DefaultChunkSize, "tags read per consistent snapshot")
	fs.DurationVar(&f.pause, "chunk-pause", reconcile.DefaultChunkPause, "pause between chunks (negative: none)")
	logLevel := fs.String("log-level", "warn", "debug (every drifted tag), info, warn or error; logs go to stderr")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: tagcount reconcile [flags]\n\nFind tags whose stored count drifted from the number of posted works using them,\nand correct them (relatively, rate-limited). One run at a time across all workers.\n\nflags (each also read from TAGCOUNT_<NAME>):")
		fs.PrintDefaults()
	}
	if err := ff.Parse(fs, args, ff.WithEnvVarPrefix("TAGCOUNT")); err != nil {
		return f, err
	}
	if fs.NArg() > 0 {
		return f, fmt.Errorf("reconcile: unexpected arguments %q", fs.Args())
	}
	if f.perSec <= 0 {
		return f, fmt.Errorf("reconcile: --rate must be positive, not %v", f.perSec)
	}
	if f.chunk <= 0 {
		return f, fmt.Errorf("reconcile: --chunk must be positive, not %d", f.chunk)
	}
	if f.pause == 0 {
		f.pause = -1 // the config reads 0 as "default"
	}
	if err := f.level.UnmarshalText([]byte(*logLevel)); err != nil {
		return f, fmt.Errorf("reconcile: --log-level: %w", err)
	}
	return f, nil
}

// reconcileBar shows a run's progress on w, created at the first report
// since only then is the number of tags known.
type reconcileBar struct {
	w   io.Writer
	bar *progressbar.ProgressBar
}

func (b *reconcileBar) progress(scanned, total int64) {
	if b.bar == nil {
		b.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(b.w),
			progressbar.OptionSetDescription("reconcile"),
			progressbar.OptionSetItsString("tags"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(b.w) }),
		)
	}
	if scanned > b.bar.GetMax64() { // tags created since the run began
		b.bar.ChangeMax64(scanned)
	}
	b.bar.Set64(scanned)
}

// finish completes the bar after a successful run, or ends its line after
// a failed one.
func (b *reconcileBar) finish(err error) {
	if b.bar == nil || b.bar.IsFinished() {
		return
	}
	if err == nil {
		b.bar.Finish()
	} else {
		fmt.Fprintln(b.w)
	}
}

// writeReconcileSummary prints a run's report as a table.
func writeReconcileSummary(w io.Writer, rep reconcile.Report) error {
	mode := "applied"
	if rep.DryRun {
		mode = "dry run (nothing written)"
	}
	largest := "-"
	if rep.LargestDriftTagID != 0 {
		largest = fmt.Sprintf("%+d (tag %d)", rep.LargestDrift, rep.LargestDriftTagID)
	}
	rows := [][]string{
		{"run", strconv.FormatInt(rep.ID, 10)},
		{"state", rep.State},
		{"mode", mode},
	}
	if rep.TagID != 0 {
		rows = append(rows, []string{"only tag", strconv.FormatInt(rep.TagID, 10)})
	}
	rows = append(rows,
		[]string{"tags scanned", strconv.FormatInt(rep.TagsScanned, 10)},
		[]string{"tags drifted", strconv.FormatInt(rep.TagsDrifted, 10)},
		[]string{"tags corrected", strconv.FormatInt(rep.TagsCorrected, 10)},
		[]string{"total |drift|", strconv.FormatInt(rep.TotalAbsDrift, 10)},
		[]string{"largest drift", largest},
		[]string{"started (UTC)", rep.StartedAt.UTC().Format(time.RFC3339)},
		[]string{"duration", rep.Duration().Round(time.Millisecond).String()},
	)
	if rep.Error != "" {
		rows = append(rows, []string{"error", rep.Error})
	}
	table := tablewriter.NewWriter(w)
	table.Header("reconcile", "")
	if err := table.Bulk(rows); err != nil {
		return err
	}
	return table.Render()
}
