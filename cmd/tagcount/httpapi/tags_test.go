package httpapi

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// idList is "1,2,…,n".
func idList(n int) string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = strconv.Itoa(i + 1)
	}
	return strings.Join(ids, ",")
}

// An exact read sums the pending outbox rows of every tag it names, so it
// names at most MaxExactIDs tags (issue 21, finding 13); a tiered read
// still takes 1,000.
func TestAnExactReadOfMoreThanAHundredTagsIs422(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t, nil, Edge{})
	tok := api.token(7, RoleAuthor)

	res := api.do("GET", "/v1/tags?consistency=exact&ids="+idList(MaxExactIDs+1), tok, nil)
	e, _ := res.Body["error"].(map[string]any)
	if res.Status != http.StatusUnprocessableEntity || res.code() != "too_many_ids" || e["field"] != "ids" {
		t.Errorf("an exact read of %d ids: %d %v; want 422 too_many_ids at ids", MaxExactIDs+1, res.Status, res.Body)
	}
	if res := api.do("GET", "/v1/tags?consistency=exact&ids="+idList(MaxExactIDs), tok, nil); res.Status != http.StatusOK {
		t.Errorf("an exact read of %d ids: %d %v; want 200", MaxExactIDs, res.Status, res.Body)
	}
	if res := api.do("GET", "/v1/tags?ids="+idList(1000), tok, nil); res.Status != http.StatusOK {
		t.Errorf("a tiered read of 1,000 ids: %d %v; want 200", res.Status, res.Body)
	}
}
