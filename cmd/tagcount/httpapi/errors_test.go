package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/tagcount/tagcount/counter/reconcile"
	"github.com/tagcount/tagcount/counter/tags"
	"github.com/tagcount/tagcount/drafts"
	"github.com/tagcount/tagcount/poster"
)

func TestEveryDomainErrorHasItsStatusAndCode(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err        error
		status     int
		code       string
		retryAfter int
	}{
		{drafts.ErrNotFound, 404, "not_found", 0},
		{fmt.Errorf("replace: %w", drafts.ErrQueued), 409, "draft_queued", 0},
		{drafts.ErrPosted, 409, "draft_posted", 0},
		{drafts.ErrChanged, 409, "draft_changed", 0},
		{fmt.Errorf("create: %w", drafts.ErrDraftQuota), 422, "quota_exceeded", 0},
		{&tags.QuotaError{Limit: 2, Reset: time.Now().Add(90*time.Second - time.Millisecond)}, 429, "quota_exceeded", 90},
		{poster.ErrWorkNotFound, 404, "not_found", 0},
		{reconcile.ErrRunning, 409, "reconcile_running", 0},
		{reconcile.ErrRunNotFound, 404, "not_found", 0},
		{reconcile.ErrTagNotFound, 404, "not_found", 0},
		{&drafts.ValidationError{Field: "title", Code: "title_required", Message: "m"}, 422, "title_required", 0},
		{&mysql.MySQLError{Number: 1213}, 503, "deadlock", 1},
		{fmt.Errorf("post: %w", &mysql.MySQLError{Number: 1205}), 503, "lock_wait_timeout", 1},
		{fmt.Errorf("save: %w", &mysql.MySQLError{Number: 1206}), 503, "overloaded", 1},
		{&net.OpError{Op: "dial", Err: errors.New("connection refused")}, 503, "dependency_unavailable", 5},
		{mysql.ErrInvalidConn, 503, "dependency_unavailable", 5},
		{context.DeadlineExceeded, 503, "timeout", 1},
		{errors.New("boom"), 500, "internal", 0},
	} {
		e := ErrorFor(tc.err)
		if e.Status != tc.status || e.Code != tc.code || e.RetryAfter != tc.retryAfter || e.Message == "" {
			t.Errorf("%v: %d %s retry %d (%q); want %d %s retry %d", tc.err, e.Status, e.Code, e.RetryAfter, e.Message,
				tc.status, tc.code, tc.retryAfter)
		}
	}
	if e := ErrorFor(errors.New("secret detail")); e.Message != "internal error" || e.Status != http.StatusInternalServerError {
		t.Errorf("an internal error shows %q to the client", e.Message)
	}
	if e := ErrorFor(&drafts.ValidationError{Field: "tags.rating", Code: "unknown_rating", Message: "m"}); e.Field != "tags.rating" {
		t.Errorf("validation error field %q", e.Field)
	}
}
