package counter

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/tagcount/tagcount/drafts/api"
)

// reconcileRequest is the optional body of the reconcile routes.
type reconcileRequest struct {
	DryRun bool `json:"dry_run"`
}

type reconcileStartedResponse struct {
	ID     int64  `json:"id"`
	State  string `json:"state"`
	DryRun bool   `json:"dry_run"`
}

// reconcileReportResponse is a run's report as the admin API shows it.
type reconcileReportResponse struct {
	ID                int64      `json:"id"`
	State             string     `json:"state"`
	DryRun            bool       `json:"dry_run"`
	TagID             *int64     `json:"tag_id,omitempty"`
	StartedAt         time.Time  `json:"started_at"`
	FinishedAt        *time.Time `json:"finished_at,omitempty"`
	DurationSeconds   float64    `json:"duration_seconds"`
	TagsScanned       int64      `json:"tags_scanned"`
	TagsDrifted       int64      `json:"tags_drifted"`
	TagsCorrected     int64      `json:"tags_corrected"`
	TotalAbsDrift     int64      `json:"total_abs_drift"`
	LargestDrift      int64      `json:"largest_drift"`
	LargestDriftTagID *int64     `json:"largest_drift_tag_id,omitempty"`
	Error             string     `json:"error,omitempty"`
}

func newReconcileReportResponse(rep ReconcileReport) reconcileReportResponse {
	out := reconcileReportResponse{
		ID: rep.ID, State: rep.State, DryRun: rep.DryRun, StartedAt: rep.StartedAt.UTC(),
		DurationSeconds: rep.Duration().Seconds(), TagsScanned: rep.TagsScanned, TagsDrifted: rep.TagsDrifted,
		TagsCorrected: rep.TagsCorrected, TotalAbsDrift: rep.TotalAbsDrift, LargestDrift: rep.LargestDrift,
		Error: rep.Error,
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

// reconcileAPIError maps the reconciler's errors to the API's.
func reconcileAPIError(err error) error {
	switch {
	case errors.Is(err, ErrReconcileRunning):
		return api.Conflict("reconcile_running", err.Error()+"; try again when it finishes")
	case errors.Is(err, ErrReconcileRunNotFound):
		return api.NotFound("reconcile run")
	case errors.Is(err, ErrReconcileTagNotFound):
		return api.NotFound("tag")
	}
	return err
}

// decodeReconcileRequest reads the optional body; an empty body means the
// defaults.
func decodeReconcileRequest(w http.ResponseWriter, r *http.Request) (reconcileRequest, error) {
	var req reconcileRequest
	if err := api.Decode(w, r, 4<<10, &req); err != nil {
		var ae *api.Error
		if errors.As(err, &ae) && ae.Code == "empty_body" {
			return reconcileRequest{}, nil
		}
		return req, err
	}
	return req, nil
}

// HandleStart serves POST /v1/admin/reconcile {"dry_run": bool}: it starts
// a run in the background and answers 202 {"id", "state", "dry_run"}, or 409
// with code reconcile_running when a run is in progress.
func (r *Reconciler) HandleStart() http.Handler {
	return api.HandlerFunc(func(w http.ResponseWriter, req *http.Request) error {
		body, err := decodeReconcileRequest(w, req)
		if err != nil {
			return err
		}
		run, err := r.startBackground(req.Context(), ReconcileOptions{DryRun: body.DryRun})
		if err != nil {
			return reconcileAPIError(err)
		}
		w.Header().Set("Location", "/v1/admin/reconcile/"+strconv.FormatInt(run.id, 10))
		api.Encode(w, http.StatusAccepted, reconcileStartedResponse{ID: run.id, State: ReconcileStateRunning, DryRun: run.dryRun})
		return nil
	})
}

// HandleReport serves GET /v1/admin/reconcile/{id}: the run's report, or 404.
func (r *Reconciler) HandleReport() http.Handler {
	return api.HandlerFunc(func(w http.ResponseWriter, req *http.Request) error {
		id, err := api.PathID(req, "id")
		if err != nil {
			return api.NotFound("reconcile run")
		}
		rep, err := r.Report(req.Context(), id)
		if err != nil {
			return reconcileAPIError(err)
		}
		api.Encode(w, http.StatusOK, newReconcileReportResponse(rep))
		return nil
	})
}

// HandleRecount serves POST /v1/admin/tags/{id}/recount (optional body
// {"dry_run": bool}): it reconciles that one tag now and answers 200 with the
// run's report; 404 for an unknown tag; 409 (reconcile_running) while any run
// is in progress, since two runs could correct the same tag twice.
func (r *Reconciler) HandleRecount() http.Handler {
	return api.HandlerFunc(func(w http.ResponseWriter, req *http.Request) error {
		id, err := api.PathID(req, "id")
		if err != nil {
			return api.NotFound("tag")
		}
		body, err := decodeReconcileRequest(w, req)
		if err != nil {
			return err
		}
		rep, err := r.Run(req.Context(), ReconcileOptions{TagID: id, DryRun: body.DryRun})
		if err != nil {
			return reconcileAPIError(err)
		}
		api.Encode(w, http.StatusOK, newReconcileReportResponse(rep))
		return nil
	})
}
