package poster

import (
	"cmp"
	"context"
	"slices"

	"github.com/tagcount/tagcount/counter"
)

// A request id names one client request (the HTTP layer takes it from
// X-Request-ID or makes one) and follows the change it asked for through
// the processes: the posting job's payload, the job's log lines, the
// outbox rows' announcements (counter.Event.RequestID) and the counter's
// log line of the transaction that counts them. Grepping the logs for one
// id shows a post's whole way (docs/operations.md, "where is my post?").

type requestIDKey struct{}

// WithRequestID returns ctx carrying the request id id; "" carries none.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID returns the request id ctx carries, or "" when it carries none.
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

type draftRequestIDsKey struct{}

// withDraftRequestIDs returns ctx for a posting transaction that serves
// several jobs: ids holds each draft's request id, and ctx carries no
// single one, so no line of the batch is attributed to one of them.
func withDraftRequestIDs(ctx context.Context, ids map[int64]string) context.Context {
	return context.WithValue(WithRequestID(ctx, ""), draftRequestIDsKey{}, ids)
}

// requestIDOf returns the request id of draftID's change in ctx: its own in
// a batch, or the one request's.
func requestIDOf(ctx context.Context, draftID int64) string {
	if ids, ok := ctx.Value(draftRequestIDsKey{}).(map[int64]string); ok {
		return ids[draftID]
	}
	return RequestID(ctx)
}

// stampRequestIDs sets on each of events, written by one multi-row insert of
// the deltas of plans in order, the request id of its draft. The events
// carry no draft, so each is matched by tag and delta to the first delta
// of the plans not yet matched: the rows of one insert get ascending ids in
// the order of its values, so in id order the matches are exact.
func stampRequestIDs(ctx context.Context, plans []*plan, events []counter.Event) {
	if len(events) == 0 {
		return
	}
	if _, batch := ctx.Value(draftRequestIDsKey{}).(map[int64]string); !batch {
		if id := RequestID(ctx); id != "" {
			for i := range events {
				events[i].RequestID = id
			}
		}
		return
	}
	type key struct {
		tag   int64
		delta int32
	}
	owners := make(map[key][]string, len(events))
	for _, pl := range plans {
		id := requestIDOf(ctx, pl.req.draftID)
		for _, d := range pl.deltas {
			k := key{d.TagID, d.Delta}
			owners[k] = append(owners[k], id)
		}
	}
	order := make([]int, len(events))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(events[a].ID, events[b].ID) })
	for _, i := range order {
		k := key{events[i].TagID, events[i].Delta}
		if ids := owners[k]; len(ids) > 0 {
			events[i].RequestID, owners[k] = ids[0], ids[1:]
		}
	}
}
