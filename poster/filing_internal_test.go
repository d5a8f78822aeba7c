package poster

import (
	"fmt"
	"testing"

	"github.com/tagcount/tagcount/counter"
)

func TestChangeMovesCountsAndFilterNumbersInOneDeltaPerTag(t *testing.T) {
	t.Parallel()
	public := func(tags, filters []int64) *workState {
		return &workState{tags: tags, filters: filters, public: true}
	}
	d := func(tag int64, count, pub, filter, pubFilter int32) counter.Delta {
		return counter.Delta{WorkID: 7, TagID: tag, Delta: count, PublicDelta: pub, FilterDelta: filter, PublicFilterDelta: pubFilter}
	}
	for _, tc := range []struct {
		name     string
		old, now *workState
		want     []counter.Delta
	}{
		{"post: tags in the author's order, then the canonical a synonym files it under",
			nil, public([]int64{3, 1, 5}, []int64{3, 1, 9}),
			[]counter.Delta{d(3, 1, 1, 1, 1), d(1, 1, 1, 1, 1), d(5, 1, 1, 0, 0), d(9, 0, 0, 1, 1)}},
		{"delete", public([]int64{3, 5}, []int64{3, 9}), nil,
			[]counter.Delta{d(3, -1, -1, -1, -1), d(5, -1, -1, 0, 0), d(9, 0, 0, -1, -1)}},
		{"edit: a tag gained, one lost, both synonyms of one canonical",
			public([]int64{1, 5}, []int64{1, 9}), public([]int64{1, 6}, []int64{1, 9}),
			[]counter.Delta{d(6, 1, 1, 0, 0), d(5, -1, -1, 0, 0)}},
		{"made registered", public([]int64{1}, []int64{1}), &workState{tags: []int64{1}, filters: []int64{1}},
			[]counter.Delta{d(1, 0, -1, 0, -1)}},
		{"hidden", public([]int64{1, 5}, []int64{1, 9}), &workState{tags: []int64{1, 5}, filters: []int64{1, 9}, public: true, hidden: true},
			[]counter.Delta{d(1, -1, -1, -1, -1), d(5, -1, -1, 0, 0), d(9, 0, 0, -1, -1)}},
		{"re-filed by wrangling: filter numbers only", public([]int64{1, 5}, []int64{1, 5}), public([]int64{1, 5}, []int64{1, 9}),
			[]counter.Delta{d(5, 0, 0, -1, -1), d(9, 0, 0, 1, 1)}},
		{"a hidden work counts for nothing", &workState{tags: []int64{1}, filters: []int64{1}, hidden: true}, nil, []counter.Delta{}},
	} {
		got := change(7, tc.old, tc.now)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s:\n got %v\nwant %v", tc.name, got, tc.want)
		}
	}
}
