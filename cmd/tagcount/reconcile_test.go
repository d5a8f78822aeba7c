package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/reconcile"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations/testdb"
	"github.com/tagcount/tagcount/poster"
	"github.com/tagcount/tagcount/poster/postertest"
)

// reconcileOutput is what `tagcount reconcile --json` prints, decoded with
// the field names docs/api.md gives the admin routes.
type reconcileOutput struct {
	Run struct {
		ID            int64  `json:"id"`
		State         string `json:"state"`
		DryRun        bool   `json:"dry_run"`
		TagID         int64  `json:"tag_id"`
		Scope         string `json:"scope"`
		TagsScanned   int64  `json:"tags_scanned"`
		TagsDrifted   int64  `json:"tags_drifted"`
		TagsCorrected int64  `json:"tags_corrected"`
	} `json:"run"`
	Corrections []struct {
		TagID        int64      `json:"tag_id"`
		StoredCount  int64      `json:"stored_count"`
		TrueCount    int64      `json:"true_count"`
		Drift        int64      `json:"drift"`
		StoredPublic int64      `json:"stored_public_count"`
		TruePublic   int64      `json:"true_public_count"`
		PublicDrift  int64      `json:"public_drift"`
		CorrectedAt  *time.Time `json:"corrected_at"`
	} `json:"corrections"`
}

// reconcileCLIArchive is a test database whose tags are used by works
// posted on both paths (some for registered readers only), settled: every
// count right, nothing pending.
type reconcileCLIArchive struct {
	t         *testing.T
	db        *testdb.DB
	freeforms []int64
	fandoms   []int64
}

func newReconcileCLIArchive(t *testing.T, freeforms, fandoms int) *reconcileCLIArchive {
	t.Helper()
	ctx := t.Context()
	a := &reconcileCLIArchive{t: t, db: testdb.New(t)}
	var refs []tags.Ref
	for i := range freeforms {
		refs = append(refs, tags.NewRef(tags.TypeFreeform, fmt.Sprintf("Freeform %d", i)))
	}
	for i := range fandoms {
		refs = append(refs, tags.NewRef(tags.TypeFandom, fmt.Sprintf("Fandom %d", i)))
	}
	ids, err := tags.NewResolver(a.db.DB).Resolve(ctx, refs)
	if err != nil {
		t.Fatal(err)
	}
	a.freeforms, a.fandoms = ids[:freeforms], ids[freeforms:]
	byPath := map[string][]drafts.Content{}
	for i := range 3 * len(refs) {
		c := postertest.Content(fmt.Sprintf("work %d", i), refs[i%len(refs)], refs[(i*5+2)%len(refs)])
		if i%4 == 0 {
			c.Visibility = drafts.VisibilityRegistered
		}
		path := poster.PathNew
		if i%3 == 0 {
			path = poster.PathLegacy
		}
		byPath[path] = append(byPath[path], c)
	}
	for path, contents := range byPath {
		_, events := postertest.Works(ctx, t, a.db.DB, contents, &postertest.Opts{Path: path})
		if _, err := counter.ApplyBatch(ctx, a.db.DB, postertest.EventIDs(events)); err != nil {
			t.Fatal(err)
		}
	}
	if d, err := reconcile.Drifted(ctx, a.db.DB); err != nil || len(d) != 0 {
		t.Fatalf("the archive is not settled: %v, %v", d, err)
	}
	return a
}

// truth returns every tag's conservation terms by id (the independent
// recount).
func (a *reconcileCLIArchive) truth() map[int64]reconcile.TagState {
	a.t.Helper()
	m := map[int64]reconcile.TagState{}
	if err := reconcile.Walk(a.t.Context(), a.db.DB, func(st reconcile.TagState) { m[st.TagID] = st }); err != nil {
		a.t.Fatal(err)
	}
	return m
}

// shift adds delta to a tag's stored numbers: an injected drift of -delta,
// the fault under test, so written by hand.
func (a *reconcileCLIArchive) shift(tag int64, delta counter.Sum) {
	a.t.Helper()
	if _, err := a.db.Exec(`INSERT INTO tag_counts (tag_id, count, public_count) VALUES (?, ?, ?)
		ON DUPLICATE KEY UPDATE count = count + ?, public_count = public_count + ?`,
		tag, delta.Count, delta.Public, delta.Count, delta.Public); err != nil {
		a.t.Fatalf("inject drift: %v", err)
	}
}

