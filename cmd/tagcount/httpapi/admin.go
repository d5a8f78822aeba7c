package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/reconcile"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/poster"
)

// reconcileRequest is the optional body of the reconcile routes: a dry
// run, and a scope (a tag type, or tag ids).
type reconcileRequest struct {
	DryRun bool    `json:"dry_run"`
	Type   string  `json:"type,omitempty"`
	TagIDs []int64 `json:"tag_ids,omitempty"`
}

type reconcileStartedJSON struct {
	ID     int64  `json:"id"`
	State  string `json:"state"`
	DryRun bool   `json:"dry_run"`
}

// reportJSON is a run's report as the admin API shows it.
type reportJSON struct {
	ID                        int64      `json:"id"`
	State                     string     `json:"state"`
	DryRun                    bool       `json:"dry_run"`
	TagID                     *int64     `json:"tag_id,omitempty"`
	StartedAt                 time.Time  `json:"started_at"`
	FinishedAt                *time.Time `json:"finished_at,omitempty"`
	DurationSeconds           float64    `json:"duration_seconds"`
	TagsScanned               int64      `json:"tags_scanned"`
	TagsDrifted               int64      `json:"tags_drifted"`
	TagsCorrected             int64      `json:"tags_corrected"`
	TotalAbsDrift             int64      `json:"total_abs_drift"`
	TotalAbsPublicDrift       int64      `json:"total_abs_public_drift"`
	TotalAbsFilterDrift       int64      `json:"total_abs_filter_drift"`
	TotalAbsPublicFilterDrift int64      `json:"total_abs_public_filter_drift"`
	LargestDrift              int64      `json:"largest_drift"`
	LargestDriftTagID         *int64     `json:"largest_drift_tag_id,omitempty"`
	NegativeCounts            int64      `json:"negative_counts"`
	Scope                     string     `json:"scope,omitempty"`
	Error                     string     `json:"error,omitempty"`
}

func newReportJSON(rep reconcile.Report) reportJSON {
	out := reportJSON{
		ID: rep.ID, State: rep.State, DryRun: rep.DryRun, StartedAt: rep.StartedAt.UTC(),
		DurationSeconds: rep.Duration().Seconds(), TagsScanned: rep.TagsScanned, TagsDrifted: rep.TagsDrifted,
		TagsCorrected: rep.TagsCorrected, TotalAbsDrift: rep.TotalAbsDrift, TotalAbsPublicDrift: rep.TotalAbsPublicDrift,
		TotalAbsFilterDrift: rep.TotalAbsFilterDrift, TotalAbsPublicFilterDrift: rep.TotalAbsPublicFilterDrift,
		LargestDrift: rep.LargestDrift, NegativeCounts: rep.NegativeCounts, Scope: rep.Scope, Error: rep.Error,
	}
	if rep.TagID != 0 {
		out.TagID = &rep.TagID
	}
	if !rep.FinishedAt.IsZero() {
		f := rep.FinishedAt.UTC()
		out.FinishedAt = &f
	}
	if rep.LargestDriftTagID != 0 {
		out.LargestDriftTagID = &rep.LargestDriftTagID
	}
	return out
}

// reconcileBodyLimit bounds the reconcile routes' small JSON bodies.
const reconcileBodyLimit = 4 << 10

// handleStartReconcile serves POST /v1/admin/reconcile {"dry_run": bool}:
// it starts a run in the background and answers 202 {"id", "state",
// "dry_run"}, or 409 reconcile_running when a run is in progress.
func (s *server) handleStartReconcile() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		var body reconcileRequest
		if err := decodeOptional(w, r, reconcileBodyLimit, &body); err != nil {
			return err
		}
		switch {
		case len(body.TagIDs) > counter.MaxBulkIDs:
			return invalid("tag_ids", "too_many_ids", fmt.Sprintf("at most %d tag ids may be given", counter.MaxBulkIDs))
		case body.Type != "" && !slices.Contains(tags.Types, body.Type):
			return invalid("type", "unknown_type", "the type must be one of: "+strings.Join(tags.Types, ", "))
		case body.Type != "" && len(body.TagIDs) > 0:
			return invalid("type", "scope_conflict", "a run is scoped by type or by tag_ids, not both")
		}
		run, err := s.Reconciler.Start(r.Context(), reconcile.Options{DryRun: body.DryRun, Type: body.Type, TagIDs: body.TagIDs})
		if err != nil {
			return err
		}
		w.Header().Set("Location", "/v1/admin/reconcile/"+strconv.FormatInt(run.ID, 10))
		encode(w, http.StatusAccepted, reconcileStartedJSON{ID: run.ID, State: run.State, DryRun: run.DryRun})
		return nil
	})
}

