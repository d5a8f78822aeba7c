package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"

	"github.com/tagcount/tagcount/cmd/tagcount/archive"
	"github.com/tagcount/tagcount/migrations"
)

// runArchive runs `tagcount archive build`: it creates (if missing) and
// migrates the database, fills it with an archive-shaped set of works and
// drifted counts (package archive), and reports rows, bytes per table and
// the time taken. Run again, it resumes an interrupted build of the same
// flags, or reports a finished one.
func runArchive(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if err := oneStep(args, "archive", "build", "Fill a database with an archive-shaped set of works and drifted counts.", stderr); err != nil {
		return err
	}
	dsn := migrations.DefaultDSN
	var cfg archive.Config
	if _, err := parse("archive build", args[1:], stderr, nil, func(fs *flag.FlagSet) {
		fs.StringVar(&dsn, "mysql-dsn", dsn, "MySQL/MariaDB DSN (go-sql-driver format) of the database to fill; created if missing")
		drift := archive.DefaultDrift()
		fs.IntVar(&cfg.Works, "works", archive.DefaultWorks, "posted works to build")
		fs.Uint64Var(&cfg.Seed, "seed", archive.DefaultSeed, "seed: one seed, one archive")
		fs.IntVar(&cfg.Authors, "authors", 0, "authors of the works (0: one for every 8 works)")
		fs.IntVar(&cfg.ChunkWorks, "chunk-works", archive.DefaultChunkWorks, "works per load transaction (the unit a build resumes by)")
		fs.Float64Var(&cfg.Drift.SmallShare, "drift-small-share", drift.SmallShare, "share of small tags whose stored numbers are off by a few (negative: none)")
		fs.Float64Var(&cfg.Drift.MediumShare, "drift-medium-share", drift.MediumShare, "share of medium tags off by up to 1% (negative: none)")
		fs.IntVar(&cfg.Drift.LargeTags, "drift-large-tags", drift.LargeTags, "large tags off by 0.1% (negative: none)")
	}); err != nil {
		return err
	}
	db, err := openCreating(ctx, dsn, true)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := migrations.Up(ctx, db); err != nil {
		return err
	}
	cfg.DB, cfg.Progress = db, stderr
	rep, err := archive.Build(ctx, cfg)
	if err != nil {
		return err
	}
	printArchiveReport(stdout, rep)
	return nil
}

func printArchiveReport(w io.Writer, rep archive.Report) {
	switch {
	case rep.AlreadyBuilt:
		fmt.Fprintln(w, "the database holds this build already: nothing written")
	case rep.ResumedAt > 0:
		fmt.Fprintf(w, "resumed an interrupted build at %d works\n", rep.ResumedAt)
	}
	if !rep.AlreadyBuilt {
		fmt.Fprintf(w, "works %d, drafts %d, tags %d (%d used, %d synonyms), taggings %d (%.2f a work), filings %d, tag_counts rows %d\n",
			rep.Works, rep.Drafts, rep.Tags, rep.TagsUsed, rep.Synonyms, rep.Taggings, float64(rep.Taggings)/float64(max(rep.Works, 1)),
			rep.Filings, rep.TagCountRows)
		kinds := []string{"small", "medium", "large"}
		fmt.Fprintf(w, "drift injected (archive_drift): %d small, %d medium, %d large tags; %d tag_counts rows missing\n",
			rep.Drifted[kinds[0]], rep.Drifted[kinds[1]], rep.Drifted[kinds[2]], rep.MissingRows)
		fmt.Fprintf(w, "took %s\n", rep.Took.Round(1e9))
	}
	fmt.Fprintf(w, "%-14s %12s %12s %12s\n", "table", "rows (est.)", "data MiB", "index MiB")
	var total int64
	for _, t := range slices.Clone(rep.Tables) {
		fmt.Fprintf(w, "%-14s %12d %12.1f %12.1f\n", t.Name, t.Rows, float64(t.DataBytes)/(1<<20), float64(t.IndexBytes)/(1<<20))
		total += t.DataBytes + t.IndexBytes
	}
	fmt.Fprintf(w, "%-14s %12s %25.1f\n", "total", "", float64(total)/(1<<20))
}
