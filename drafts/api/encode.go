package api

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
)

// DefaultBodyLimit is the largest request body accepted: a 500,000-character
// body of four-byte characters plus tags and JSON escaping.
const DefaultBodyLimit = 4 << 20

// Encode writes v as JSON with status.
func Encode(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if v != nil {
		json.NewEncoder(w).Encode(v)
	}
}

// Decode reads one JSON value into dst, rejecting bodies over limit bytes
// (413), unknown fields (400), malformed JSON (400) and trailing data (400).
func Decode(w http.ResponseWriter, r *http.Request, limit int64, dst any) error {
	if limit <= 0 {
		limit = DefaultBodyLimit
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var mbe *http.MaxBytesError
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &mbe):
			return &Error{Status: http.StatusRequestEntityTooLarge, Code: "body_too_large", Message: "the request body is larger than the limit"}
		case errors.Is(err, io.EOF):
			return BadRequest("empty_body", "the request body is empty")
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return &Error{Status: http.StatusBadRequest, Code: "unknown_field", Message: "unknown field " + field, Field: field}
		case errors.As(err, &te):
			return &Error{Status: http.StatusBadRequest, Code: "wrong_type", Message: "field " + te.Field + " has the wrong type", Field: te.Field}
		case errors.As(err, &se), errors.Is(err, io.ErrUnexpectedEOF):
			return BadRequest("malformed_json", "the request body is not valid JSON")
		default:
			return BadRequest("malformed_json", "the request body could not be read: "+err.Error())
		}
	}
	if dec.More() {
		return BadRequest("malformed_json", "the request body has data after the JSON value")
	}
	return nil
}

// HandlerFunc is an HTTP handler that returns its error instead of writing it.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// ServeHTTP runs h and writes its error, if any, with WriteError.
func (h HandlerFunc) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := h(w, r); err != nil {
		WriteError(w, r, err)
	}
}
