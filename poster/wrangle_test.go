package poster_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/testdb"
	"github.com/tagcount/tagcount/poster"
	"github.com/tagcount/tagcount/poster/postertest"
)

// freeform names a free-form tag.
func freeform(name string) tags.Ref { return tags.NewRef(tags.TypeFreeform, name) }

// tagIDs returns the ids of tags of type freeform by name.
func tagIDs(t *testing.T, db *migrations.DB, names ...string) []int64 {
	t.Helper()
	ids := make([]int64, len(names))
	for i, n := range names {
		tag, ok, err := tags.ByKey(context.Background(), db, tags.TypeFreeform, tags.NameKey(n))
		if err != nil || !ok {
			t.Fatalf("tag %q: %v (found %v)", n, err, ok)
		}
		ids[i] = tag.ID
	}
	return ids
}

// applyAll applies every outbox row, as the counter would.
func applyAll(t *testing.T, db *migrations.DB) {
	t.Helper()
	rows, err := db.Query("SELECT id FROM tag_events")
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		rows.Scan(&id)
		ids = append(ids, id)
	}
	rows.Close()
	if _, err := counter.ApplyBatch(context.Background(), db, ids); err != nil {
		t.Fatal(err)
	}
}

// applyAllAndAssertExact applies every outbox row, as the counter would,
// then checks every tag's numbers against the recount.
func applyAllAndAssertExact(t *testing.T, db *migrations.DB) {
	t.Helper()
	applyAll(t, db)
	assertExact(t, db)
}

// assertExact checks every tag's numbers against the recount.
func assertExact(t *testing.T, db *migrations.DB) {
	t.Helper()
	postertest.AssertExact(context.Background(), t, db)
}

func TestSynonymSwitchRefusesChainsOtherTypesAndUnknownTags(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testdb.New(t).DB
	postertest.Works(ctx, t, db, []drafts.Content{postertest.Content("w", freeform("A"), freeform("B"), freeform("C"), freeform("D"),
		tags.NewRef(tags.TypeFandom, "F"))}, nil)
	ids := tagIDs(t, db, "A", "B", "C", "D")
	a, b, c, d := ids[0], ids[1], ids[2], ids[3]
	fandom, _, _ := tags.ByKey(ctx, db, tags.TypeFandom, "f")
	p := postertest.New(t, poster.Config{DB: db})
	if _, err := p.MakeSynonym(ctx, a, b); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		do   func() (poster.Job, error)
		want error
	}{
		{"unknown tag", func() (poster.Job, error) { return p.MakeSynonym(ctx, 999999, b) }, poster.ErrTagNotFound},
		{"unknown canonical", func() (poster.Job, error) { return p.MakeSynonym(ctx, c, 999999) }, poster.ErrCanonicalNotFound},
		{"itself", func() (poster.Job, error) { return p.MakeSynonym(ctx, c, c) }, poster.ErrSynonymOfItself},
		{"another type", func() (poster.Job, error) { return p.MakeSynonym(ctx, c, fandom.ID) }, poster.ErrSynonymTypeMismatch},
		{"canonical is a synonym", func() (poster.Job, error) { return p.MakeSynonym(ctx, c, a) }, poster.ErrNotCanonical},
		{"tag has synonyms", func() (poster.Job, error) { return p.MakeSynonym(ctx, b, d) }, poster.ErrHasSynonyms},
		{"undo of a canonical tag", func() (poster.Job, error) { return p.Unsynonym(ctx, b) }, poster.ErrNotSynonym},
		{"undo of an unknown tag", func() (poster.Job, error) { return p.Unsynonym(ctx, 999999) }, poster.ErrTagNotFound},
	} {
		if _, err := tc.do(); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v; want %v", tc.name, err, tc.want)
		}
	}
	var jobs int
	db.QueryRow("SELECT COUNT(*) FROM wrangling_jobs").Scan(&jobs)
	if jobs != 1 {
		t.Errorf("%d jobs recorded; a refused switch must record none", jobs)
	}
	if _, err := p.WranglingJob(ctx, 424242); !errors.Is(err, poster.ErrJobNotFound) {
		t.Errorf("a missing job: %v", err)
	}
}

