package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// DefaultBodyLimit is the largest request body accepted: a 500,000-character
// body of four-byte characters plus tags and JSON escaping.
const DefaultBodyLimit = 4 << 20

// encode writes v as JSON with status.
func encode(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if v != nil {
		json.NewEncoder(w).Encode(v)
	}
}

// decode reads one JSON value into dst, refusing bodies over limit bytes
// (413), unknown fields (400), malformed JSON (400) and trailing data (400).
func decode(w http.ResponseWriter, r *http.Request, limit int64, dst any) error {
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
			return errEmptyBody
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return &Error{Status: http.StatusBadRequest, Code: "unknown_field", Message: "unknown field " + field, Field: field}
		case errors.As(err, &te):
			return &Error{Status: http.StatusBadRequest, Code: "wrong_type", Message: "field " + te.Field + " has the wrong type", Field: te.Field}
		case errors.As(err, &se), errors.Is(err, io.ErrUnexpectedEOF):
			return badRequest("malformed_json", "the request body is not valid JSON")
		default:
			return badRequest("malformed_json", "the request body could not be read: "+err.Error())
		}
	}
	if dec.More() {
		return badRequest("malformed_json", "the request body has data after the JSON value")
	}
	return nil
}

var errEmptyBody = badRequest("empty_body", "the request body is empty")

// decodeOptional is decode for a body that may be empty (dst keeps its
// defaults then).
func decodeOptional(w http.ResponseWriter, r *http.Request, limit int64, dst any) error {
	if err := decode(w, r, limit, dst); err != nil && err != errEmptyBody {
		return err
	}
	return nil
}

// reply answers status with toJSON(v), or returns err (which the handler's
// caller writes) when the call that produced v failed.
func reply[T, J any](w http.ResponseWriter, status int, v T, err error, toJSON func(T) J) error {
	if err != nil {
		return err
	}
	encode(w, status, toJSON(v))
	return nil
}

// pathID parses the path value name as a positive integer id; anything
// else names nothing that exists, so it is a 404 of what.
func pathID(r *http.Request, name, what string) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue(name), 10, 64)
	if err != nil || id <= 0 {
		return 0, notFound(what)
	}
	return id, nil
}
