package counter

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/tagcount/tagcount/migrations"
)

// DefaultCatchUpPerSecond is the catch-up rate of a resume that names none.
const DefaultCatchUpPerSecond = 2000

// MaxCatchUpPerSecond is the fastest catch-up a resume may ask for: far
// above what a process applies, and within what counter_control stores.
const MaxCatchUpPerSecond = 1_000_000

// ErrCatchUpRate: a resume asked for a negative catch-up rate or one above
// MaxCatchUpPerSecond.
var ErrCatchUpRate = fmt.Errorf("catch_up_per_second must be 0 (the default, %d) to %d", DefaultCatchUpPerSecond, MaxCatchUpPerSecond)

// Control is the counter's pause switch and catch-up rate, kept in the
// counter_control table so every counter process (and the API, which sets
// them) sees the same.
type Control struct {
	DB *migrations.DB
}

// ControlState is what the counter is told to do, and how far it is.
type ControlState struct {
	Paused bool
	// CatchUpPerSecond, when positive, caps the outbox rows applied per
	// second: a resume's catch-up, until the backlog is worked off.
	CatchUpPerSecond int
	// BacklogAtResume is the outbox depth when the last resume began.
	BacklogAtResume int64
	ChangedAt       time.Time
	// Backlog is the outbox depth now.
	Backlog int64
}

// Pause tells every counter to stop applying: posts go on, their outbox
// rows wait. When it returns nil the pause is in force: no counter process
// applies another outbox row until Resume. Every writer's apply
// transaction reads the switch under a shared lock before it takes any row
// (checkNotPaused), so this write waits for the applies in flight to
// commit, and every apply after it sees the pause and rolls back, however
// long ago its process last read the switches. It returns a database
// error.
func (c Control) Pause(ctx context.Context) error {
	_, err := c.DB.ExecContext(ctx, `UPDATE counter_control SET paused = 1, catch_up_per_second = NULL,
		backlog_at_resume = NULL, changed_at = NOW(6) WHERE id = 1`)
	return err
}

// Resume tells every counter to apply again, catching up at most
// perSecond outbox rows per second (per counter process) until the backlog
// is worked off; perSecond 0 means DefaultCatchUpPerSecond. It returns
// ErrCatchUpRate for a rate below 0 or above MaxCatchUpPerSecond, before
// anything is read, or a database error.
func (c Control) Resume(ctx context.Context, perSecond int) error {
	if perSecond < 0 || perSecond > MaxCatchUpPerSecond {
		return ErrCatchUpRate
	}
	if perSecond == 0 {
		perSecond = DefaultCatchUpPerSecond
	}
	backlog, _, err := OutboxDepth(ctx, c.DB, 0)
	if err != nil {
		return err
	}
	_, err = c.DB.ExecContext(ctx, `UPDATE counter_control SET paused = 0, catch_up_per_second = ?,
		backlog_at_resume = ?, changed_at = NOW(6) WHERE id = 1`, perSecond, backlog)
	return err
}

// errPaused is an apply transaction that found the counter paused and
// applied nothing.
var errPaused = errors.New("counter: paused")

// checkNotPaused reads the pause switch in tx under a shared lock, held
// until tx ends, and returns errPaused when it is on. Shared locks of
// concurrent applies do not wait on each other; only the switch's writers
// (Pause, Resume, the end of a catch-up: one-row statements holding no
// other lock) wait for them, so no cycle of locks can form.
func checkNotPaused(ctx context.Context, tx *sql.Tx) error {
	var paused bool
	if err := tx.QueryRowContext(ctx, "SELECT paused FROM counter_control WHERE id = 1 LOCK IN SHARE MODE").Scan(&paused); err != nil {
		return fmt.Errorf("read the pause switch: %w", err)
	}
	if paused {
		return errPaused
	}
	return nil
}

