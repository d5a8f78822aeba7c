package poster

import (
	"context"

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

// stampRequestIDs sets on each of events the request id of the change
// that wrote it: the one request ctx carries, or, in a batch, the request
// id of the draft of the event's work among plans.
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
	draftOf := make(map[int64]int64, len(plans))
	for _, pl := range plans {
		draftOf[pl.workID] = pl.req.draftID
	}
	for i, e := range events {
		if draft, ok := draftOf[e.WorkID]; ok {
			events[i].RequestID = requestIDOf(ctx, draft)
		}
	}
}
