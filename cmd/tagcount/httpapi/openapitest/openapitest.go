// Package openapitest holds tests to the API's OpenAPI document: a client
// whose transport validates every request a test sends and every answer it
// gets against the document, and fails the test on a mismatch. A handler
// that drifts from the document (a renamed field, an undocumented status,
// a missing header) fails whichever test sees the answer. Only tests import
// it. It takes the document as bytes, so the HTTP layer's own tests can use
// it without an import cycle.
package openapitest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// Validator checks HTTP exchanges against one OpenAPI document.
type Validator struct {
	// Doc is the loaded, validated document.
	Doc     *openapi3.T
	router  routers.Router
	noRoute *routers.Route // what any method and path the document lacks answers
	opts    *openapi3filter.Options
}

// Once returns what a test binary calls for the Validator of the document
// load returns: the document is loaded once, and a failure to load it
// fails the test that asks.
func Once(load func() ([]byte, error)) func(t testing.TB) *Validator {
	v := sync.OnceValues(func() (*Validator, error) {
		doc, err := load()
		if err != nil {
			return nil, err
		}
		return New(doc)
	})
	return func(t testing.TB) *Validator {
		t.Helper()
		val, err := v()
		if err != nil {
			t.Fatal(err)
		}
		return val
	}
}

// New loads doc (JSON or YAML) and returns its Validator, or the error
// that makes doc unusable: it does not parse, is not a valid OpenAPI
// document, or lacks the NoSuchRoute response every unknown route answers.
func New(doc []byte) (*Validator, error) {
	loader := openapi3.NewLoader()
	t, err := loader.LoadFromData(doc)
	if err != nil {
		return nil, fmt.Errorf("loading the OpenAPI document: %w", err)
	}
	if err := t.Validate(loader.Context, openapi3.EnableExamplesValidation()); err != nil {
		return nil, fmt.Errorf("the OpenAPI document is not valid: %w", err)
	}
	router, err := gorillamux.NewRouter(t)
	if err != nil {
		return nil, err
	}
	nr := t.Components.Responses["NoSuchRoute"]
	if nr == nil {
		return nil, errors.New("the OpenAPI document has no components.responses.NoSuchRoute")
	}
	op := openapi3.NewOperation()
	op.Responses = openapi3.NewResponses(openapi3.WithStatus(http.StatusNotFound, nr))
	opts := &openapi3filter.Options{
		IncludeResponseStatus:             true, // an undocumented status is drift too
		RejectWhenRequestBodyNotSpecified: true,
		SkipSettingDefaults:               true, // validate what is sent, never change it
		MultiError:                        true,
		AuthenticationFunc:                bearerPresent,
	}
	opts.WithCustomSchemaErrorFunc(shortSchemaError)
	return &Validator{Doc: t, router: router, noRoute: &routers.Route{Spec: t, Operation: op}, opts: opts}, nil
}

// shortSchemaError says what is wrong and where, without the validator's
// dump of the whole schema and value (a page per error on a bulk answer).
func shortSchemaError(err *openapi3.SchemaError) string {
	return fmt.Sprintf("%s (at /%s)", err.Reason, strings.Join(err.JSONPointer(), "/"))
}

// bearerPresent passes a request that carries a bearer token. Whether the
// token is valid is the server's to say (401); the document only says that
// one is needed.
func bearerPresent(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	s := in.SecurityScheme
	if s == nil || s.Type != "http" || !strings.EqualFold(s.Scheme, "bearer") {
		return in.NewError(fmt.Errorf("unsupported security scheme %q", in.SecuritySchemeName))
	}
	scheme, tok, _ := strings.Cut(strings.TrimSpace(in.RequestValidationInput.Request.Header.Get("Authorization")), " ")
	if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return in.NewError(errors.New("no bearer token"))
	}
	return nil
}

// Check validates one exchange: req with its body, and the answer's
// status, header and body. It returns nil when both follow the document,
// and otherwise an error saying what breaks it: an answer whose status,
// headers or body the document does not allow for the request's
// operation; a method and path the document lacks answered other than 404
// no_such_route; or a request the document refuses (no token, a bad path
// id, a body of the wrong shape) answered with a success, which means the
// document refuses what the server takes.
func (v *Validator) Check(req *http.Request, reqBody []byte, status int, header http.Header, resBody []byte) error {
	ctx := context.Background()
	r := req.Clone(ctx)
	r.Body = io.NopCloser(bytes.NewReader(reqBody))
	r.ContentLength = int64(len(reqBody))
	route, params, err := v.router.FindRoute(r)
	if err != nil {
		route, params = v.noRoute, nil
	}
	in := &openapi3filter.RequestValidationInput{Request: r, PathParams: params, Route: route, Options: v.opts}
	var reqErr error
	if route != v.noRoute {
		reqErr = openapi3filter.ValidateRequest(ctx, in)
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: status, Header: header, Options: v.opts}
	out.SetBodyBytes(resBody)
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		if route == v.noRoute {
			return fmt.Errorf("the document has no operation for it, so it must answer 404 no_such_route: %w", err)
		}
		return fmt.Errorf("the answer breaks the document: %w", err)
	}
	if ref := route.Operation.Responses.Status(status); ref != nil && len(ref.Value.Content) == 0 && len(resBody) > 0 {
		return fmt.Errorf("the answer has a body, but the document's %d has none", status)
	}
	if reqErr != nil && status < 400 {
		return fmt.Errorf("the document refuses this request (%w), but the server answered %d", reqErr, status)
	}
	return nil
}

// Client returns an HTTP client whose every exchange is checked with
// Check; a mismatch fails t (with Errorf, so the client may be used from
// any goroutine) and the answer is still returned as it came.
func (v *Validator) Client(t testing.TB) *http.Client {
	return &http.Client{Transport: &transport{v: v, t: t, base: http.DefaultTransport}}
}

type transport struct {
	v    *Validator
	t    testing.TB
	base http.RoundTripper
}

// maxReport bounds a reported mismatch: the validator quotes values, and a
// bulk answer is long.
const maxReport = 4000

func (tr *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	var reqBody []byte
	if req.Body != nil {
		var err error
		reqBody, err = io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(reqBody))
	}
	res, err := tr.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resBody, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		return nil, err
	}
	res.Body = io.NopCloser(bytes.NewReader(resBody))
	if err := tr.v.Check(req, reqBody, res.StatusCode, res.Header, resBody); err != nil {
		msg := err.Error()
		if len(msg) > maxReport {
			msg = strings.ToValidUTF8(msg[:maxReport], "") + "…"
		}
		tr.t.Errorf("OpenAPI: %s %s answered %d: %s", req.Method, req.URL.RequestURI(), res.StatusCode, msg)
	}
	return res, nil
}

// NewRequest returns a request to url with body: none when nil, a string as
// it is, anything else encoded as JSON; a request with a body says it is
// JSON. It fails as http.NewRequest does.
func NewRequest(method, url string, body any) (*http.Request, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, url, rd)
	if err == nil && rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, err
}
