// Package api holds what every tagcount HTTP handler shares to keep the
// contract of API.md: the error type and its JSON shape, request decoding
// with a body limit and unknown-field rejection, response encoding, and
// bearer-token authentication.
package api

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"

	"github.com/go-sql-driver/mysql"
)

// Error is an error a client is shown: an HTTP status, a snake_case code, a
// human sentence and optionally the JSON path of the offending field.
type Error struct {
	Status     int
	Code       string
	Message    string
	Field      string
	RetryAfter int // seconds; set for 503
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s (%s)", e.Code, e.Message, e.Field)
	}
	return e.Code + ": " + e.Message
}

// Invalid is a 422 validation failure of field.
func Invalid(field, code, message string) *Error {
	return &Error{Status: http.StatusUnprocessableEntity, Code: code, Message: message, Field: field}
}

// BadRequest is a 400.
func BadRequest(code, message string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: code, Message: message}
}

// NotFound is a 404; it is also what an author sees for another author's data.
func NotFound(what string) *Error {
	return &Error{Status: http.StatusNotFound, Code: "not_found", Message: what + " not found"}
}

// Conflict is a 409.
func Conflict(code, message string) *Error {
	return &Error{Status: http.StatusConflict, Code: code, Message: message}
}

// Unavailable is a 503 telling the client to retry after the given seconds.
func Unavailable(code, message string, retryAfter int) *Error {
	if retryAfter <= 0 {
		retryAfter = 1
	}
	return &Error{Status: http.StatusServiceUnavailable, Code: code, Message: message, RetryAfter: retryAfter}
}

// Unauthorized is a 401.
func Unauthorized(message string) *Error {
	return &Error{Status: http.StatusUnauthorized, Code: "unauthorized", Message: message}
}

// Forbidden is a 403.
func Forbidden(message string) *Error {
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

// MySQL error numbers that mean "try again": the transaction was rolled back
// whole, so nothing the client sent was half-applied.
const (
	mysqlLockWaitTimeout = 1205
	mysqlDeadlock        = 1213
)

// IsLockConflict reports whether err is a deadlock or a lock wait timeout:
// the server rolled the transaction (or statement) back whole, so running it
// again is the fix.
func IsLockConflict(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && (me.Number == mysqlDeadlock || me.Number == mysqlLockWaitTimeout)
}

// Classify maps err to the *Error a client sees. Database deadlocks and lock
// wait timeouts, and unreachable dependencies, become 503 with Retry-After;
// anything unknown is an internal error.
func Classify(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		switch me.Number {
		case mysqlDeadlock:
			return Unavailable("deadlock", "the database detected a deadlock; nothing was saved, try again", 1)
		case mysqlLockWaitTimeout:
			return Unavailable("lock_wait_timeout", "the database was busy; nothing was saved, try again", 1)
		}
	}
	if IsUnavailable(err) {
		return Unavailable("dependency_unavailable", "a service tagcount depends on is unavailable; nothing was saved, try again shortly", 5)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return Unavailable("timeout", "the request took too long; try again", 1)
	}
	return &Error{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error"}
}

// IsUnavailable reports whether err means a dependency could not be reached
// (connection refused, reset, bad connection).
func IsUnavailable(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &oe) || errors.As(err, &ne) || errors.Is(err, mysql.ErrInvalidConn) ||
		errors.Is(err, driver.ErrBadConn)
}

// WriteError writes err in the shape of API.md. Internal errors are logged
// with the request and shown only as "internal error".
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	e := Classify(err)
	if e.Status >= 500 {
		slog.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "status", e.Status, "code", e.Code, "err", err)
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	Encode(w, e.Status, errorBody{Error: errorDetail{Code: e.Code, Message: e.Message, Field: e.Field}})
}
