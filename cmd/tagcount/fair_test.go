package main

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations/testdb"
)

func TestABulkAuthorsQueuedPostsDoNotKeepAnotherAuthorsPostFromBeingPosted(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	redisAddr, queue := testdb.RequireRedis(t), testdb.Queue(t)
	role := func(o stackOptions) *stack {
		o.MySQLDSN, o.RedisAddr, o.Queue, o.Path = db.DSN, redisAddr, queue, "new"
		o.AuthSecret, o.DataDir = "test-secret-test-secret-test-secret", t.TempDir()
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		st, err := startStack(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	// The posts are all queued before any worker runs: the importer's 500
	// first, then another author's one.
	api := role(stackOptions{API: true})
	const bulkAuthor, otherAuthor, imports = 1, 2, 500
	importer := api.client(t, bulkAuthor, httpapi.RoleAuthor)
	for range imports {
		_, d, _ := importer.do("POST", "/v1/drafts", draftBody("Imported", "Fluff"))
		if status, res, _ := importer.do("POST", "/v1/drafts/"+id(d, "id")+"/post", nil); status != 202 {
			t.Fatalf("import post: %d %v", status, res)
		}
	}
	_, d, _ := api.client(t, otherAuthor, httpapi.RoleAuthor).do("POST", "/v1/drafts", draftBody("Mine", "Fluff"))
	other := api.client(t, otherAuthor, httpapi.RoleAuthor)
	if status, res, _ := other.do("POST", "/v1/drafts/"+id(d, "id")+"/post", nil); status != 202 {
		t.Fatalf("the other author's post: %d %v", status, res)
	}

	role(stackOptions{Worker: true, EmbeddedKafka: true, JobConcurrency: 1})
	store := &drafts.Store{DB: db.DB}
	queuedImports := func() int {
		n, err := store.CountQueuedBy(context.Background(), bulkAuthor, imports)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	var stillQueued int
	testdb.WaitFor(t, 60*time.Second, "the other author's post to be posted", func() bool {
		_, res, _ := other.do("GET", "/v1/drafts/"+id(d, "id"), nil)
		stillQueued = queuedImports()
		return res["state"] == drafts.StatePosted
	})
	if stillQueued < imports/2 {
		t.Errorf("%d of the %d imported posts were still queued when the other author's post was posted; want most of them",
			stillQueued, imports)
	}
	testdb.WaitFor(t, 120*time.Second, "every imported post to be posted", func() bool { return queuedImports() == 0 })
}