// caughtUp ends a catch-up: the counter applies at full speed again.
func (c Control) caughtUp(ctx context.Context) error {
	_, err := c.DB.ExecContext(ctx, `UPDATE counter_control SET catch_up_per_second = NULL, changed_at = NOW(6)
		WHERE id = 1 AND paused = 0 AND catch_up_per_second IS NOT NULL`)
	return err
}

// State returns the switches and the outbox depth now.
func (c Control) State(ctx context.Context) (ControlState, error) {
	st, err := c.switches(ctx)
	if err != nil {
		return st, err
	}
	st.Backlog, _, err = OutboxDepth(ctx, c.DB, 0)
	return st, err
}

func (c Control) switches(ctx context.Context) (ControlState, error) {
	var st ControlState
	var perSecond, backlog sql.NullInt64
	err := c.DB.QueryRowContext(ctx, `SELECT paused, catch_up_per_second, backlog_at_resume, changed_at
		FROM counter_control WHERE id = 1`).Scan(&st.Paused, &perSecond, &backlog, &st.ChangedAt)
	st.CatchUpPerSecond, st.BacklogAtResume = int(perSecond.Int64), backlog.Int64
	return st, err
}

// controlEvery is how often a consumer reads the switches. A pause does
// not wait for it: the apply transactions check the switch themselves
// (checkNotPaused); the switchboard only spares a paused writer from
// trying.
const controlEvery = 500 * time.Millisecond

// switchboard is a consumer's view of the switches: read at most every
// controlEvery, with the catch-up limiter every writer of the process
// shares.
type switchboard struct {
	control Control
	flag    func() bool // the pause flag; nil: off
	m       *consumerMetrics

	mu       sync.Mutex
	read     time.Time
	state    ControlState
	limiter  *rate.Limiter
	overdue  map[int]int // partition → tags its writer still has to catch up
	assigned int         // partitions this process's writers hold
}

// assign records how many partitions this process's writers hold now.
func (s *switchboard) assign(n int) {
	s.mu.Lock()
	s.assigned = n
	clear(s.overdue)
	s.mu.Unlock()
}

// report records how many tags partition's writer still has to catch up;
// when no writer of this process has any, the catch-up is over.
func (s *switchboard) report(ctx context.Context, partition, overdue int) {
	s.mu.Lock()
	if s.overdue == nil {
		s.overdue = make(map[int]int)
	}
	s.overdue[partition] = overdue
	done := len(s.overdue) >= s.assigned
	for _, n := range s.overdue {
		done = done && n == 0
	}
	if done {
		clear(s.overdue)
		s.state.CatchUpPerSecond = 0
	}
	s.mu.Unlock()
	if done {
		s.control.caughtUp(ctx)
	}
}

// sawPaused records that an apply transaction found the counter paused:
// the switches read before are out of date.
func (s *switchboard) sawPaused() {
	s.mu.Lock()
	s.state.Paused, s.read = true, time.Now()
	s.mu.Unlock()
}

// current returns the switches, reading them again when due. A failed
// read keeps the last state.
func (s *switchboard) current(ctx context.Context) ControlState {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.read) >= controlEvery {
		if st, err := s.control.switches(ctx); err == nil {
			s.state, s.read = st, time.Now()
		}
	}
	st := s.state
	if s.flag != nil && s.flag() {
		st.Paused = true
	}
	if s.m != nil {
		s.m.paused.Set(0)
		if st.Paused {
			s.m.paused.Set(1)
		}
		s.m.catchUpRate.Set(float64(st.CatchUpPerSecond))
	}
	return st
}

// wait blocks until limit more rows may be applied at the catch-up rate
// (at once when not catching up), with bursts of at most burst rows.
func (s *switchboard) wait(ctx context.Context, perSecond, burst int) error {
	if perSecond <= 0 {
		return nil
	}
	s.mu.Lock()
	if s.limiter == nil || s.limiter.Limit() != rate.Limit(perSecond) || s.limiter.Burst() != burst {
		s.limiter = rate.NewLimiter(rate.Limit(perSecond), burst)
	}
	l := s.limiter
	s.mu.Unlock()
	return l.WaitN(ctx, burst)
}
