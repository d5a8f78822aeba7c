package openapitest

import (
	"net/http"
	"strings"
	"testing"
)

const thingDoc = `
openapi: 3.1.0
info: {title: things, version: "1"}
security: [{bearer: []}]
paths:
  /things/{id}:
    parameters:
      - {name: id, in: path, required: true, schema: {type: integer, minimum: 1}}
    get:
      responses:
        "200":
          description: A thing.
          headers:
            X-Request-ID: {required: true, schema: {type: string}}
          content:
            application/json:
              schema:
                {type: object, additionalProperties: false, required: [id, name],
                 properties: {id: {type: integer}, name: {type: string}}}
        "401":
          $ref: "#/components/responses/NoSuchRoute"
        "404":
          $ref: "#/components/responses/NoSuchRoute"
components:
  securitySchemes:
    bearer: {type: http, scheme: bearer}
  responses:
    NoSuchRoute:
      description: Nothing here.
      headers:
        X-Request-ID: {required: true, schema: {type: string}}
      content:
        application/json:
          schema:
            type: object
            required: [error]
            properties:
              error:
                type: object
                required: [code]
                properties:
                  code: {type: string}
`

func TestCheckFailsAnExchangeThatDriftsFromTheDocument(t *testing.T) {
	t.Parallel()
	v, err := New([]byte(thingDoc))
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string, token bool) *http.Request {
		r, _ := http.NewRequest("GET", "http://127.0.0.1:1"+path, nil)
		if token {
			r.Header.Set("Authorization", "bearer x.y.z")
		}
		return r
	}
	withID := http.Header{"Content-Type": {"application/json"}, "X-Request-Id": {"abc"}}
	for _, tc := range []struct {
		name    string
		req     *http.Request
		status  int
		header  http.Header
		body    string
		failure string // "" when the exchange follows the document
	}{
		{"as documented", get("/things/1", true), 200, withID, `{"id":1,"name":"a"}`, ""},
		{"a renamed field", get("/things/1", true), 200, withID, `{"id":1,"title":"a"}`, "title"},
		{"a missing header", get("/things/1", true), 200, http.Header{"Content-Type": {"application/json"}}, `{"id":1,"name":"a"}`,
			`"X-Request-ID" missing`},
		{"an undocumented status", get("/things/1", true), 500, withID, `{}`, "status is not supported"},
		{"a refused path id answered 404", get("/things/x", true), 404, withID, `{"error":{"code":"not_found"}}`, ""},
		{"a refused path id answered 200", get("/things/x", true), 200, withID, `{"id":1,"name":"a"}`,
			"the document refuses this request"},
		{"no token answered 200", get("/things/1", false), 200, withID, `{"id":1,"name":"a"}`, "the document refuses this request"},
		{"an unknown route answered 404", get("/other", true), 404, withID, `{"error":{"code":"no_such_route"}}`, ""},
		{"an unknown route answered 200", get("/other", true), 200, withID, `{}`, "no operation for it"},
	} {
		err := v.Check(tc.req, nil, tc.status, tc.header, []byte(tc.body))
		switch {
		case tc.failure == "" && err != nil:
			t.Errorf("%s: %v; want it to pass", tc.name, err)
		case tc.failure != "" && (err == nil || !strings.Contains(err.Error(), tc.failure)):
			t.Errorf("%s: %v; want a failure saying %q", tc.name, err, tc.failure)
		}
	}
}
