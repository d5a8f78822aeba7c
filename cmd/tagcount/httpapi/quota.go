package httpapi

import (
	"errors"

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
