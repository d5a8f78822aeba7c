package httpapi

import (
	"fmt"
	"net/http"
	"time"

	"github.com/tagcount/tagcount/flags/rollout"
)

// rolloutRequest is the body of POST /v1/admin/rollout.
type rolloutRequest struct {
	Steps []int  `json:"steps"`
	Hold  string `json:"hold"`
}

// RolloutJSON is a rollout plan as the admin API (and `tagcount rollout`)
// shows it.
type RolloutJSON struct {
	ID          int64                 `json:"id"`
	Flag        string                `json:"flag"`
	State       string                `json:"state"`
	Steps       []int                 `json:"steps"`
	Hold        string                `json:"hold"`
	Step        int                   `json:"step"` // counted from 1
	Percent     int                   `json:"percent"`
	WindowFrom  *time.Time            `json:"window_from,omitempty"`
	Evaluations int64                 `json:"evaluations"`
	Guards      []rollout.GuardResult `json:"guards"` // the plan's own JSON form of a guard is the API's
	EvaluatedAt *time.Time            `json:"evaluated_at,omitempty"`
	FailedGuard string                `json:"failed_guard,omitempty"`
	Reason      string                `json:"reason,omitempty"`
	StartedBy   string                `json:"started_by"`
	CreatedAt   time.Time             `json:"created_at"`
	EndedAt     *time.Time            `json:"ended_at,omitempty"`
	History     []decisionJSON        `json:"history,omitempty"`
}

type decisionJSON struct {
	At      time.Time `json:"at"`
	Actor   string    `json:"actor"`
	Kind    string    `json:"kind"`
	Step    int       `json:"step"`
	Percent int       `json:"percent"`
	Detail  string    `json:"detail,omitempty"`
}

// NewRolloutJSON converts a plan (and its history, if any) for display.
func NewRolloutJSON(p rollout.Plan, history []rollout.Decision) RolloutJSON {
	opt := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		u := t.UTC()
		return &u
	}
	out := RolloutJSON{ID: p.ID, Flag: p.Flag, State: p.State, Hold: p.Hold.String(), Step: p.Current + 1, Percent: p.Percent,
		WindowFrom: opt(p.WindowFrom), Evaluations: p.Evaluations, Guards: []rollout.GuardResult{}, EvaluatedAt: opt(p.EvaluatedAt),
		FailedGuard: p.FailedGuard, Reason: p.Reason, StartedBy: p.StartedBy, CreatedAt: p.CreatedAt.UTC(), EndedAt: opt(p.EndedAt)}
	for _, st := range p.Steps {
		out.Steps = append(out.Steps, st.Percent)
	}
	out.Guards = append(out.Guards, p.Guards...)
	for _, d := range history {
		out.History = append(out.History, decisionJSON{At: d.At.UTC(), Actor: d.Actor, Kind: d.Kind, Step: d.Step + 1, Percent: d.Percent, Detail: d.Detail})
	}
	return out
}

// actor names who asked, for a plan's history.
func actor(r *http.Request) string { return fmt.Sprintf("admin:%d", authorID(r)) }

// handleStartRollout serves POST /v1/admin/rollout {"steps": [...], "hold":
// "10m"}: a new plan, 201.
func (s *server) handleStartRollout() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		var body rolloutRequest
		if err := decode(w, r, reconcileBodyLimit, &body); err != nil {
			return err
		}
		hold, err := time.ParseDuration(body.Hold)
		if err != nil {
			return invalid("hold", "invalid_hold", rollout.ErrInvalidHold.Error())
		}
		p, err := s.Rollout.Start(r.Context(), body.Steps, hold, actor(r))
		return reply(w, http.StatusCreated, p, err, func(p rollout.Plan) RolloutJSON { return NewRolloutJSON(p, nil) })
	})
}

// handleGetRollout serves GET /v1/admin/rollout: the latest plan.
func (s *server) handleGetRollout() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		p, err := s.Rollout.Latest(r.Context())
		return reply(w, http.StatusOK, p, err, func(p rollout.Plan) RolloutJSON { return NewRolloutJSON(p, nil) })
	})
}

// handleRolloutChange serves POST /v1/admin/rollout/pause, resume and
// abort: the plan after the change.
func (s *server) handleRolloutChange(change string) http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		var p rollout.Plan
		var err error
		switch change {
		case "pause":
			p, err = s.Rollout.Pause(r.Context(), actor(r))
		case "resume":
			p, err = s.Rollout.Resume(r.Context(), actor(r))
		default:
			p, err = s.Rollout.Abort(r.Context(), actor(r), "aborted by an operator")
		}
		return reply(w, http.StatusOK, p, err, func(p rollout.Plan) RolloutJSON { return NewRolloutJSON(p, nil) })
	})
}

// handleRolloutHistory serves GET /v1/admin/rollout/history: the latest
// plans, newest first, each with every decision.
func (s *server) handleRolloutHistory() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		plans, decisions, err := s.Rollout.History(r.Context(), 50)
		if err != nil {
			return err
		}
		out := make([]RolloutJSON, 0, len(plans))
		for _, p := range plans {
			out = append(out, NewRolloutJSON(p, decisions[p.ID]))
		}
		encode(w, http.StatusOK, map[string]any{"plans": out})
		return nil
	})
}
