// Package rollout moves the new-path flag's rollout percentage in steps, and
// back by itself when the new path does worse: a guarded rollout.
//
// A plan (steps such as 1, 5, 25, 50, 100 % and a hold window) lives in the
// database with its steps and every decision, so any process may run it and
// a replaced one continues from the recorded step. One Runner at a time
// holds the plan's lock; each round it sets the flag to the current step (a
// Setter: the Unleash admin API, or the local flag source in development),
// reads the Measures of the step's window, and evaluates the Guards: a
// failed guard sets the flag back at once (to the last step that held, or to
// 0 % when severe) and stops the plan as rolled_back; a window that ends
// with every guard held and sampled advances the plan.
//
// The measures are read from the database (rollout_samples, written by the
// API processes' Recorder; the outbox; the drafts), so they cover every
// replica, not one process's memory.
package rollout

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/tagcount/tagcount/migrations"
)

// A plan's states.
const (
	StateRunning    = "running"
	StatePaused     = "paused"
	StateDone       = "done"
	StateRolledBack = "rolled_back"
	StateAborted    = "aborted"
)

// The kinds of decisions a plan's history records.
const (
	DecisionStart    = "start"
	DecisionStep     = "step"    // the flag was set to the step's percentage; its window began
	DecisionAdvance  = "advance" // the step's window ended with every guard held
	DecisionDone     = "done"
	DecisionRollback = "rollback"
	DecisionPause    = "pause"
	DecisionResume   = "resume"
	DecisionAbort    = "abort"
)

// Errors of Plans' methods.
var (
	ErrNoPlan = errors.New("no rollout plan")
	// ErrActive: a plan is running or paused; one plan at a time.
	ErrActive = errors.New("a rollout plan is already running or paused")
	// ErrNotActive: the plan's state does not allow the change asked for.
	ErrNotActive   = errors.New("the rollout plan is not in a state that allows this")
	ErrInvalidStep = errors.New("steps must be 1 to 20 percentages, each 1-100 and above the one before")
	ErrInvalidHold = errors.New("hold must be a duration from 1ms to 7 days, such as \"10m\"")
)

// Step is one step of a plan.
type Step struct {
	Percent int
	// EnteredAt: when the flag was confirmed at Percent (zero: not yet);
	// PassedAt: when its window ended with every guard held.
	EnteredAt, PassedAt time.Time
}

// Plan is a rollout plan as recorded.
type Plan struct {
	ID      int64
	Flag    string
	State   string
	Steps   []Step
	Hold    time.Duration
	Current int // index into Steps of the step the flag is at, or going to
	// Percent is the flag's rollout percentage as the plan last set it.
	Percent int
	// WindowFrom is when the current step's window began; zero while the
	// flag is being set to the step's percentage.
	WindowFrom  time.Time
	BacklogFrom *int64 // queued drafts when the window began; nil until read
	Evaluations int64  // reads of the guards in the window
	Guards      []GuardResult
	EvaluatedAt time.Time
	FailedGuard string
	Reason      string
	StartedBy   string
	CreatedAt   time.Time
	EndedAt     time.Time
}

// Active says whether the plan is running or paused.
func (p Plan) Active() bool { return p.State == StateRunning || p.State == StatePaused }

// Decision is one entry of a plan's history.
type Decision struct {
	PlanID  int64
	At      time.Time
	Actor   string
	Kind    string
	Step    int
	Percent int
	Detail  string
}

// Plans keeps rollout plans in the database. Now defaults to time.Now.
type Plans struct {
	DB   *migrations.DB
	Flag string // the flag plans move; default flags.NewPostingPath
	Now  func() time.Time
}

func (s Plans) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// ValidateSteps returns ErrInvalidStep (wrapped, naming the problem) unless
// steps are 1 to 20 increasing percentages from 1 to 100.
func ValidateSteps(steps []int) error {
	if len(steps) == 0 || len(steps) > 20 {
		return fmt.Errorf("%w (got %d steps)", ErrInvalidStep, len(steps))
	}
	for i, p := range steps {
		if p < 1 || p > 100 || (i > 0 && p <= steps[i-1]) {
			return fmt.Errorf("%w (step %d is %d)", ErrInvalidStep, i+1, p)
		}
	}
	return nil
}

