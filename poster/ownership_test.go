package poster_test

import (
	"context"
	"errors"
	"testing"

	"github.com/tagcount/tagcount/drafts"
)

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
