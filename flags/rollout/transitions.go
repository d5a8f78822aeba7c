package rollout

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

// The runner's changes of a plan. Each is one transaction that checks the
// plan is still where the runner saw it (an operator may have paused or
// aborted it meanwhile), so a change made twice — by a runner that was
// replaced, say — takes effect once.

// entered records that the flag is at the current step's percentage: its
// window begins. It reports false when the plan moved on meanwhile.
func (s Plans) entered(ctx context.Context, p Plan, actor string, now time.Time) (bool, error) {
	step := p.Steps[p.Current]
	changed := false
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE rollout_plans SET window_from = ?, percent = ?, evaluations = 0, backlog_from = NULL,
			guards = NULL WHERE id = ? AND state = 'running' AND current_step = ? AND window_from IS NULL`, now, step.Percent, p.ID, p.Current)
		if err != nil || !affected(res) {
			return err
		}
		changed = true
		if _, err := tx.ExecContext(ctx, "UPDATE rollout_steps SET entered_at = ? WHERE plan_id = ? AND idx = ?", now, p.ID, p.Current); err != nil {
			return err
		}
		return decide(ctx, tx, Decision{PlanID: p.ID, At: now, Actor: actor, Kind: DecisionStep, Step: p.Current, Percent: step.Percent,
			Detail: fmt.Sprintf("step %d of %d: flag at %d %%, held %v", p.Current+1, len(p.Steps), step.Percent, p.Hold)})
	})
	return changed, err
}

// evaluated records a round's guards without a decision.
func (s Plans) evaluated(ctx context.Context, p Plan, v Verdict, backlogFrom int64, now time.Time) error {
	guards, err := json.Marshal(v.Guards)
	if err != nil {
		return err
	}
	_, err = s.DB.ExecContext(ctx, `UPDATE rollout_plans SET evaluations = evaluations + 1, guards = ?, evaluated_at = ?,
		backlog_from = COALESCE(backlog_from, ?) WHERE id = ? AND state = 'running' AND current_step = ? AND window_from IS NOT NULL`,
		string(guards), now, backlogFrom, p.ID, p.Current)
	return err
}

// passed records that the current step's window ended with every guard
// held: the plan goes to the next step (its window not begun) or, after
// the last, is done. It reports false when the plan moved on meanwhile.
func (s Plans) passed(ctx context.Context, p Plan, v Verdict, actor string, now time.Time) (bool, error) {
	guards, err := json.Marshal(v.Guards)
	if err != nil {
		return false, err
	}
	last := p.Current == len(p.Steps)-1
	changed := false
	err = s.tx(ctx, func(tx *sql.Tx) error {
		set := `current_step = current_step + 1, window_from = NULL`
		if last {
			set = `state = 'done', ended_at = ?`
		}
		args := []any{string(guards), now}
		if last {
			args = append(args, now)
		}
		res, err := tx.ExecContext(ctx, `UPDATE rollout_plans SET guards = ?, evaluated_at = ?, `+set+`
			WHERE id = ? AND state = 'running' AND current_step = ? AND window_from IS NOT NULL`, append(args, p.ID, p.Current)...)
		if err != nil || !affected(res) {
			return err
		}
		changed = true
		if _, err := tx.ExecContext(ctx, "UPDATE rollout_steps SET passed_at = ? WHERE plan_id = ? AND idx = ?", now, p.ID, p.Current); err != nil {
			return err
		}
		kind, detail := DecisionAdvance, fmt.Sprintf("step %d (%d %%) held %v with every guard: %s", p.Current+1, p.Percent, p.Hold, summary(v))
		if last {
			kind = DecisionDone
		}
		return decide(ctx, tx, Decision{PlanID: p.ID, At: now, Actor: actor, Kind: kind, Step: p.Current, Percent: p.Percent, Detail: detail})
	})
	return changed, err
}

// rolledBack records that a guard failed and the flag was set to target.
func (s Plans) rolledBack(ctx context.Context, p Plan, v Verdict, failed GuardResult, target int, reason, actor string, now time.Time) error {
	guards, err := json.Marshal(v.Guards)
	if err != nil {
		return err
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE rollout_plans SET state = 'rolled_back', percent = ?, guards = ?, evaluated_at = ?,
			failed_guard = ?, reason = ?, ended_at = ? WHERE id = ? AND state IN ('running', 'paused')`,
			target, string(guards), now, failed.Name, truncate(reason, 2000), now, p.ID)
		if err != nil || !affected(res) {
			return err
		}
		return decide(ctx, tx, Decision{PlanID: p.ID, At: now, Actor: actor, Kind: DecisionRollback, Step: p.Current, Percent: target, Detail: reason})
	})
}

func affected(res sql.Result) bool {
	n, err := res.RowsAffected()
	return err == nil && n > 0
}

func summary(v Verdict) string {
	out := ""
	for i, g := range v.Guards {
		if i > 0 {
			out += "; "
		}
		out += g.String()
	}
	return out
}
