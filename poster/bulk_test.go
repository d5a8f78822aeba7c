package poster_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations/testdb"
	"github.com/tagcount/tagcount/poster"
	"github.com/tagcount/tagcount/poster/postertest"
)

// The bulk path (PostContents) goes through the same domain gate as the
// API's saves (drafts.Store.Admit): an invalid draft and a draft past the
// new-tag quota are refused with the errors the API maps, and nothing of
// the batch is stored.
func TestBulkPathRefusesAnInvalidDraftAndOnePastTheNewTagQuotaAsTheAPIDoes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testdb.New(t).DB
	rdb := redis.NewClient(&redis.Options{Addr: testdb.RequireRedis(t)})
	t.Cleanup(func() { rdb.Close() })
	quota, err := tags.NewQuota(tags.QuotaConfig{Tags: tags.NewResolver(db), Redis: rdb, PerDay: 2, Prefix: testdb.Queue(t) + ":",
		Timeout: time.Minute}) // not failing open on a busy machine
	if err != nil {
		t.Fatal(err)
	}
	p := postertest.New(t, poster.Config{DB: db, NewTags: quota})
	api := &drafts.Store{DB: db, NewTags: quota} // what the API's draft handlers call

	invalid := work("   ")
	_, apiErr := api.CreateDraft(ctx, author, invalid)
	_, bulkErr := p.PostContents(ctx, author, poster.PathNew, []drafts.Content{work("Fine"), invalid})
	var ae, be *drafts.ValidationError
	if !errors.As(apiErr, &ae) || !errors.As(bulkErr, &be) || ae.Code != be.Code || ae.Field != be.Field {
		t.Fatalf("a draft with a blank title: API %v, bulk %v; want the same *drafts.ValidationError", apiErr, bulkErr)
	}

	// Star Trek and "New 1": the two new tags of the day.
	if _, err := api.CreateDraft(ctx, author, work("First", "New 1")); err != nil {
		t.Fatal(err)
	}
	_, apiErr = api.CreateDraft(ctx, author, work("Second", "New 2"))
	_, bulkErr = p.PostContents(ctx, author, poster.PathLegacy, []drafts.Content{work("Fine"), work("Third", "New 3")})
	var aq, bq *tags.QuotaError
	if !errors.As(apiErr, &aq) || !errors.As(bulkErr, &bq) || !errors.Is(bulkErr, tags.ErrNewTagQuota) || aq.Limit != bq.Limit {
		t.Fatalf("a new tag past the day's two: API %v, bulk %v; want a *tags.QuotaError from both", apiErr, bulkErr)
	}
	var works, stored int
	if err := db.QueryRow(`SELECT (SELECT COUNT(*) FROM works), (SELECT COUNT(*) FROM drafts)`).Scan(&works, &stored); err != nil {
		t.Fatal(err)
	}
	if works != 0 || stored != 1 {
		t.Errorf("after the refusals: %d works, %d drafts; want none posted and only the API's one draft", works, stored)
	}
}

// Audit finding 21.1: posting another author's draft on the legacy path
// must not read its content or create its tags before the author is
// checked; the 404 is all the caller learns.
func TestLegacyPostOfAnotherAuthorsDraftIsNotFoundAndCreatesNoTag(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t, envOpts{legacy: true})
	c := work("Secret")
	c.Tags.Fandoms = []string{"SecretFandomXYZ"}
	d, err := e.store.CreateDraft(ctx, 200, c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.p.PostDraft(ctx, 100, d.ID); !errors.Is(err, drafts.ErrNotFound) {
		t.Fatalf("PostDraft of author 200's draft by author 100: err %v, want drafts.ErrNotFound", err)
	}
	if n := e.count(`SELECT COUNT(*) FROM tags WHERE name = 'SecretFandomXYZ'`); n != 0 {
		t.Errorf("the victim's tag exists after a refused post (%d rows); want none", n)
	}
	if n := e.count(`SELECT COUNT(*) FROM tags`); n != 0 {
		t.Errorf("a refused post created %d tags; want none", n)
	}
}