// handleGetReconcile serves GET /v1/admin/reconcile/{id}: the run's report.
func (s *server) handleGetReconcile() http.Handler {
	return s.handleID("reconcile run", func(w http.ResponseWriter, r *http.Request, id int64) error {
		rep, err := s.Reconciler.FindReport(r.Context(), id)
		return reply(w, http.StatusOK, rep, err, newReportJSON)
	})
}

// handleRecount serves POST /v1/admin/tags/{id}/recount (optional body
// {"dry_run": bool}): it reconciles that one tag now and answers 200 with the
// run's report; 409 reconcile_running while any run is in progress, since
// two runs could correct the same tag twice.
func (s *server) handleRecount() http.Handler {
	return s.handleID("tag", func(w http.ResponseWriter, r *http.Request, id int64) error {
		var body struct {
			DryRun bool `json:"dry_run"`
		}
		if err := decodeOptional(w, r, reconcileBodyLimit, &body); err != nil {
			return err
		}
		rep, err := s.Reconciler.Run(r.Context(), reconcile.Options{TagID: id, DryRun: body.DryRun})
		return reply(w, http.StatusOK, rep, err, newReportJSON)
	})
}

// handleGetFlags serves GET /v1/admin/flags: the flag values this instance
// evaluates now.
func (s *server) handleGetFlags() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "no-store")
		body, err := json.Marshal(s.Flags.Snapshot())
		if err != nil {
			return err
		}
		w.Header().Set("Content-Type", "application/json")
		_, err = w.Write(append(body, '\n'))
		return err
	})
}

// handleHideWork serves POST /v1/admin/works/{id}/hide and .../unhide: a
// moderator hides a work (it counts for nobody) or shows it again. 200 with
// what was done, 404 for an unknown work.
func (s *server) handleHideWork(hidden bool) http.Handler {
	return s.handleID("work", func(w http.ResponseWriter, r *http.Request, id int64) error {
		res, err := s.Poster.SetHidden(r.Context(), id, hidden)
		if err != nil {
			return err
		}
		encode(w, http.StatusOK, struct {
			WorkID int64  `json:"work_id"`
			Hidden bool   `json:"hidden"`
			Path   string `json:"path"`
		}{res.WorkID, hidden, res.Path})
		return nil
	})
}

// correctionJSON is one drifted tag a reconcile run found.
type correctionJSON struct {
	TagID              int64      `json:"tag_id"`
	StoredCount        int64      `json:"stored_count"`
	TrueCount          int64      `json:"true_count"`
	Drift              int64      `json:"drift"`
	StoredPublic       int64      `json:"stored_public_count"`
	TruePublic         int64      `json:"true_public_count"`
	PublicDrift        int64      `json:"public_drift"`
	StoredFilter       int64      `json:"stored_filter_count"`
	TrueFilter         int64      `json:"true_filter_count"`
	FilterDrift        int64      `json:"filter_drift"`
	StoredPublicFilter int64      `json:"stored_public_filter_count"`
	TruePublicFilter   int64      `json:"true_public_filter_count"`
	PublicFilterDrift  int64      `json:"public_filter_drift"`
	CorrectedAt        *time.Time `json:"corrected_at"`
}

func newCorrectionJSON(c reconcile.Correction) correctionJSON {
	out := correctionJSON{TagID: c.TagID, StoredCount: c.Stored.Count, TrueCount: c.True.Count, Drift: c.Drift.Count,
		StoredPublic: c.Stored.Public, TruePublic: c.True.Public, PublicDrift: c.Drift.Public,
		StoredFilter: c.Stored.Filter, TrueFilter: c.True.Filter, FilterDrift: c.Drift.Filter,
		StoredPublicFilter: c.Stored.PublicFilter, TruePublicFilter: c.True.PublicFilter, PublicFilterDrift: c.Drift.PublicFilter}
	if !c.CorrectedAt.IsZero() {
		at := c.CorrectedAt.UTC()
		out.CorrectedAt = &at
	}
	return out
}

