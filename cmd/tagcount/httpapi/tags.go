package httpapi

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/drafts"
)

// tagJSON is a tag's count as the read API returns it.
type tagJSON struct {
	ID    int64  `json:"id"`
	Name  string `json:"name"`
	Type  string `json:"type"`
	Count int64  `json:"count"`
	Tier  string `json:"tier"`
	// AsOf is when the count was read, RFC 3339 with nanoseconds, UTC.
	AsOf string `json:"as_of"`
}

func newTagJSON(tc counter.TagCount) tagJSON {
	return tagJSON{ID: tc.ID, Name: tc.Name, Type: tc.Type, Count: tc.Count, Tier: tc.Tier.String(),
		AsOf: tc.AsOf.UTC().Format(time.RFC3339Nano)}
}

// handleGetTag serves GET /v1/tags/{id}: the tag's count, or 404.
func (s *server) handleGetTag() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		id, err := pathID(r, "id", "tag")
		if err != nil {
			return err
		}
		tcs, err := s.Counts.Counts(r.Context(), []int64{id})
		if err != nil {
			return err
		}
		if len(tcs) == 0 {
			return errTagNotFound
		}
		encode(w, http.StatusOK, newTagJSON(tcs[0]))
		return nil
	})
}

// handleListTags serves GET /v1/tags?name=...&type=... (one tag, as
// handleGetTag, or 404) and GET /v1/tags?ids=1,2,3 ({"tags": [...]} in the
// order asked, unknown ids left out; more than counter.MaxBulkIDs ids is a
// 422 on field "ids").
func (s *server) handleListTags() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		q := r.URL.Query()
		if q.Has("ids") {
			ids, err := parseIDList(q.Get("ids"))
			if err != nil {
				return err
			}
			tcs, err := s.Counts.Counts(r.Context(), ids)
			if err != nil {
				return err
			}
			out := struct {
				Tags []tagJSON `json:"tags"`
			}{Tags: make([]tagJSON, len(tcs))}
			for i, tc := range tcs {
				out.Tags[i] = newTagJSON(tc)
			}
			encode(w, http.StatusOK, out)
			return nil
		}
		name := strings.TrimSpace(q.Get("name"))
		typ := strings.ToLower(strings.TrimSpace(q.Get("type")))
		switch {
		case name == "":
			return invalid("name", "name_required", "give ids, or a tag name and type")
		case typ == "":
			return invalid("type", "type_required", "a tag name must come with its type")
		}
		tc, ok, err := s.Counts.CountByKey(r.Context(), typ, drafts.NameKey(name))
		if err != nil {
			return err
		}
		if !ok {
			return errTagNotFound
		}
		encode(w, http.StatusOK, newTagJSON(tc))
		return nil
	})
}

func parseIDList(s string) ([]int64, error) {
	parts := strings.Split(s, ",")
	if len(parts) > counter.MaxBulkIDs {
		return nil, invalid("ids", "too_many_ids", fmt.Sprintf("at most %d ids may be asked for at once", counter.MaxBulkIDs))
	}
	ids := make([]int64, 0, len(parts))
	for _, p := range parts {
		id, err := strconv.ParseInt(strings.TrimSpace(p), 10, 64)
		if err != nil || id <= 0 {
			return nil, invalid("ids", "invalid_id", "ids must be a comma-separated list of positive integers")
		}
		ids = append(ids, id)
	}
	return ids, nil
}
