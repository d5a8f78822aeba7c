package counter_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tagcount/tagcount/migrations/testdb"
)

// logBuffer is a log destination the consumer's goroutines may share.
type logBuffer struct{ testdb.Buffer }

// lines returns the lines logged so far that contain every one of parts.
func (b *logBuffer) lines(parts ...string) []string {
	var out []string
	for _, line := range strings.Split(b.String(), "\n") {
		all := line != ""
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			out = append(out, line)
		}
	}
	return out
}

func TestTheCounterLogsTheRequestIDsOfTheAnnouncementsEachTransactionCounted(t *testing.T) {
	t.Parallel()
	a := newArchive(t, archiveOpts{partitions: 2})
	tags := a.createTags(3, "freeform")
	logs := &logBuffer{}
	cfg := a.consumerConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil)) // info, as in production
	a.startConsumer(cfg)
	// A work announced without request ids (as the sweeper announces) is
	// counted without a line; once it is, the consumer is running.
	warmup, err := a.post(context.Background(), [][]int64{{tags[2]}})
	if err != nil {
		t.Fatal(err)
	}
	a.pub.Announce(context.Background(), warmup)
	a.waitExact(30 * time.Second)

	// Two works in one posting transaction, each stamped with its request.
	events, err := a.post(context.Background(), [][]int64{{tags[0], tags[1]}, {tags[2]}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range events {
		events[i].RequestID = "req-first"
		if events[i].TagID == tags[2] {
			events[i].RequestID = "req-second"
		}
	}
	a.pub.Announce(context.Background(), events)
	a.waitExact(30 * time.Second)
	testdb.WaitFor(t, 15*time.Second, "counted lines naming both requests", func() bool {
		return len(logs.lines("msg=counted", "req-first")) > 0 && len(logs.lines("msg=counted", "req-second")) > 0
	})
	for _, line := range logs.lines("msg=counted") {
		if strings.Contains(line, "events=0") || !strings.Contains(line, "request_ids=") || !strings.Contains(line, "req-") {
			t.Errorf("counted line %q; want the rows it counted and the requests they came from", line)
		}
	}
}
