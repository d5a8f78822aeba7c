package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/counter/reconcile"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/flags/rollout"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/poster"
)

// Error is what a client is shown of a failure: an HTTP status, a
// snake_case code, a human sentence and optionally the JSON path of the
// offending field. Handlers return domain errors; ErrorFor turns them into
// an Error with the one table below.
type Error struct {
	Status     int
	Code       string
	Message    string
	Field      string
	RetryAfter int // seconds; set for 503 and 429
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s (%s)", e.Code, e.Message, e.Field)
	}
	return e.Code + ": " + e.Message
}

// domainErrors maps each domain package's errors to what a client sees.
// Messages left empty show the domain error's own text.
var domainErrors = []struct {
	err     error
	status  int
	code    string
	message string
}{
	{drafts.ErrNotFound, http.StatusNotFound, "not_found", "draft not found"},
	{drafts.ErrQueued, http.StatusConflict, "draft_queued", ""},
	{drafts.ErrPosted, http.StatusConflict, "draft_posted", ""},
	{drafts.ErrChanged, http.StatusConflict, "draft_changed", ""},
	// Waiting does not make room for a draft (posting or deleting one
	// does): 422, not a 429 a client would retry.
	{drafts.ErrDraftQuota, http.StatusUnprocessableEntity, "quota_exceeded", ""},
	// The day's allowance comes back at midnight UTC: 429 with Retry-After.
	{tags.ErrNewTagQuota, http.StatusTooManyRequests, "quota_exceeded", ""},
	{poster.ErrWorkNotFound, http.StatusNotFound, "not_found", "work not found"},
	{errTagNotFound, http.StatusNotFound, "not_found", "tag not found"},
	{reconcile.ErrTagNotFound, http.StatusNotFound, "not_found", "tag not found"},
	{reconcile.ErrRunNotFound, http.StatusNotFound, "not_found", "reconcile run not found"},
	{reconcile.ErrRunning, http.StatusConflict, "reconcile_running", ""},
	{poster.ErrTagNotFound, http.StatusNotFound, "not_found", ""},
	{poster.ErrJobNotFound, http.StatusNotFound, "not_found", "wrangling job not found"},
	{poster.ErrHasSynonyms, http.StatusConflict, "has_synonyms", ""},
	{poster.ErrNotSynonym, http.StatusConflict, "not_a_synonym", ""},
	{rollout.ErrNoPlan, http.StatusNotFound, "not_found", "no rollout plan"},
	{rollout.ErrActive, http.StatusConflict, "rollout_active", ""},
	{rollout.ErrNotActive, http.StatusConflict, "rollout_not_active", ""},
}

// fieldErrors maps the domain errors that are about one field of the
// request's body to a 422 naming it. Messages are the domain error's text.
var fieldErrors = []struct {
	err         error
	field, code string
}{
	{poster.ErrCanonicalNotFound, "canonical_id", "canonical_not_found"},
	{poster.ErrSynonymOfItself, "canonical_id", "same_tag"},
	{poster.ErrSynonymTypeMismatch, "canonical_id", "type_mismatch"},
	{poster.ErrNotCanonical, "canonical_id", "not_canonical"},
	{counter.ErrCatchUpRate, "catch_up_per_second", "invalid_rate"},
	{rollout.ErrInvalidStep, "steps", "invalid_steps"},
	{rollout.ErrInvalidHold, "hold", "invalid_hold"},
}

// errTagNotFound is the count read path's "no such tag".
var errTagNotFound = errors.New("tag not found")

// ErrorFor maps err to the Error a client sees: an *Error as it is, a
// domain error by the tables above, a validation error as 422 naming its
// field, a lock conflict or an unreachable or slow dependency as 503 with
// Retry-After, anything else as an internal error.
func ErrorFor(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	for _, f := range fieldErrors {
		if errors.Is(err, f.err) {
			return invalid(f.field, f.code, err.Error())
		}
	}
	for _, d := range domainErrors {
		if errors.Is(err, d.err) {
			msg := d.message
			if msg == "" {
				msg = err.Error()
			}
			return &Error{Status: d.status, Code: d.code, Message: msg, RetryAfter: retryAfter(err)}
		}
	}
	var ve *drafts.ValidationError
	if errors.As(err, &ve) {
		return invalid(ve.Field, ve.Code, ve.Message)
	}
	switch {
	case migrations.IsDeadlock(err):
		return unavailable("deadlock", "the database detected a deadlock; nothing was saved, try again", 1)
	case migrations.IsLockTableFull(err):
		return unavailable("overloaded", "the database was short of room for locks; nothing was saved, try again", 1)
	case migrations.IsLockConflict(err):
		return unavailable("lock_wait_timeout", "the database was busy; nothing was saved, try again", 1)
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		return unavailable("timeout", "the request took too long; try again", 1)
	case migrations.IsUnavailable(err):
		return unavailable("dependency_unavailable", "a service tagcount depends on is unavailable; nothing was saved, try again shortly", 5)
	}
	return &Error{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error"}
}

// retryAfter is the seconds until err says the request may succeed
// (rounded up, at least 1), or 0 when it does not say.
func retryAfter(err error) int {
	var r interface{ RetryAt() time.Time }
	if !errors.As(err, &r) {
		return 0
	}
	return max(int(math.Ceil(time.Until(r.RetryAt()).Seconds())), 1)
}

func invalid(field, code, message string) *Error {
	return &Error{Status: http.StatusUnprocessableEntity, Code: code, Message: message, Field: field}
}

func badRequest(code, message string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: code, Message: message}
}

func notFound(what string) *Error {
	return &Error{Status: http.StatusNotFound, Code: "not_found", Message: what + " not found"}
}

func unavailable(code, message string, retryAfter int) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Code: code, Message: message, RetryAfter: max(retryAfter, 1)}
}

func unauthorized(message string) *Error {
	return &Error{Status: http.StatusUnauthorized, Code: "unauthorized", Message: message}
}

func forbidden(message string) *Error {
	return &Error{Status: http.StatusForbidden, Code: "forbidden", Message: message}
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// WriteError writes err in the API's error shape. Server-side failures are
// logged with the request and shown only as their code's sentence; past the
// request's deadline they are all 503 timeout.
func WriteError(log *slog.Logger, w http.ResponseWriter, r *http.Request, err error) {
	e := ErrorFor(err)
	if e.Status >= 500 && e.Code != "timeout" && errors.Is(r.Context().Err(), context.DeadlineExceeded) {
		// The failure is the deadline's doing (the driver closes a
		// connection whose context ended, and reports a bad connection).
		e = ErrorFor(context.DeadlineExceeded)
	}
	if e.Status >= 500 {
		log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path,
			"status", e.Status, "code", e.Code, "err", err)
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	encode(w, e.Status, errorBody{Error: errorDetail{Code: e.Code, Message: e.Message, Field: e.Field}})
}