// Start records a new running plan of steps, each held for hold, started by
// actor. It returns ErrInvalidStep or ErrInvalidHold for bad input and
// ErrActive when another plan is running or paused.
func (s Plans) Start(ctx context.Context, steps []int, hold time.Duration, actor string) (Plan, error) {
	if err := ValidateSteps(steps); err != nil {
		return Plan{}, err
	}
	if hold < time.Millisecond || hold > 7*24*time.Hour {
		return Plan{}, fmt.Errorf("%w (got %v)", ErrInvalidHold, hold)
	}
	now := s.now()
	var id int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO rollout_plans (flag, hold_ms, started_by, created_at) VALUES (?, ?, ?, ?)`,
			s.flag(), hold.Milliseconds(), actor, now)
		if isDuplicate(err) {
			return ErrActive
		}
		if err != nil {
			return err
		}
		if id, err = res.LastInsertId(); err != nil {
			return err
		}
		args := make([]any, 0, 3*len(steps))
		for i, p := range steps {
			args = append(args, id, i, p)
		}
		if _, err := migrations.InsertRows(ctx, tx, "INSERT INTO rollout_steps (plan_id, idx, percent) VALUES ", "(?, ?, ?)",
			len(steps), args...); err != nil {
			return err
		}
		return decide(ctx, tx, Decision{PlanID: id, At: now, Actor: actor, Kind: DecisionStart,
			Detail: fmt.Sprintf("steps %s %%, hold %v", joinInts(steps), hold)})
	})
	if err != nil {
		return Plan{}, err
	}
	return s.byID(ctx, s.DB, id)
}

func (s Plans) flag() string {
	if s.Flag == "" {
		return "tagcount.new-posting-path"
	}
	return s.Flag
}

// Latest returns the most recent plan, or ErrNoPlan.
func (s Plans) Latest(ctx context.Context) (Plan, error) {
	var id int64
	err := s.DB.QueryRowContext(ctx, "SELECT id FROM rollout_plans ORDER BY id DESC LIMIT 1").Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return Plan{}, ErrNoPlan
	}
	if err != nil {
		return Plan{}, err
	}
	return s.byID(ctx, s.DB, id)
}

// Pause stops the running plan where it is: the flag stays, no guard is
// read, nothing advances. It returns ErrNoPlan or ErrNotActive.
func (s Plans) Pause(ctx context.Context, actor string) (Plan, error) {
	return s.change(ctx, actor, DecisionPause, "", `state = 'paused'`, StateRunning)
}

// Resume runs a paused plan again; the current step's window starts over,
// since nothing was guarded while paused. It returns ErrNoPlan or
// ErrNotActive.
func (s Plans) Resume(ctx context.Context, actor string) (Plan, error) {
	return s.change(ctx, actor, DecisionResume, "",
		`state = 'running', window_from = IF(window_from IS NULL, NULL, ?), evaluations = 0, backlog_from = NULL`, StatePaused)
}

// Abort ends a running or paused plan; the flag stays where it is (set it
// by hand to move it). It returns ErrNoPlan or ErrNotActive.
func (s Plans) Abort(ctx context.Context, actor, reason string) (Plan, error) {
	return s.change(ctx, actor, DecisionAbort, reason, `state = 'aborted', ended_at = ?, reason = ?`, StateRunning, StatePaused)
}

// change applies set to the latest plan when its state is one of from, and
// records the decision, in one transaction.
func (s Plans) change(ctx context.Context, actor, kind, reason, set string, from ...string) (Plan, error) {
	now := s.now()
	var id int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		p, err := s.latestForUpdate(ctx, tx)
		if err != nil {
			return err
		}
		id = p.ID
		ok := false
		for _, f := range from {
			ok = ok || p.State == f
		}
		if !ok {
			return fmt.Errorf("%w: plan %d is %s", ErrNotActive, p.ID, p.State)
		}
		var args []any
		switch strings.Count(set, "?") {
		case 1:
			args = append(args, now)
		case 2:
			args = append(args, now, reason)
		}
		if _, err := tx.ExecContext(ctx, "UPDATE rollout_plans SET "+set+" WHERE id = ?", append(args, p.ID)...); err != nil {
			return err
		}
		return decide(ctx, tx, Decision{PlanID: p.ID, At: now, Actor: actor, Kind: kind, Step: p.Current, Percent: p.Percent, Detail: reason})
	})
	if err != nil {
		return Plan{}, err
	}
	return s.byID(ctx, s.DB, id)
}

func (s Plans) latestForUpdate(ctx context.Context, tx *sql.Tx) (Plan, error) {
	var id int64
	err := tx.QueryRowContext(ctx, "SELECT id FROM rollout_plans ORDER BY id DESC LIMIT 1 FOR UPDATE").Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return Plan{}, ErrNoPlan
	}
	if err != nil {
		return Plan{}, err
	}
	return s.byID(ctx, tx, id)
}

// History returns the most recent plans (at most limit), newest first, each
// with its decisions in order.
func (s Plans) History(ctx context.Context, limit int) ([]Plan, map[int64][]Decision, error) {
	ids, err := migrations.Collect(ctx, s.DB, migrations.ScanInt64, "SELECT id FROM rollout_plans ORDER BY id DESC LIMIT ?", limit)
	if err != nil {
		return nil, nil, err
	}
	plans := make([]Plan, 0, len(ids))
	decisions := make(map[int64][]Decision, len(ids))
	for _, id := range ids {
		p, err := s.byID(ctx, s.DB, id)
		if err != nil {
			return nil, nil, err
		}
		plans = append(plans, p)
		if decisions[id], err = s.decisions(ctx, id); err != nil {
			return nil, nil, err
		}
	}
	return plans, decisions, nil
}

func (s Plans) decisions(ctx context.Context, planID int64) ([]Decision, error) {
	return migrations.Collect(ctx, s.DB, func(rows *sql.Rows) (Decision, error) {
		var d Decision
		err := rows.Scan(&d.PlanID, &d.At, &d.Actor, &d.Kind, &d.Step, &d.Percent, &d.Detail)
		return d, err
	}, "SELECT plan_id, at, actor, kind, step, percent, detail FROM rollout_decisions WHERE plan_id = ? ORDER BY id", planID)
}

func (s Plans) byID(ctx context.Context, q migrations.Querier, id int64) (Plan, error) {
	var (
		p                        Plan
		holdMS                   int64
		window, evaluated, ended sql.NullTime
		backlog                  sql.NullInt64
		guards, failed, reason   sql.NullString
	)
	err := q.QueryRowContext(ctx, `SELECT id, flag, state, hold_ms, current_step, percent, window_from, backlog_from, evaluations,
		guards, evaluated_at, failed_guard, reason, started_by, created_at, ended_at FROM rollout_plans WHERE id = ?`, id).Scan(
		&p.ID, &p.Flag, &p.State, &holdMS, &p.Current, &p.Percent, &window, &backlog, &p.Evaluations,
		&guards, &evaluated, &failed, &reason, &p.StartedBy, &p.CreatedAt, &ended)
	if errors.Is(err, sql.ErrNoRows) {
		return Plan{}, ErrNoPlan
	}
	if err != nil {
		return Plan{}, err
	}
	p.Hold = time.Duration(holdMS) * time.Millisecond
	p.WindowFrom, p.EvaluatedAt, p.EndedAt = window.Time, evaluated.Time, ended.Time
	p.FailedGuard, p.Reason = failed.String, reason.String
	if backlog.Valid {
		p.BacklogFrom = &backlog.Int64
	}
	if guards.Valid && guards.String != "" {
		if err := json.Unmarshal([]byte(guards.String), &p.Guards); err != nil {
			return Plan{}, fmt.Errorf("plan %d guards: %w", id, err)
		}
	}
	p.Steps, err = migrations.Collect(ctx, q, func(rows *sql.Rows) (Step, error) {
		var st Step
		var entered, passed sql.NullTime
		err := rows.Scan(&st.Percent, &entered, &passed)
		st.EnteredAt, st.PassedAt = entered.Time, passed.Time
		return st, err
	}, "SELECT percent, entered_at, passed_at FROM rollout_steps WHERE plan_id = ? ORDER BY idx", id)
	return p, err
}

func (s Plans) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.DB.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return migrations.Commit(ctx, tx)
}

func decide(ctx context.Context, tx *sql.Tx, d Decision) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO rollout_decisions (plan_id, at, actor, kind, step, percent, detail) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		d.PlanID, d.At, d.Actor, d.Kind, d.Step, d.Percent, truncate(d.Detail, 4000))
	return err
}

func isDuplicate(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1062
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

func joinInts(v []int) string {
	parts := make([]string, len(v))
	for i, n := range v {
		parts[i] = fmt.Sprint(n)
	}
	return strings.Join(parts, ", ")
}