// wrangleArchive posts works using A, B or both, on both paths, public and
// registered, some hidden, and returns the ids of A and B.
func wrangleArchive(t *testing.T, db *migrations.DB) (a, b int64) {
	t.Helper()
	ctx := context.Background()
	p := postertest.New(t, poster.Config{DB: db, Paths: poster.FixedPath(true)})
	for i := range 40 {
		refs := [][]tags.Ref{{freeform("A")}, {freeform("B")}, {freeform("A"), freeform("B")}, {freeform("Other")}}[i%4]
		c := postertest.Content(fmt.Sprintf("w%d", i), append(refs, freeform("Common"))...)
		if i%3 == 0 {
			c.Visibility = drafts.VisibilityRegistered
		}
		path := []string{poster.PathNew, poster.PathLegacy}[i%2]
		works, _ := postertest.Works(ctx, t, db, []drafts.Content{c}, &postertest.Opts{Path: path})
		if i%5 == 0 {
			if _, err := p.SetHidden(ctx, works[0], true); err != nil {
				t.Fatal(err)
			}
		}
	}
	ids := tagIDs(t, db, "A", "B")
	return ids[0], ids[1]
}

func TestWranglingRefilesEveryWorkAndUndoingItRestoresTheNumbers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testdb.New(t).DB
	a, b := wrangleArchive(t, db)
	applyAllAndAssertExact(t, db)
	before := numbers(t, db, a, b)

	p := postertest.New(t, poster.Config{DB: db, Announcer: &postertest.Sink{}})
	job, err := p.MakeSynonym(ctx, a, b)
	if err != nil || job.State != poster.JobRunning || job.TagID != a || job.SynonymOf != b || job.CanonicalID != b {
		t.Fatalf("MakeSynonym: %+v, %v", job, err)
	}
	// A work posted with the synonym after the switch is filed under the
	// canonical tag at once, on either path.
	for _, path := range []string{poster.PathNew, poster.PathLegacy} {
		postertest.Works(ctx, t, db, []drafts.Content{postertest.Content("after "+path, freeform("a"))}, &postertest.Opts{Path: path})
	}
	if err := p.RunWranglingJobs(ctx); err != nil {
		t.Fatal(err)
	}
	job, _ = p.WranglingJob(ctx, job.ID)
	if job.State != poster.JobDone || job.WorksExamined != 20+2 || job.FilterChanges == 0 || job.FinishedAt.IsZero() {
		t.Errorf("job after running: %+v; want done, the 22 works of A examined", job)
	}
	assertExact(t, db)
	applyAllAndAssertExact(t, db)
	if n := numbers(t, db, a, b); n[a].Filter != 0 || n[b].Filter <= before[b].Filter || n[a].Count != before[a].Count+2 {
		t.Errorf("after the switch: %+v (before %+v); want A filtering nothing, B filtering more, A's count kept", n, before)
	}

	undo, err := p.Unsynonym(ctx, a)
	if err != nil || undo.SynonymOf != 0 || undo.CanonicalID != b {
		t.Fatalf("Unsynonym: %+v, %v", undo, err)
	}
	if err := p.RunWranglingJobs(ctx); err != nil {
		t.Fatal(err)
	}
	applyAllAndAssertExact(t, db)
	after := numbers(t, db, a, b)
	if after[b] != before[b] || after[a].Filter != before[a].Filter+2 {
		t.Errorf("after the undo: %+v; want B back to %+v and A filtering its own works again", after, before[b])
	}
}

// numbers returns the stored numbers of tags.
func numbers(t *testing.T, db *migrations.DB, tags ...int64) map[int64]counter.Sum {
	t.Helper()
	out := map[int64]counter.Sum{}
	for _, tag := range tags {
		s, err := counter.SumsByID(context.Background(), db, `SELECT tag_id, count, public_count, filter_count, public_filter_count
			FROM tag_counts WHERE tag_id = ?`, tag)
		if err != nil {
			t.Fatal(err)
		}
		out[tag] = s[tag]
	}
	return out
}

