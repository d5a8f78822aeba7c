package httpapi

import (
	"net/http"
	"strings"
	"testing"
)

func TestEveryAnswerCarriesARequestIDAndItsLogLinesToo(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t, nil, Edge{})
	tok := api.token(1, RoleAuthor)

	for _, tc := range []struct {
		name, token, sent string
		status            int
		keep              bool
	}{
		{"a client's id on a success", tok, "client-id-42", http.StatusOK, true},
		{"a client's id on an error", "", "client-id-43", http.StatusUnauthorized, true},
		{"no id", tok, "", http.StatusOK, false},
		{"an id with a space", tok, "two words", http.StatusOK, false},
		{"an id that is not ASCII", tok, "caf\u00e9", http.StatusOK, false},
		{"an id over 128 characters", tok, strings.Repeat("x", 129), http.StatusOK, false},
	} {
		path := "/v1/drafts/1"
		if tc.status == http.StatusOK {
			path = "/healthz"
		}
		var headers []string
		if tc.sent != "" {
			headers = []string{RequestIDHeader, tc.sent}
		}
		res := api.do("GET", path, tc.token, nil, headers...)
		got := res.Header.Get(RequestIDHeader)
		switch {
		case res.Status != tc.status:
			t.Errorf("%s: status %d; want %d", tc.name, res.Status, tc.status)
		case tc.keep && got != tc.sent:
			t.Errorf("%s: X-Request-ID %q; want the client's %q", tc.name, got, tc.sent)
		case !tc.keep && (got == "" || got == tc.sent || !validRequestID(got)):
			t.Errorf("%s: X-Request-ID %q; want a new, valid one", tc.name, got)
		}
	}

	// A failing request's lines (here the request log at debug level) name it.
	api.do("GET", "/v1/drafts/1", tok, nil, RequestIDHeader, "find-me-in-the-logs")
	if !strings.Contains(api.Logs.String(), "request_id=find-me-in-the-logs") {
		t.Errorf("no log line carries the request's id:\n%s", api.Logs)
	}
}
