package httpapi

import (
	"errors"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/drafts"
)

// Quotas, the label of tagcount_quota_rejections_total.
const (
	quotaDrafts  = "drafts"
	quotaNewTags = "new_tags"
)

func newQuotaRejections(reg prometheus.Registerer) *prometheus.CounterVec {
	v := promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
		Name: "tagcount_quota_rejections_total",
		Help: "Requests refused by a quota (422 or 429 quota_exceeded), by quota (drafts, new_tags).",
	}, []string{"quota"})
	v.WithLabelValues(quotaDrafts)
	v.WithLabelValues(quotaNewTags)
	return v
}

// quotaOf names the quota err is a refusal of, or "".
func quotaOf(err error) string {
	switch {
	case errors.Is(err, drafts.ErrDraftQuota):
		return quotaDrafts
	case errors.Is(err, tags.ErrNewTagQuota):
		return quotaNewTags
	}
	return ""
}

// chargeNewTags charges the tags c names against the author's new-tag
// quota, before c is saved (docs/operations.md, "Quotas").
func (s *server) chargeNewTags(r *http.Request, c drafts.Content) error {
	if s.TagQuota == nil {
		return nil
	}
	return s.TagQuota.Charge(r.Context(), authorID(r), openTagRefs(c), nil)
}

// openTagRefs lists the tags of c's open vocabularies, the ones an author
// creates by naming them: the fixed ratings, warnings and categories are
// a handful of names that exist after the first posts.
func openTagRefs(c drafts.Content) []tags.Ref {
	var refs []tags.Ref
	for _, t := range c.Tags.List() {
		switch t.Type {
		case tags.TypeRating, tags.TypeWarning, tags.TypeCategory:
			continue
		}
		refs = append(refs, t)
	}
	return refs
}
