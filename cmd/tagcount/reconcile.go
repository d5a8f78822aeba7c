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

// runReconcile runs `tagcount reconcile`: one reconcile run now, in this
// process, with a progress bar on stderr and a summary table on stdout. It
// fails (exit 1) when another run is in progress.
func runReconcile(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tagcount reconcile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		dsn      = fs.String("mysql-dsn", migrations.DefaultDSN, "MySQL/MariaDB DSN (go-sql-driver format)")
		dryRun   = fs.Bool("dry-run", false, "report drift without correcting it")
		tag      = fs.Int64("tag", 0, "reconcile only this tag id")
		perSec   = fs.Float64("rate", reconcile.DefaultCorrectionsPerSecond, "most corrections written per second")
		chunk    = fs.Int("chunk", reconcile.DefaultChunkSize, "tags read per consistent snapshot")
		pause    = fs.Duration("chunk-pause", reconcile.DefaultChunkPause, "pause between chunks (negative: none)")
		logLevel = fs.String("log-level", "warn", "debug (every drifted tag), info, warn or error; logs go to stderr")
	)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: tagcount reconcile [flags]\n\nFind tags whose stored count drifted from the number of posted works using them,\nand correct them (relatively, rate-limited). One run at a time across all workers.\n\nflags (each also read from TAGCOUNT_<NAME>):")
		fs.PrintDefaults()
	}
	if err := ff.Parse(fs, args, ff.WithEnvVarPrefix("TAGCOUNT")); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errUsage
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("reconcile: unexpected arguments %q", fs.Args())
	}
	if *perSec <= 0 {
		return fmt.Errorf("reconcile: --rate must be positive, not %v", *perSec)
	}
	if *chunk <= 0 {
		return fmt.Errorf("reconcile: --chunk must be positive, not %d", *chunk)
	}
	if *pause == 0 {
		*pause = -1 // the config reads 0 as "default"
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("reconcile: --log-level: %w", err)
	}

	db, err := migrations.Open(ctx, *dsn)
	if err != nil {
		return err
	}
	defer db.Close()

	var bar *progressbar.ProgressBar
	progress := func(scanned, total int64) {
		if bar == nil {
			bar = progressbar.NewOptions64(total,
				progressbar.OptionSetWriter(stderr),
				progressbar.OptionSetDescription("reconcile"),
				progressbar.OptionSetItsString("tags"),
				progressbar.OptionShowCount(),
				progressbar.OptionShowIts(),
				progressbar.OptionSetPredictTime(true),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionOnCompletion(func() { fmt.Fprintln(stderr) }),
			)
		}
		if scanned > bar.GetMax64() { // tags created since the run began
			bar.ChangeMax64(scanned)
		}
		bar.Set64(scanned)
	}
	r := reconcile.New(reconcile.Config{
		DB:                   db,
		ChunkSize:            *chunk,
		CorrectionsPerSecond: *perSec,
		ChunkPause:           *pause,
		Logger:               slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
		Progress:             progress,
	})
	defer r.Close()

	rep, err := r.Run(ctx, reconcile.Options{DryRun: *dryRun, TagID: *tag})
	if bar != nil && !bar.IsFinished() {
		if err == nil {
			bar.Finish()
		} else {
			fmt.Fprintln(stderr)
		}
	}
	switch {
	case errors.Is(err, reconcile.ErrRunning):
		return fmt.Errorf("%w: nothing was done; wait for it to finish (GET /v1/admin/reconcile/{id} shows its progress) and run this again", err)
	case errors.Is(err, reconcile.ErrTagNotFound):
		return fmt.Errorf("reconcile: tag %d does not exist", *tag)
	}
	if rep.ID != 0 {
		if werr := writeReconcileSummary(stdout, rep); werr != nil && err == nil {
			err = werr
		}
	}
	return err
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
