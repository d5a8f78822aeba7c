package counter

import (
	"context"
	"sync"
	"testing"
	"time"
)

// recordingAnnouncer remembers what it is asked to announce.
type recordingAnnouncer struct {
	mu     sync.Mutex
	events []Event
}

func (r *recordingAnnouncer) Announce(_ context.Context, events []Event) {
	r.mu.Lock()
	r.events = append(r.events, events...)
	r.mu.Unlock()
}

func TestSweeperReannouncesOnlyOldOutboxRows(t *testing.T) {
	t.Parallel()
	a := newArchive(t, archiveOpts{noBroker: true})
	tags := a.createTags(2, "fandom")
	// 2,500 rows an hour old (three chunks of 1,000), then 10 fresh ones.
	for range 25 {
		q := "INSERT INTO tag_events (tag_id, delta, work_id, created_at) VALUES "
		for i := range 100 {
			if i > 0 {
				q += ","
			}
			q += "(?, 1, 1, NOW(6) - INTERVAL 1 HOUR)"
		}
		args := make([]any, 100)
		for i := range args {
			args[i] = tags[i%2]
		}
		if _, err := a.db.Exec(q, args...); err != nil {
			t.Fatal(err)
		}
	}
	for range 10 {
		a.db.Exec("INSERT INTO tag_events (tag_id, delta, work_id) VALUES (?, -1, 2)", tags[0])
	}
	rec := &recordingAnnouncer{}
	s := NewSweeper(SweeperConfig{DB: a.db.DB, Announcer: rec, OlderThan: 45 * time.Minute, Rate: 50_000, Logger: testLogger(), Registerer: a.reg})
	n, err := s.SweepOnce(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n != 2500 || len(rec.events) != 2500 {
		t.Fatalf("re-announced %d (%d recorded), want the 2500 old rows", n, len(rec.events))
	}
	for i, e := range rec.events {
		if e.Delta != 1 || (i > 0 && e.ID <= rec.events[i-1].ID) {
			t.Fatalf("event %d = %+v: want old +1 rows in primary key order", i, e)
		}
	}
	if d := a.metric(a.reg, "tagcount_outbox_depth"); d != 2510 {
		t.Errorf("outbox depth gauge = %v, want 2510", d)
	}
	if age := a.metric(a.reg, "tagcount_outbox_oldest_age_seconds"); age < 3500 || age > 3700 {
		t.Errorf("oldest age gauge = %v, want about 3600", age)
	}
}
