package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/olekukonko/tablewriter"
	"github.com/peterbourgon/ff/v3"
	"github.com/schollz/progressbar/v3"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/counter/reconcile"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/migrations"
)

// reconcileFlags are the flags of `tagcount reconcile`.
type reconcileFlags struct {
	dsn     string
	readDSN string
	dryRun  bool
	tag     int64
	tags    []int64
	typ     string
	json    bool
	perSec  float64
	chunk   int
	uses    int64
	pause   time.Duration
	level   slog.Level
}

// options is the run f asks for.
func (f reconcileFlags) options() reconcile.Options {
	return reconcile.Options{DryRun: f.dryRun, TagID: f.tag, Type: f.typ, TagIDs: f.tags}
}

// runReconcile runs `tagcount reconcile`: one reconcile run now, in this
// process, with a progress bar on stderr and, on stdout, a summary and the
// run's corrections as tables, or as JSON with --json. It fails (exit 1)
// when another run is in progress.
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
	cfg := reconcile.Config{
		DB:                   db,
		ChunkSize:            f.chunk,
		ChunkUses:            f.uses,
		CorrectionsPerSecond: f.perSec,
		ChunkPause:           f.pause,
		Logger:               slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: f.level})),
		Progress:             bar.progress,
	}
	if f.readDSN != "" {
		if cfg.ReadDB, err = migrations.Open(ctx, f.readDSN); err != nil {
			return fmt.Errorf("reconcile: --read-dsn: %w", err)
		}
		defer cfg.ReadDB.Close()
	}
	r, err := reconcile.New(cfg)
	if err != nil {
		return err
	}
	defer r.Close()

	rep, err := r.Run(ctx, f.options())
	bar.finish(err)
	switch {
	case errors.Is(err, reconcile.ErrRunning):
		return fmt.Errorf("%w: nothing was done; wait for it to finish (GET /v1/admin/reconcile/{id} shows its progress) and run this again", err)
	case errors.Is(err, reconcile.ErrTagNotFound):
		return fmt.Errorf("reconcile: tag %d does not exist", f.tag)
	}
	if rep.ID != 0 {
		if werr := writeReconcileRun(ctx, stdout, r, rep, f.json); werr != nil && err == nil {
			err = werr
		}
	}
	return err
}