// MarshalReconcileReport encodes rep as GET /v1/admin/reconcile/{id}
// answers it, so other clients of the format (`tagcount reconcile --json`)
// keep its field names; it returns json.Marshal's error.
func MarshalReconcileReport(rep reconcile.Report) ([]byte, error) {
	return json.Marshal(newReportJSON(rep))
}

// MarshalCorrection encodes c as GET /v1/admin/reconcile/{id}/corrections
// lists it; it returns json.Marshal's error.
func MarshalCorrection(c reconcile.Correction) ([]byte, error) {
	return json.Marshal(newCorrectionJSON(c))
}

// handleListCorrections serves GET /v1/admin/reconcile/{id}/corrections
// ?after=TAG_ID&limit=N (default 100, at most 1,000): a page of the run's
// corrections in tag id order, and the after of the next page.
func (s *server) handleListCorrections() http.Handler {
	return s.handleID("reconcile run", func(w http.ResponseWriter, r *http.Request, id int64) error {
		after, limit, err := page(r)
		if err != nil {
			return err
		}
		list, err := s.Reconciler.Corrections(r.Context(), id, after, limit)
		if err != nil {
			return err
		}
		out := struct {
			Corrections []correctionJSON `json:"corrections"`
			NextAfter   *int64           `json:"next_after"`
		}{Corrections: make([]correctionJSON, len(list))}
		for i, c := range list {
			out.Corrections[i] = newCorrectionJSON(c)
		}
		if len(list) == limit {
			out.NextAfter = &list[len(list)-1].TagID
		}
		encode(w, http.StatusOK, out)
		return nil
	})
}

// page reads the after and limit query parameters of a paged list.
func page(r *http.Request) (after int64, limit int, err error) {
	q := r.URL.Query()
	limit = 100
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > 1000 {
			return 0, 0, invalid("limit", "invalid_limit", "limit must be a whole number from 1 to 1000")
		}
	}
	if v := q.Get("after"); v != "" {
		if after, err = strconv.ParseInt(v, 10, 64); err != nil || after < 0 {
			return 0, 0, invalid("after", "invalid_after", "after must be a tag id")
		}
	}
	return after, limit, nil
}

// counterJSON is the counter's switches and how far a catch-up has come.
type counterJSON struct {
	// State is running, paused or catching_up.
	State            string    `json:"state"`
	CatchUpPerSecond int       `json:"catch_up_per_second,omitempty"`
	Backlog          int64     `json:"backlog"`
	BacklogAtResume  int64     `json:"backlog_at_resume,omitempty"`
	Progress         *float64  `json:"catch_up_progress,omitempty"` // 0..1 of the backlog at resume worked off
	ChangedAt        time.Time `json:"changed_at"`
}

func newCounterJSON(st counter.ControlState, flagPaused bool) counterJSON {
	out := counterJSON{State: "running", Backlog: st.Backlog, ChangedAt: st.ChangedAt.UTC()}
	switch {
	case st.Paused || flagPaused:
		out.State = "paused"
	case st.CatchUpPerSecond > 0:
		out.State, out.CatchUpPerSecond, out.BacklogAtResume = "catching_up", st.CatchUpPerSecond, st.BacklogAtResume
		if st.BacklogAtResume > 0 {
			p := min(1, max(0, 1-float64(st.Backlog)/float64(st.BacklogAtResume)))
			out.Progress = &p
		}
	}
	return out
}

// handleGetCounter serves GET /v1/admin/counter: paused, running or
// catching up, with the outbox backlog and the catch-up's progress.
func (s *server) handleGetCounter() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		st, err := s.Control.State(r.Context())
		if err != nil {
			return err
		}
		encode(w, http.StatusOK, newCounterJSON(st, s.Flags.CounterPaused()))
		return nil
	})
}

// handlePauseCounter serves POST /v1/admin/counter/pause: every counter
// stops applying; posts go on and the outbox grows.
func (s *server) handlePauseCounter() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		if err := s.Control.Pause(r.Context()); err != nil {
			return err
		}
		return s.writeCounter(w, r)
	})
}

