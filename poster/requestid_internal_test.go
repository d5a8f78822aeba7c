package poster

import (
	"context"
	"testing"

	"github.com/tagcount/tagcount/counter"
)

func TestEachEventOfABatchCarriesItsOwnDraftsRequestID(t *testing.T) {
	planOf := func(draftID, workID int64) *plan {
		return &plan{req: request{draftID: draftID}, workID: workID}
	}
	// Three drafts posted in one transaction, all using tag 1: the events
	// carry their works, which name the drafts.
	plans := []*plan{planOf(1, 101), planOf(2, 102), planOf(3, 103)}
	ctx := withDraftRequestIDs(WithRequestID(context.Background(), "the job that started the batch"),
		map[int64]string{1: "req-a", 2: "req-b"}) // draft 3's job came without one
	events := []counter.Event{{ID: 14, TagID: 1, Delta: 1, WorkID: 103}, {ID: 10, TagID: 1, Delta: 1, WorkID: 101},
		{ID: 12, TagID: 1, Delta: 1, WorkID: 102}, {ID: 11, TagID: 2, Delta: 1, WorkID: 101}, {ID: 13, TagID: 3, Delta: 1, WorkID: 102}}
	stampRequestIDs(ctx, plans, events)
	want := map[int64]string{10: "req-a", 11: "req-a", 12: "req-b", 13: "req-b", 14: ""}
	for _, e := range events {
		if e.RequestID != want[e.ID] {
			t.Errorf("event %d (tag %d): request id %q, want %q", e.ID, e.TagID, e.RequestID, want[e.ID])
		}
	}
	if got := RequestID(ctx); got != "" {
		t.Errorf("a batch's context carries the single request id %q; want none, so no line is attributed to one job", got)
	}
}

func TestTheEventsOfOneRequestCarryItsID(t *testing.T) {
	events := []counter.Event{{ID: 1, TagID: 5, Delta: -1}, {ID: 2, TagID: 6, Delta: -1}}
	stampRequestIDs(WithRequestID(context.Background(), "hide-1"), nil, events)
	for _, e := range events {
		if e.RequestID != "hide-1" {
			t.Errorf("event %d: request id %q, want hide-1", e.ID, e.RequestID)
		}
	}
}