func TestAnUndoSupersedesTheRunningJobAndEndsExact(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testdb.New(t).DB
	a, b := wrangleArchive(t, db)
	commits := 0
	var p *poster.Poster
	var undo poster.Job
	p = postertest.New(t, poster.Config{DB: db, WrangleRowsPerTx: 8, WrangleRowsPerSecond: 100000, OnWrangleCommit: func(c poster.WrangleCommit) {
		if commits++; commits == 2 { // the switch's job is part-way
			var err error
			if undo, err = p.Unsynonym(ctx, a); err != nil {
				t.Error(err)
			}
		}
	}})
	job, err := p.MakeSynonym(ctx, a, b)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.RunWranglingJobs(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.RunWranglingJobs(ctx); err != nil { // the undo, created while the first round ran
		t.Fatal(err)
	}
	job, _ = p.WranglingJob(ctx, job.ID)
	undo, _ = p.WranglingJob(ctx, undo.ID)
	if job.State != poster.JobSuperseded || job.WorksExamined == 0 || job.WorksExamined >= 20 || undo.State != poster.JobDone {
		t.Errorf("jobs: %+v and %+v; want the first superseded part-way, the undo done", job, undo)
	}
	applyAllAndAssertExact(t, db)
}

func TestWranglingJobNeverWritesMoreRowsPerTransactionThanItsLimit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testdb.New(t).DB
	a, b := wrangleArchive(t, db)
	var mu sync.Mutex
	var commits []poster.WrangleCommit
	p := postertest.New(t, poster.Config{DB: db, WrangleRowsPerTx: 10, WrangleRowsPerSecond: 100000,
		OnWrangleCommit: func(c poster.WrangleCommit) { mu.Lock(); commits = append(commits, c); mu.Unlock() }})
	job, err := p.MakeSynonym(ctx, a, b)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.RunWranglingJobs(ctx); err != nil {
		t.Fatal(err)
	}
	job, _ = p.WranglingJob(ctx, job.ID)
	sum := 0
	for _, c := range commits {
		sum += c.Rows
		if c.Rows > 10 {
			t.Errorf("a transaction wrote %d rows, over the limit of 10", c.Rows)
		}
	}
	if job.State != poster.JobDone || job.MaxRowsPerTx > 10 || job.MaxRowsPerTx == 0 || int64(sum) != job.RowsWritten || len(commits) < 4 {
		t.Errorf("job %+v after %d transactions writing %d rows; want done in several transactions of at most 10 rows", job, len(commits), sum)
	}
	applyAllAndAssertExact(t, db)
}

func TestAJobOfAKilledRunnerIsResumedAndAJobHeldElsewhereIsLeftAlone(t *testing.T) {
	t.Parallel()
	db := testdb.New(t).DB
	a, b := wrangleArchive(t, db)
	ctx, kill := context.WithCancel(context.Background())
	commits := 0
	first := postertest.New(t, poster.Config{DB: db, WrangleRowsPerTx: 8, WrangleRowsPerSecond: 100000,
		OnWrangleCommit: func(poster.WrangleCommit) {
			if commits++; commits == 2 {
				kill()
			}
		}})
	job, err := first.MakeSynonym(context.Background(), a, b)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.RunWranglingJobs(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("the killed runner: %v", err)
	}
	job, _ = first.WranglingJob(context.Background(), job.ID)
	if job.State != poster.JobRunning || job.WorksExamined == 0 {
		t.Fatalf("job after the kill: %+v; want running, part-way", job)
	}

	// While another session holds the job's lock, a runner leaves it alone.
	conn, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var got int
	conn.QueryRowContext(context.Background(), "SELECT GET_LOCK(CONCAT('tagcount-wrangle:', LEFT(MD5(DATABASE()), 16), ':', ?), 0)", job.ID).Scan(&got)
	second := postertest.New(t, poster.Config{DB: db})
	if err := second.RunWranglingJobs(context.Background()); err != nil || got != 1 {
		t.Fatalf("runner while the lock is held elsewhere: %v (lock %d)", err, got)
	}
	if held, _ := second.WranglingJob(context.Background(), job.ID); held.WorksExamined != job.WorksExamined {
		t.Fatalf("a job locked elsewhere moved: %+v", held)
	}
	conn.ExecContext(context.Background(), "DO RELEASE_LOCK(CONCAT('tagcount-wrangle:', LEFT(MD5(DATABASE()), 16), ':', ?))", job.ID)

	if err := second.RunWranglingJobs(context.Background()); err != nil {
		t.Fatal(err)
	}
	if done, _ := second.WranglingJob(context.Background(), job.ID); done.State != poster.JobDone || done.WorksExamined != 20 {
		t.Errorf("resumed job: %+v; want done, each of A's 20 works examined once", done)
	}
	applyAllAndAssertExact(t, db)
}

