package poster_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/migrations/testdb"
	"github.com/tagcount/tagcount/poster"
	"github.com/tagcount/tagcount/poster/postertest"
)

// requestIDs returns how many of the sink's events carry each request id.
func requestIDs(s *postertest.Sink) map[string]int {
	out := map[string]int{}
	for _, e := range s.Events() {
		out[e.RequestID]++
	}
	return out
}

func TestAPostsRequestIDRidesInItsJobOntoItsAnnouncedEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOpts{})
	traced := e.draft(work("Traced", "Fluff"))
	ctx := poster.WithRequestID(context.Background(), "req-traced")
	if _, err := e.p.PostDraft(ctx, author, traced.ID); err != nil {
		t.Fatal(err)
	}
	info, err := e.inspector.GetTaskInfo(e.queue, fmt.Sprintf("draft-sync:%d:1", traced.ID))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(info.Payload), `"request_id":"req-traced"`) {
		t.Fatalf("the job of a post with a request id has the payload %s; want the id in it", info.Payload)
	}
	// A job enqueued before jobs carried request ids still posts.
	old := e.draft(work("Old job", "Angst"))
	if _, err := e.store.QueuePost(context.Background(), author, old.ID); err != nil {
		t.Fatal(err)
	}
	client := asynq.NewClient(asynq.RedisClientOpt{Addr: e.redis})
	defer client.Close()
	if _, err := client.Enqueue(poster.NewSyncDraftTask(old.ID, 1, e.queue, 5)); err != nil {
		t.Fatal(err)
	}

	e.startWorker()
	e.waitState(traced.ID, drafts.StatePosted)
	e.waitState(old.ID, drafts.StatePosted)
	// Four tags each: rating, warning, fandom, one freeform. The events are
	// announced after the commit that marks the drafts posted.
	var got map[string]int
	testdb.WaitFor(t, 15*time.Second, "both posts' events to be announced", func() bool {
		got = requestIDs(e.sink)
		return got["req-traced"]+got[""] == 8
	})
	if got["req-traced"] != 4 || got[""] != 4 {
		t.Errorf("announced events by request id: %v; want 4 of req-traced and 4 without", got)
	}
}

func TestAPostOwedWhileRedisIsDownKeepsItsRequestID(t *testing.T) {
	t.Parallel()
	e, r, d := newEnvRedisDown(t, "Offline")
	if _, err := e.p.PostDraft(poster.WithRequestID(context.Background(), "req-offline"), author, d.ID); err != nil {
		t.Fatal(err)
	}
	r.Start()
	if _, err := e.p.RequeueStale(context.Background()); err != nil {
		t.Fatalf("requeue after Redis returned: %v", err)
	}
	e.startWorker()
	e.waitState(d.ID, drafts.StatePosted)
	var got map[string]int
	testdb.WaitFor(t, 15*time.Second, "the post's events to be announced", func() bool {
		got = requestIDs(e.sink)
		return len(got) > 0
	})
	if got["req-offline"] != 4 || len(got) != 1 {
		t.Errorf("announced events by request id: %v; want all 4 of req-offline", got)
	}
}