// drifted returns the tags that break conservation now, with their drift.
func (a *reconcileCLIArchive) drifted() map[int64]counter.Sum {
	a.t.Helper()
	d, err := reconcile.Drifted(a.t.Context(), a.db.DB)
	if err != nil {
		a.t.Fatal(err)
	}
	out := map[int64]counter.Sum{}
	for _, st := range d {
		out[st.TagID] = st.Drift()
	}
	return out
}

// reconcile runs `tagcount reconcile --json args...` against the archive.
func (a *reconcileCLIArchive) reconcile(args ...string) reconcileOutput {
	a.t.Helper()
	var stdout, stderr bytes.Buffer
	args = append([]string{"--mysql-dsn", a.db.DSN, "--rate", "1000", "--chunk", "4", "--chunk-pause", "-1s", "--json"}, args...)
	if err := runReconcile(a.t.Context(), args, &stdout, &stderr); err != nil {
		a.t.Fatalf("tagcount reconcile %q: %v\n%s", args, err, stderr.String())
	}
	var out reconcileOutput
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		a.t.Fatalf("tagcount reconcile %q printed no JSON document: %v\n%s", args, err, stdout.String())
	}
	return out
}

// checkCorrections fails the test unless out lists exactly the tags of
// shifts, in tag id order, each from its shifted numbers to truth's, and
// corrected (or not) as wanted.
func (a *reconcileCLIArchive) checkCorrections(what string, out reconcileOutput, truth map[int64]reconcile.TagState,
	shifts map[int64]counter.Sum, corrected bool) {
	a.t.Helper()
	want := slices.Sorted(maps.Keys(shifts))
	var got []int64
	for _, c := range out.Corrections {
		got = append(got, c.TagID)
	}
	if !slices.Equal(got, want) {
		a.t.Fatalf("%s: corrections of tags %v, want %v", what, got, want)
	}
	for _, c := range out.Corrections {
		w, s := truth[c.TagID].Works, shifts[c.TagID]
		if c.StoredCount != w.Count+s.Count || c.TrueCount != w.Count || c.Drift != -s.Count ||
			c.StoredPublic != w.Public+s.Public || c.TruePublic != w.Public || c.PublicDrift != -s.Public ||
			(c.CorrectedAt != nil) != corrected {
			a.t.Errorf("%s: tag %d: %+v; want stored %d/%d, true %d/%d, corrected %v", what, c.TagID, c,
				w.Count+s.Count, w.Public+s.Public, w.Count, w.Public, corrected)
		}
	}
}

func TestReconcileCommandListsEveryCorrectionAsJSON(t *testing.T) {
	t.Parallel()
	a := newReconcileCLIArchive(t, 8, 3)
	truth := a.truth()
	shifts := map[int64]counter.Sum{
		a.freeforms[0]: {Count: 3, Public: 3},
		a.freeforms[2]: {Count: -2, Public: 0},
		a.freeforms[5]: {Count: 0, Public: -1},
		a.fandoms[1]:   {Count: 7, Public: 4},
	}
	for tag, s := range shifts {
		a.shift(tag, s)
	}
	before := a.drifted()

	dry := a.reconcile("--dry-run")
	if !dry.Run.DryRun || dry.Run.State != reconcile.StateDone || dry.Run.TagsDrifted != 4 || dry.Run.TagsCorrected != 0 {
		t.Errorf("dry run's report: %+v", dry.Run)
	}
	a.checkCorrections("dry run", dry, truth, shifts, false)
	if after := a.drifted(); !maps.Equal(after, before) {
		t.Errorf("the dry run changed counts: drift %v before, %v after", before, after)
	}

	// The snapshots come from a second pool: the test's stand-in for a
	// replica.
	run := a.reconcile("--read-dsn", a.db.DSN)
	if run.Run.DryRun || run.Run.ID == dry.Run.ID || run.Run.TagsScanned != 11 || run.Run.TagsCorrected != 4 {
		t.Errorf("applying run's report: %+v", run.Run)
	}
	a.checkCorrections("applying run", run, truth, shifts, true)
	if d := a.drifted(); len(d) != 0 {
		t.Errorf("drift left after the run: %v", d)
	}
}

