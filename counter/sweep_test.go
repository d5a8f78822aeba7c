package counter

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tagcount/tagcount/migrations/testdb"
)

// recordingAnnouncer remembers what it is asked to announce, and fails
// while failing is set.
type recordingAnnouncer struct {
	mu      sync.Mutex
	events  []Event
	failing bool
}

func (r *recordingAnnouncer) AnnounceSync(_ context.Context, events []Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failing {
		return errors.New("broker down")
	}
	r.events = append(r.events, events...)
	return nil
}

func (r *recordingAnnouncer) take() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.events
	r.events = nil
	return out
}

// age makes the outbox rows of tags older by d, as if written d ago.
func (r *rig) age(d time.Duration, tags ...int64) {
	r.t.Helper()
	for _, tag := range tags {
		if _, err := r.db.Exec("UPDATE tag_events SET created_at = created_at - INTERVAL ? MICROSECOND WHERE tag_id = ?",
			d.Microseconds(), tag); err != nil {
			r.t.Fatal(err)
		}
	}
}

func TestSweeperAnnouncesEachTagWhoseRowsWaitedPastTheBudgetOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	tags := r.createTags(3, "fandom")
	ctx := context.Background()
	r.outbox(tags[0], tags[0], tags[1], tags[1], tags[1])
	r.age(time.Hour, tags[0], tags[1])
	r.outbox(tags[2], tags[0]) // fresh: their announcement is still in flight
	rec := &recordingAnnouncer{}
	s := r.sweeper(rec, SweeperConfig{After: 10 * time.Second})

	n, err := s.SweepOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := rec.take()
	var announced []int64
	for _, e := range got {
		announced = append(announced, e.TagID)
		if time.Since(e.Time) < 50*time.Minute {
			t.Errorf("tag %d announced as written %v, want its oldest row's time (an hour ago)", e.TagID, e.Time)
		}
	}
	slices.Sort(announced)
	if n != 2 || !slices.Equal(announced, tags[:2]) {
		t.Fatalf("announced %v (n=%d), want one event for each of %v", announced, n, tags[:2])
	}
	if d := metric(t, r.reg, "tagcount_outbox_depth"); d != 7 {
		t.Errorf("outbox depth gauge = %v, want 7", d)
	}
	if age := metric(t, r.reg, "tagcount_outbox_oldest_age_seconds"); age < 3500 || age > 3700 {
		t.Errorf("oldest age gauge = %v, want about 3600", age)
	}

	// The next sweep looks only at rows that crossed the age since.
	sweep(t, s, 0, "the second sweep")
}

func TestSweeperAnnouncesRowsThatCrossTheAgeLater(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	tags := r.createTags(1, "fandom")
	ctx := context.Background()
	rec := &recordingAnnouncer{}
	s := r.sweeper(rec, SweeperConfig{After: 100 * time.Millisecond})
	sweep(t, s, 0, "the sweep of an empty outbox")
	r.outbox(tags...)
	testdb.WaitFor(t, 10*time.Second, "a later sweep to announce the row once it is old", func() bool {
		n, err := s.SweepOnce(ctx)
		return err == nil && n == 1
	})
	if got := rec.take(); len(got) != 1 || got[0].TagID != tags[0] {
		t.Errorf("announced %v, want tag %d once", got, tags[0])
	}
}

func TestSweeperLooksAtTheSameRowsAgainAfterTheBrokerFailed(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	tags := r.createTags(2, "fandom")
	ctx := context.Background()
	r.outbox(tags...)
	r.age(time.Minute, tags...)
	rec := &recordingAnnouncer{failing: true}
	s := r.sweeper(rec, SweeperConfig{After: 10 * time.Second})
	if _, err := s.SweepOnce(ctx); err == nil {
		t.Fatal("a sweep whose announcement failed reported success")
	}
	rec.failing = false
	sweep(t, s, 2, "the sweep after the broker came back")
}

func TestFullSweepAnnouncesOldRowsAgain(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	tags := r.createTags(1, "fandom")
	r.outbox(tags...)
	r.age(time.Hour, tags...)
	rec := &recordingAnnouncer{}
	s := r.sweeper(rec, SweeperConfig{After: 10 * time.Second, FullEvery: time.Nanosecond})
	for range 3 {
		sweep(t, s, 1, "a full sweep")
	}
}

// sweeper returns a Sweeper of the rig's database announcing to rec, with
// cfg's other settings.
func (r *rig) sweeper(rec *recordingAnnouncer, cfg SweeperConfig) *Sweeper {
	cfg.DB, cfg.Announcer, cfg.Logger, cfg.Registerer = r.db.DB, rec, testLogger(), r.reg
	s, err := NewSweeper(cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	return s
}

// sweep runs one round of s and fails t unless it announced want tags.
func sweep(t *testing.T, s *Sweeper, want int, what string) {
	t.Helper()
	if n, err := s.SweepOnce(t.Context()); err != nil || n != want {
		t.Fatalf("%s announced %d tags (%v), want %d", what, n, err, want)
	}
}
