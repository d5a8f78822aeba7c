package drafts_test

import (
	"context"
	"errors"
	"testing"

	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/testdb"
)

func TestDraftSavedBeforeMariaDBCrashIsThereAfterRestart(t *testing.T) {
	t.Parallel()
	srv := testdb.StartServer(t)
	ctx := context.Background()
	dsn := srv.DSN("tagcount")
	db := srv.Open("tagcount")
	c := drafts.Content{Title: "Kept", Body: "Every word of it.", Tags: drafts.Tags{
		Rating: "Mature", Warnings: []string{"Major Character Death"}, Fandoms: []string{"Hamlet"}}}
	saved, err := (&drafts.Store{DB: db}).CreateDraft(ctx, 3, c)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	srv.Stop(true) // SIGKILL: no clean shutdown, only what was committed survives
	srv.Start()

	db, err = migrations.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	got, err := (&drafts.Store{DB: db}).FindDraftByID(ctx, 3, saved.ID)
	if err != nil {
		t.Fatalf("draft after restart: %v", err)
	}
	if got.Content.Title != c.Title || got.Content.Body != c.Body || got.Content.Tags.Fandoms[0] != "Hamlet" {
		t.Fatalf("draft after restart = %+v, want %+v", got.Content, c)
	}
}

func TestAnotherAuthorsDraftIsNotFound(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	s := &drafts.Store{DB: db.DB}
	ctx := context.Background()
	d, err := s.CreateDraft(ctx, 1, validContent())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.FindDraftByID(ctx, 2, d.ID); !errors.Is(err, drafts.ErrNotFound) {
		t.Fatalf("read by another author: %v, want 404", err)
	}
	if _, err := s.ReplaceDraft(ctx, 2, d.ID, validContent()); !errors.Is(err, drafts.ErrNotFound) {
		t.Fatalf("replace by another author: %v, want 404", err)
	}
	if err := s.DeleteDraft(ctx, 2, d.ID); !errors.Is(err, drafts.ErrNotFound) {
		t.Fatalf("delete by another author: %v, want 404", err)
	}
	if _, err := s.FindDraftByID(ctx, 1, d.ID); err != nil {
		t.Fatalf("owner lost the draft: %v", err)
	}
}

func TestAnAuthorKeepsAtMostMaxDraftsUnpostedDrafts(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	s := &drafts.Store{DB: db.DB, MaxDrafts: 3}
	ctx := context.Background()
	var ids []int64
	for range 3 {
		d, err := s.CreateDraft(ctx, 7, validContent())
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, d.ID)
	}
	if _, err := s.CreateDraft(ctx, 7, validContent()); !errors.Is(err, drafts.ErrDraftQuota) {
		t.Fatalf("a fourth unposted draft: %v; want ErrDraftQuota", err)
	}
	if _, err := s.CreateDraft(ctx, 8, validContent()); err != nil {
		t.Fatalf("another author's draft: %v; the quota is per author", err)
	}
	if err := s.DeleteDraft(ctx, 7, ids[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateDraft(ctx, 7, validContent()); err != nil {
		t.Fatalf("after deleting one: %v; want room for one more", err)
	}
	if _, err := s.QueuePost(ctx, 7, ids[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateDraft(ctx, 7, validContent()); err != nil {
		t.Fatalf("after posting one: %v; a queued post is no unposted draft kept", err)
	}
	if _, err := s.CreateDraft(ctx, 7, validContent()); !errors.Is(err, drafts.ErrDraftQuota) {
		t.Fatalf("past the quota again: %v; want ErrDraftQuota", err)
	}
}

func TestCountQueuedByCountsOneAuthorsQueuedDraftsUpToItsBound(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	s := &drafts.Store{DB: db.DB}
	ctx := context.Background()
	if _, err := s.CreateQueued(ctx, 5, []drafts.Content{validContent(), validContent(), validContent()}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateQueued(ctx, 6, []drafts.Content{validContent()}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateDraft(ctx, 5, validContent()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		author     int64
		upTo, want int
	}{{5, 10, 3}, {5, 2, 2}, {6, 10, 1}, {9, 10, 0}} {
		if n, err := s.CountQueuedBy(ctx, tc.author, tc.upTo); err != nil || n != tc.want {
			t.Errorf("CountQueuedBy(%d, %d) = %d, %v; want %d", tc.author, tc.upTo, n, err, tc.want)
		}
	}
}
