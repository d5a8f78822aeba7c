package httpapi

import (
	"cmp"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
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
// (413), names dst does not have, matched as written (400 unknown_field),
// a name given twice (400 duplicate_field), a value of the wrong type (400
// wrong_type), malformed JSON and trailing data (400 malformed_json), and
// strings that are not UTF-8 (422 invalid_utf8): nothing is repaired or
// guessed. The standard library's decoder matches names in any case and
// turns invalid UTF-8 into U+FFFD, so the strict decoder of
// go-json-experiment (the design of encoding/json/v2) reads bodies.
func decode(w http.ResponseWriter, r *http.Request, limit int64, dst any) error {
	dec := jsontext.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	err := jsonv2.UnmarshalDecode(dec, dst, jsonv2.RejectUnknownMembers(true))
	if err == nil {
		if _, err = dec.ReadValue(); err == nil {
			return badRequest("malformed_json", "the request body has data after the JSON value")
		} else if errors.Is(err, io.EOF) {
			return nil
		}
	}
	return decodeError(err)
}

// decodeError is the answer to a body the strict decoder refused with err.
func decodeError(err error) error {
	var mbe *http.MaxBytesError
	var syn *jsontext.SyntacticError
	var sem *jsonv2.SemanticError
	switch {
	case errors.As(err, &mbe):
		return &Error{Status: http.StatusRequestEntityTooLarge, Code: "body_too_large", Message: "the request body is larger than the limit"}
	case errors.Is(err, io.EOF):
		return errEmptyBody
	case errors.As(err, &syn) && syn.Err == errInvalidUTF8:
		f := fieldOf(syn.JSONPointer)
		return invalid(f, "invalid_utf8", "the request body has a string that is not valid UTF-8 at "+cmp.Or(f, "its top level"))
	case errors.As(err, &syn) && errors.Is(syn.Err, jsontext.ErrDuplicateName):
		f := fieldOf(syn.JSONPointer)
		return &Error{Status: http.StatusBadRequest, Code: "duplicate_field", Message: "field " + f + " is given twice", Field: f}
	case errors.As(err, &sem) && sem.Err == jsonv2.ErrUnknownName:
		f := fieldOf(sem.JSONPointer)
		return &Error{Status: http.StatusBadRequest, Code: "unknown_field", Message: "unknown field " + f, Field: f}
	case errors.As(err, &syn), errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("malformed_json", "the request body is not valid JSON")
	case errors.As(err, &sem) && sem.JSONPointer == "":
		return badRequest("wrong_type", "the request body must be a JSON object")
	case errors.As(err, &sem):
		f := fieldOf(sem.JSONPointer)
		return &Error{Status: http.StatusBadRequest, Code: "wrong_type", Message: "field " + f + " has the wrong type, or a number out of range", Field: f}
	}
	return badRequest("malformed_json", "the request body could not be read")
}

// errInvalidUTF8 is the decoder's own error for a string that is not
// UTF-8. The library does not export it, so it is taken from a refusal of
// its own once, and compared, rather than the message's text.
var errInvalidUTF8 = func() error {
	var s string
	var syn *jsontext.SyntacticError
	if errors.As(jsonv2.Unmarshal([]byte("\"\xff\""), &s), &syn) {
		return syn.Err
	}
	panic("httpapi: the JSON decoder accepts invalid UTF-8")
}()

// fieldOf writes a JSON pointer (/tags/fandoms/0) as the API names fields
// (tags.fandoms[0]).
func fieldOf(p jsontext.Pointer) string {
	var sb strings.Builder
	for tok := range p.Tokens() {
		if _, err := strconv.ParseUint(tok, 10, 64); err == nil && sb.Len() > 0 {
			sb.WriteString("[" + tok + "]")
			continue
		}
		if sb.Len() > 0 {
			sb.WriteByte('.')
		}
		sb.WriteString(tok)
	}
	return sb.String()
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