// parseReconcile parses and checks reconcile's flags; it returns
// flag.ErrHelp after printing them when args ask for help, and an error
// naming the flag for a value it cannot use.
func parseReconcile(args []string, stderr io.Writer) (reconcileFlags, error) {
	var f reconcileFlags
	fs := flag.NewFlagSet("tagcount reconcile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.dsn, "mysql-dsn", migrations.DefaultDSN, "MySQL/MariaDB DSN (go-sql-driver format): the primary, where corrections are written")
	fs.StringVar(&f.readDSN, "read-dsn", "", "read the snapshots from this DSN (a replica of --mysql-dsn); default the primary")
	fs.BoolVar(&f.dryRun, "dry-run", false, "report drift without correcting it")
	fs.Int64Var(&f.tag, "tag", 0, "reconcile only this tag id")
	tagList := fs.String("tags", "", "reconcile only these tag ids, comma-separated (e.g. 1,2,3)")
	fs.StringVar(&f.typ, "type", "", "reconcile only tags of this type: "+strings.Join(tags.Types, ", "))
	fs.BoolVar(&f.json, "json", false, "print the run's report and every correction as JSON, with the admin API's field names")
	fs.Float64Var(&f.perSec, "rate", reconcile.DefaultCorrectionsPerSecond, "most corrections written per second")
	fs.IntVar(&f.chunk, "chunk", reconcile.DefaultChunkSize, "tags read per consistent snapshot, at most")
	fs.Int64Var(&f.uses, "chunk-uses", reconcile.DefaultChunkUses, "cut a snapshot's tags where their stored uses (count + filter count) pass this; a larger tag is read alone")
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
	if err := f.check(*tagList); err != nil {
		return f, err
	}
	if err := f.level.UnmarshalText([]byte(*logLevel)); err != nil {
		return f, fmt.Errorf("reconcile: --log-level: %w", err)
	}
	return f, nil
}

// check validates f's values, setting f.tags from the --tags list, and
// returns an error naming the first flag at fault.
func (f *reconcileFlags) check(tagList string) error {
	if f.perSec <= 0 {
		return fmt.Errorf("reconcile: --rate must be positive, not %v", f.perSec)
	}
	if f.chunk <= 0 {
		return fmt.Errorf("reconcile: --chunk must be positive, not %d", f.chunk)
	}
	if f.uses <= 0 {
		return fmt.Errorf("reconcile: --chunk-uses must be positive, not %d", f.uses)
	}
	if f.pause == 0 {
		f.pause = -1 // the config reads 0 as "default"
	}
	if f.tag < 0 {
		return fmt.Errorf("reconcile: --tag must be a tag id (a positive integer), not %d", f.tag)
	}
	f.typ = strings.ToLower(strings.TrimSpace(f.typ))
	if f.typ != "" && !slices.Contains(tags.Types, f.typ) {
		return fmt.Errorf("reconcile: --type %q is not a tag type; the types are %s", f.typ, strings.Join(tags.Types, ", "))
	}
	if strings.TrimSpace(tagList) != "" {
		for _, p := range strings.Split(tagList, ",") {
			id, err := strconv.ParseInt(strings.TrimSpace(p), 10, 64)
			if err != nil || id <= 0 {
				return fmt.Errorf("reconcile: --tags: %q is not a tag id (a positive integer); give ids separated by commas", p)
			}
			f.tags = append(f.tags, id)
		}
		f.tags = slices.Compact(slices.Sorted(slices.Values(f.tags)))
	}
	scopes := 0
	for _, set := range []bool{f.tag != 0, len(f.tags) > 0, f.typ != ""} {
		if set {
			scopes++
		}
	}
	if scopes > 1 {
		return errors.New("reconcile: give at most one of --tag, --tags and --type")
	}
	return nil
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
	if rep.Scope != "" {
		rows = append(rows, []string{"scope", rep.Scope})
	}
	rows = append(rows,
		[]string{"tags scanned", strconv.FormatInt(rep.TagsScanned, 10)},
		[]string{"tags drifted", strconv.FormatInt(rep.TagsDrifted, 10)},
		[]string{"tags corrected", strconv.FormatInt(rep.TagsCorrected, 10)},
		[]string{"total |drift|", strconv.FormatInt(rep.TotalAbsDrift, 10)},
		[]string{"total |public drift|", strconv.FormatInt(rep.TotalAbsPublicDrift, 10)},
		[]string{"largest drift", largest},
		[]string{"negative counts (bugs)", strconv.FormatInt(rep.NegativeCounts, 10)},
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

// correctionsShown is how many corrections the table lists; --json lists
// every one.
const correctionsShown = 50

// correctionsPage is how many corrections are read at a time, the admin
// route's largest page.
const correctionsPage = 1000

// writeReconcileRun prints run rep: its summary and corrections as tables,
// or as one JSON document.
func writeReconcileRun(ctx context.Context, w io.Writer, r *reconcile.Reconciler, rep reconcile.Report, asJSON bool) error {
	if asJSON {
		return writeReconcileJSON(ctx, w, r, rep)
	}
	if err := writeReconcileSummary(w, rep); err != nil {
		return err
	}
	return writeCorrectionsTable(ctx, w, r, rep.ID)
}

// eachCorrection calls fn with every correction of run, in tag id order,
// reading them a page at a time; it returns the first error.
func eachCorrection(ctx context.Context, r *reconcile.Reconciler, run int64, fn func(reconcile.Correction) error) error {
	var after int64
	for {
		page, err := r.Corrections(ctx, run, after, correctionsPage)
		if err != nil {
			return err
		}
		for _, c := range page {
			if err := fn(c); err != nil {
				return err
			}
		}
		if len(page) < correctionsPage {
			return nil
		}
		after = page[len(page)-1].TagID
	}
}

// writeReconcileJSON prints {"run": report, "corrections": [...]}, one
// correction a line, with the field names of GET /v1/admin/reconcile/{id}
// and its corrections route. Corrections are streamed, so a run of any size
// prints in constant memory.
func writeReconcileJSON(ctx context.Context, w io.Writer, r *reconcile.Reconciler, rep reconcile.Report) error {
	head, err := httpapi.MarshalReconcileReport(rep)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "{\"run\": %s,\n\"corrections\": [", head)
	sep := "\n"
	err = eachCorrection(ctx, r, rep.ID, func(c reconcile.Correction) error {
		b, err := httpapi.MarshalCorrection(c)
		if err != nil {
			return err
		}
		bw.WriteString(sep)
		bw.Write(b)
		sep = ",\n"
		return nil
	})
	if err != nil {
		return fmt.Errorf("reconcile: list the corrections of run %d: %w", rep.ID, err)
	}
	bw.WriteString("\n]}\n")
	return bw.Flush()
}

// writeCorrectionsTable prints the first correctionsShown corrections of
// run as a table, and how many more there are.
func writeCorrectionsTable(ctx context.Context, w io.Writer, r *reconcile.Reconciler, run int64) error {
	var rows [][]string
	more := 0
	err := eachCorrection(ctx, r, run, func(c reconcile.Correction) error {
		if len(rows) == correctionsShown {
			more++
			return nil
		}
		at := "not corrected"
		if !c.CorrectedAt.IsZero() {
			at = c.CorrectedAt.UTC().Format("2006-01-02 15:04:05.000")
		}
		rows = append(rows, []string{strconv.FormatInt(c.TagID, 10),
			strconv.FormatInt(c.Stored.Count, 10), strconv.FormatInt(c.True.Count, 10), signed(c.Drift.Count),
			strconv.FormatInt(c.Stored.Public, 10), strconv.FormatInt(c.True.Public, 10), signed(c.Drift.Public), at})
		return nil
	})
	if err != nil {
		return fmt.Errorf("reconcile: list the corrections of run %d: %w", run, err)
	}
	if len(rows) == 0 {
		return nil
	}
	table := tablewriter.NewWriter(w)
	table.Header("tag", "stored", "true", "drift", "stored public", "true public", "public drift", "corrected at, UTC")
	if err := table.Bulk(rows); err != nil {
		return err
	}
	if err := table.Render(); err != nil {
		return err
	}
	if more > 0 {
		_, err = fmt.Fprintf(w, "... and %d more corrections; --json lists every one\n", more)
	}
	return err
}

// signed writes a drift with its sign, and 0 plainly.
func signed(v int64) string {
	if v > 0 {
		return "+" + strconv.FormatInt(v, 10)
	}
	return strconv.FormatInt(v, 10)
}