func TestReconcileCommandScopesARunByTypeOrTagIDs(t *testing.T) {
	t.Parallel()
	a := newReconcileCLIArchive(t, 5, 4)
	truth := a.truth()
	shift := counter.Sum{Count: 2, Public: 1}
	for _, tag := range []int64{a.freeforms[1], a.freeforms[3], a.fandoms[0], a.fandoms[2]} {
		a.shift(tag, shift)
	}

	out := a.reconcile("--type", "fandom")
	if out.Run.TagsScanned != 4 || out.Run.Scope != "type fandom" {
		t.Errorf("run over fandoms: %+v", out.Run)
	}
	a.checkCorrections("run over fandoms", out, truth, map[int64]counter.Sum{a.fandoms[0]: shift, a.fandoms[2]: shift}, true)

	out = a.reconcile("--tags", fmt.Sprintf("%d, %d,%d", a.freeforms[4], a.freeforms[1], a.freeforms[4]))
	if out.Run.TagsScanned != 2 || out.Run.Scope != "2 tags" {
		t.Errorf("run over 2 tags: %+v", out.Run)
	}
	a.checkCorrections("run over 2 tags", out, truth, map[int64]counter.Sum{a.freeforms[1]: shift}, true)

	if d := a.drifted(); !maps.Equal(d, map[int64]counter.Sum{a.freeforms[3]: {Count: -2, Public: -1}}) {
		t.Fatalf("after the scoped runs, drift %v; want only tag %d's", d, a.freeforms[3])
	}
	out = a.reconcile("--tag", fmt.Sprint(a.freeforms[3]))
	if out.Run.TagID != a.freeforms[3] || out.Run.TagsScanned != 1 {
		t.Errorf("run over one tag: %+v", out.Run)
	}
	a.checkCorrections("run over one tag", out, truth, map[int64]counter.Sum{a.freeforms[3]: shift}, true)

	var stdout, stderr bytes.Buffer
	err := runReconcile(t.Context(), []string{"--mysql-dsn", a.db.DSN, "--read-dsn", "root@tcp(127.0.0.1:1)/nothing"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "--read-dsn") {
		t.Errorf("an unreachable --read-dsn: %v; want an error naming the flag", err)
	}
}

func TestReconcileCommandTablesTheFirstCorrectionsAndCountsTheRest(t *testing.T) {
	t.Parallel()
	a := newReconcileCLIArchive(t, correctionsShown+10, 0)
	for _, tag := range a.freeforms {
		a.shift(tag, counter.Sum{Count: 1})
	}
	var stdout, stderr bytes.Buffer
	args := []string{"--mysql-dsn", a.db.DSN, "--dry-run", "--chunk-pause", "-1s"}
	if err := runReconcile(t.Context(), args, &stdout, &stderr); err != nil {
		t.Fatalf("tagcount reconcile: %v\n%s", err, stderr.String())
	}
	rows := strings.Count(stdout.String(), "not corrected")
	if rows != correctionsShown || !strings.Contains(stdout.String(), "... and 10 more corrections; --json lists every one") {
		t.Errorf("%d correction rows, want %d and a line counting the other 10:\n%s", rows, correctionsShown, stdout.String())
	}
	if !strings.Contains(stdout.String(), "dry run") {
		t.Errorf("the summary does not say it was a dry run:\n%s", stdout.String())
	}
}

func TestReconcileCommandRefusesFlagsItCannotUse(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tags", "1,x"}, `--tags: "x" is not a tag id`},
		{[]string{"--tags", "3,0"}, `--tags: "0" is not a tag id`},
		{[]string{"--tags", "1,,2"}, `--tags: "" is not a tag id`},
		{[]string{"--type", "genre"}, `--type "genre" is not a tag type; the types are rating, warning`},
		{[]string{"--tag", "-4"}, "--tag must be a tag id"},
		{[]string{"--tag", "4", "--tags", "5"}, "at most one of --tag, --tags and --type"},
		{[]string{"--tags", "4", "--type", "fandom"}, "at most one of --tag, --tags and --type"},
		{[]string{"--rate", "0"}, "--rate must be positive"},
		{[]string{"--chunk-uses", "0"}, "--chunk-uses must be positive"},
	} {
		var stdout, stderr bytes.Buffer
		err := runReconcile(context.Background(), tc.args, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("tagcount reconcile %q: %v; want an error saying %q", tc.args, err, tc.want)
		}
	}
	if f, err := parseReconcile([]string{"--type", " Fandom "}, &bytes.Buffer{}); err != nil || f.typ != tags.TypeFandom {
		t.Errorf("--type ' Fandom ': %+v, %v; want type fandom", f, err)
	}
	if f, err := parseReconcile([]string{"--tags", "9, 2,9"}, &bytes.Buffer{}); err != nil || !slices.Equal(f.tags, []int64{2, 9}) {
		t.Errorf("--tags '9, 2,9': %+v, %v; want tags [2 9]", f, err)
	}
}