// handleResumeCounter serves POST /v1/admin/counter/resume
// {"catch_up_per_second": n}: counters apply again, the backlog at most n
// outbox rows per second per counter process (default
// counter.DefaultCatchUpPerSecond).
func (s *server) handleResumeCounter() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		var body struct {
			CatchUpPerSecond int `json:"catch_up_per_second"`
		}
		if err := decodeOptional(w, r, reconcileBodyLimit, &body); err != nil {
			return err
		}
		if err := s.Control.Resume(r.Context(), body.CatchUpPerSecond); err != nil {
			return err
		}
		return s.writeCounter(w, r)
	})
}

func (s *server) writeCounter(w http.ResponseWriter, r *http.Request) error {
	st, err := s.Control.State(r.Context())
	if err != nil {
		return err
	}
	encode(w, http.StatusOK, newCounterJSON(st, s.Flags.CounterPaused()))
	return nil
}

// jobJSON is a wrangling job and its progress.
type jobJSON struct {
	ID    int64 `json:"id"`
	TagID int64 `json:"tag_id"`
	// CanonicalID is the canonical tag whose filter the works enter
	// (direction make) or leave (undo).
	CanonicalID   int64      `json:"canonical_id"`
	Direction     string     `json:"direction"`
	State         string     `json:"state"`
	WorksExamined int64      `json:"works_examined"`
	FilterChanges int64      `json:"filter_changes"`
	RowsWritten   int64      `json:"rows_written"`
	MaxRowsPerTx  int        `json:"max_rows_per_tx"`
	StartedAt     time.Time  `json:"started_at"`
	FinishedAt    *time.Time `json:"finished_at,omitempty"`
}

func newJobJSON(j poster.Job) jobJSON {
	out := jobJSON{ID: j.ID, TagID: j.TagID, CanonicalID: j.CanonicalID, Direction: "make", State: j.State,
		WorksExamined: j.WorksExamined, FilterChanges: j.FilterChanges, RowsWritten: j.RowsWritten, MaxRowsPerTx: j.MaxRowsPerTx,
		StartedAt: j.CreatedAt.UTC()}
	if j.SynonymOf == 0 {
		out.Direction = "undo"
	}
	if !j.FinishedAt.IsZero() {
		f := j.FinishedAt.UTC()
		out.FinishedAt = &f
	}
	return out
}

// replyJob answers 202 with a job just started and where to follow it, or
// returns err when starting it failed.
func replyJob(w http.ResponseWriter, j poster.Job, err error) error {
	if err == nil {
		w.Header().Set("Location", "/v1/admin/wrangling/"+strconv.FormatInt(j.ID, 10))
	}
	return reply(w, http.StatusAccepted, j, err, newJobJSON)
}

// handleMakeSynonym serves PUT /v1/admin/tags/{id}/synonym-of
// {"canonical_id": N}: the tag becomes a synonym of N (of its type, and
// canonical itself) and a job re-files its works. 202 with the job.
func (s *server) handleMakeSynonym() http.Handler {
	return s.handleID("tag", func(w http.ResponseWriter, r *http.Request, id int64) error {
		var body struct {
			CanonicalID int64 `json:"canonical_id"`
		}
		if err := decode(w, r, reconcileBodyLimit, &body); err != nil {
			return err
		}
		if body.CanonicalID <= 0 {
			return invalid("canonical_id", "canonical_id_required", "canonical_id must be the id of the canonical tag")
		}
		j, err := s.Poster.MakeSynonym(r.Context(), id, body.CanonicalID)
		return replyJob(w, j, err)
	})
}

// handleUnsynonym serves DELETE /v1/admin/tags/{id}/synonym-of: the
// synonym is canonical again and a job re-files its works under it. 202
// with the job.
func (s *server) handleUnsynonym() http.Handler {
	return s.handleID("tag", func(w http.ResponseWriter, r *http.Request, id int64) error {
		j, err := s.Poster.Unsynonym(r.Context(), id)
		return replyJob(w, j, err)
	})
}

// handleGetWrangling serves GET /v1/admin/wrangling/{id}: the job's state
// and progress.
func (s *server) handleGetWrangling() http.Handler {
	return s.handleID("wrangling job", func(w http.ResponseWriter, r *http.Request, id int64) error {
		j, err := s.Poster.WranglingJob(r.Context(), id)
		return reply(w, http.StatusOK, j, err, newJobJSON)
	})
}
