package httpapi

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/tags"
)

// tagJSON is a tag's numbers as the read API returns them.
type tagJSON struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
	Type string `json:"type"`
	// Count is the posted works a logged-in reader can see; PublicCount
	// those anyone can see.
	Count       int64 `json:"count"`
	PublicCount int64 `json:"public_count"`
	// Canonical says whether the tag is one readers filter by; a synonym
	// names its canonical tag in SynonymOf (null for a canonical tag). A
	// canonical tag's FilterCount and PublicFilterCount are its posted
	// works and those of its synonyms, each work once, for the same two
	// audiences; a synonym has none.
	Canonical         bool   `json:"canonical"`
	SynonymOf         *int64 `json:"synonym_of"`
	FilterCount       *int64 `json:"filter_count,omitempty"`
	PublicFilterCount *int64 `json:"public_filter_count,omitempty"`
	Tier              string `json:"tier"`
	// AsOf is when the numbers were read, RFC 3339 with nanoseconds, UTC.
	AsOf string `json:"as_of"`
	// Consistency is "tiered" (the size tier's cache) or "exact" (stored
	// plus pending, one snapshot).
	Consistency string `json:"consistency"`
}

func newTagJSON(tc counter.TagCount, consistency string) tagJSON {
	out := tagJSON{ID: tc.ID, Name: tc.Name, Type: tc.Type, Count: tc.Count, PublicCount: tc.PublicCount,
		Canonical: tc.SynonymOf == 0, Tier: tc.Tier.String(), AsOf: tc.AsOf.UTC().Format(time.RFC3339Nano), Consistency: consistency}
	if out.Canonical {
		out.FilterCount, out.PublicFilterCount = &tc.FilterCount, &tc.PublicFilterCount
	} else {
		out.SynonymOf = &tc.SynonymOf
	}
	return out
}

// MaxExactIDs is the most tags one exact read names: each costs a sum over
// its pending outbox rows, which a long pause lets grow, so an exact read
// is held to a tenth of a tiered one (counter.MaxBulkIDs).
const MaxExactIDs = 100

// Consistencies a count read may ask for.
const (
	consistencyTiered = "tiered"
	consistencyExact  = "exact"
)

// consistency reads the query's consistency parameter.
func consistency(r *http.Request) (string, error) {
	switch c := r.URL.Query().Get("consistency"); c {
	case "", consistencyTiered:
		return consistencyTiered, nil
	case consistencyExact:
		return c, nil
	}
	return "", invalid("consistency", "unknown_consistency", "consistency must be tiered or exact")
}

// counts reads ids' numbers with the consistency asked for, keeping the
// tags the caller may see (counter.Reader.SeenBy).
func (s *server) counts(r *http.Request, ids []int64, c string) ([]counter.TagCount, error) {
	read := s.Counts.Counts
	if c == consistencyExact {
		read = s.Counts.ExactCounts
	}
	tcs, err := read(r.Context(), ids)
	if err != nil {
		return nil, err
	}
	return s.Counts.SeenBy(r.Context(), viewer(r), tcs)
}

// viewer is the caller, as the count reader's visibility rule names them.
func viewer(r *http.Request) counter.Viewer {
	p := principalFrom(r.Context())
	return counter.Viewer{AuthorID: p.AuthorID, Admin: p.IsAdmin()}
}

// handleGetTag serves GET /v1/tags/{id}: the tag's count, or 404.
func (s *server) handleGetTag() http.Handler {
	return s.handleID("tag", func(w http.ResponseWriter, r *http.Request, id int64) error {
		c, err := consistency(r)
		if err != nil {
			return err
		}
		tcs, err := s.counts(r, []int64{id}, c)
		if err != nil {
			return err
		}
		if len(tcs) == 0 {
			return errTagNotFound
		}
		encode(w, http.StatusOK, newTagJSON(tcs[0], c))
		return nil
	})
}

// handleListTags serves GET /v1/tags?name=...&type=... (one tag, as
// handleGetTag, or 404) and GET /v1/tags?ids=1,2,3 ({"tags": [...]} in the
// order asked, unknown ids left out; more than counter.MaxBulkIDs ids, or
// MaxExactIDs for an exact read, is a 422 on field "ids").
func (s *server) handleListTags() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		q := r.URL.Query()
		c, err := consistency(r)
		if err != nil {
			return err
		}
		if q.Has("ids") {
			ids, err := parseIDList(q.Get("ids"))
			if err != nil {
				return err
			}
			if c == consistencyExact && len(ids) > MaxExactIDs {
				return invalid("ids", "too_many_ids", fmt.Sprintf("at most %d ids may be read exactly at once", MaxExactIDs))
			}
			tcs, err := s.counts(r, ids, c)
			if err != nil {
				return err
			}
			out := struct {
				Tags []tagJSON `json:"tags"`
			}{Tags: make([]tagJSON, len(tcs))}
			for i, tc := range tcs {
				out.Tags[i] = newTagJSON(tc, c)
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
		byKey := s.Counts.CountByKey
		if c == consistencyExact {
			byKey = s.Counts.ExactCountByKey
		}
		tc, ok, err := byKey(r.Context(), typ, tags.NameKey(name))
		if err != nil {
			return err
		}
		var seen []counter.TagCount
		if ok {
			if seen, err = s.Counts.SeenBy(r.Context(), viewer(r), []counter.TagCount{tc}); err != nil {
				return err
			}
		}
		if len(seen) == 0 {
			return errTagNotFound // no such tag, or none the caller may see
		}
		encode(w, http.StatusOK, newTagJSON(tc, c))
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