func TestRekeyMakesCollidingTagsSynonymsOfTheOldestAndKeepsEveryCount(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testdb.New(t).DB
	// Tags as the old rule (lower-casing) keyed them: each pair below is one
	// name now. Works are posted on placeholder names through the posting
	// transaction, then the tags are renamed to their old-rule selves.
	old := []struct{ name, key string }{
		{"Café", "café"}, {"Cafe\u0301", "cafe\u0301"}, {"Ca\u200Bfé", "ca\u200bfé"},
		{"STRASSE", "strasse"}, {"straße", "straße"}, {"\uFF26\uFF55\uFF4C\uFF4C", "\uFF46\uFF55\uFF4C\uFF4C"},
	}
	var contents []drafts.Content
	for i := range old {
		for j := 0; j <= i%3; j++ {
			contents = append(contents, postertest.Content(fmt.Sprintf("w%d-%d", i, j), freeform(fmt.Sprintf("placeholder %d", i))))
		}
	}
	contents = append(contents, postertest.Content("both", freeform("placeholder 0"), freeform("placeholder 1"), freeform("placeholder 2")))
	postertest.Works(ctx, t, db, contents[:len(contents)/2], &postertest.Opts{Path: poster.PathLegacy})
	postertest.Works(ctx, t, db, contents[len(contents)/2:], nil)
	ids := make([]int64, len(old))
	for i, o := range old {
		ids[i] = tagIDs(t, db, fmt.Sprintf("placeholder %d", i))[0]
		if _, err := db.Exec("UPDATE tags SET name = ?, name_key = ? WHERE id = ?", o.name, o.key, ids[i]); err != nil {
			t.Fatal(err)
		}
	}
	applyAll(t, db)
	counts := numbers(t, db, ids...)

	p := postertest.New(t, poster.Config{DB: db, Announcer: &postertest.Sink{}})
	rep, err := p.Rekey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Tags < len(old) || rep.Rekeyed != 4 || len(rep.Jobs) != 3 || len(rep.Skipped) != 0 {
		t.Errorf("report %+v; want 4 tags rekeyed and 3 synonym jobs", rep)
	}
	if err := p.RunWranglingJobs(ctx); err != nil {
		t.Fatal(err)
	}
	applyAllAndAssertExact(t, db)
	want := []struct {
		key       string
		synonymOf int64
	}{{"café", 0}, {"café#" + fmt.Sprint(ids[1]), ids[0]}, {"café#" + fmt.Sprint(ids[2]), ids[0]},
		{"strasse", 0}, {"strasse#" + fmt.Sprint(ids[4]), ids[3]}, {"full", 0}}
	after := numbers(t, db, ids...)
	for i, w := range want {
		tag, ok, err := tags.ByKey(ctx, db, tags.TypeFreeform, w.key)
		if err != nil || !ok || tag.ID != ids[i] || tag.SynonymOf != w.synonymOf || tag.Name != old[i].name {
			t.Errorf("tag %q: %+v (found %v, %v); want id %d under key %q, a synonym of %d", old[i].name, tag, ok, err, ids[i], w.key, w.synonymOf)
		}
		if after[ids[i]].Count != counts[ids[i]].Count || after[ids[i]].Public != counts[ids[i]].Public {
			t.Errorf("tag %q: count %+v, before %+v; a rekey keeps every count", old[i].name, after[ids[i]], counts[ids[i]])
		}
	}
	// Café's three spellings: 1 + 2 + 3 works, one of them using all three.
	if f := after[ids[0]].Filter; f != 1+2+3+1 {
		t.Errorf("Café filters %d works; want 7", f)
	}
	again, err := p.Rekey(ctx)
	if err != nil || again.Rekeyed != 0 || len(again.Jobs) != 0 {
		t.Errorf("a second rekey: %+v, %v; want nothing to do", again, err)
	}
}
