package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/loop"
	"github.com/tagcount/tagcount/poster"
)

// runWrangle runs `tagcount wrangle rekey`: it gives every tag the key of
// the current identity rule and makes tags whose names now collide
// synonyms of the oldest (docs/operations.md, "Re-keying tags"). The
// wrangling jobs it starts run on the workers; --wait follows them.
func runWrangle(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if err := oneStep(args, "wrangle", "rekey", "Give every tag the key of the current identity rule; tags whose names now\ncollide become synonyms of the oldest.", stderr); err != nil {
		return err
	}
	dsn, wait := migrations.DefaultDSN, false
	if _, err := parse("wrangle rekey", args[1:], stderr, nil, func(fs *flag.FlagSet) {
		fs.StringVar(&dsn, "mysql-dsn", dsn, "MySQL/MariaDB DSN (go-sql-driver format)")
		fs.BoolVar(&wait, "wait", false, "wait until the workers have finished the wrangling jobs it starts")
	}); err != nil {
		return err
	}
	db, err := migrations.Open(ctx, dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	p, err := poster.New(poster.Config{DB: db, Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return err
	}
	rep, err := p.Rekey(ctx)
	fmt.Fprintf(stdout, "%d tags read, %d given a new key, %d made synonyms of an older spelling\n", rep.Tags, rep.Rekeyed, len(rep.Jobs))
	for _, j := range rep.Jobs {
		fmt.Fprintf(stdout, "  tag %d → synonym of tag %d: wrangling job %d (GET /v1/admin/wrangling/%d)\n", j.TagID, j.SynonymOf, j.ID, j.ID)
	}
	for _, id := range slices.Sorted(maps.Keys(rep.Skipped)) {
		fmt.Fprintf(stdout, "  tag %d left as it is: %s\n", id, rep.Skipped[id])
	}
	if err != nil || !wait {
		return err
	}
	return waitJobs(ctx, p, rep.Jobs, stdout)
}

// waitJobs polls jobs until none is running.
func waitJobs(ctx context.Context, p *poster.Poster, jobs []poster.Job, stdout io.Writer) error {
	for _, j := range jobs {
		for j.State == poster.JobRunning {
			if err := loop.Sleep(ctx, time.Second); err != nil {
				return err
			}
			var err error
			if j, err = p.WranglingJob(ctx, j.ID); err != nil {
				return err
			}
		}
		fmt.Fprintf(stdout, "  job %d %s: %d works examined, %d filter changes\n", j.ID, j.State, j.WorksExamined, j.FilterChanges)
	}
	return nil
}
