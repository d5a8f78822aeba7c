package httpapi

import (
	"bufio"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
)

const validTags = `"tags":{"rating":"General Audiences","warnings":["No Archive Warnings Apply"],"fandoms":["Star Trek"]}`

// Bodies are read as docs/api.md says, nothing repaired or guessed (issue
// 21, finding 7): invalid UTF-8 is refused, not turned into U+FFFD; keys
// match as written; every refusal names its field when one is at fault.
func TestBodiesAreDecodedStrictly(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t, nil, Edge{})
	tok := api.token(7, RoleAuthor)
	cases := []struct {
		name, body  string
		status      int
		code, field string
	}{
		{"invalid UTF-8 in the title", "{\"title\":\"Bad \xff byte\",\"body\":\"\"," + validTags + "}", 422, "invalid_utf8", "title"},
		{"invalid UTF-8 in a tag", `{"title":"T","body":"",` + strings.Replace(validTags, "Star Trek", "Star \xc3 Trek", 1) + `}`, 422, "invalid_utf8", "tags.fandoms[0]"},
		{"an escaped lone surrogate", `{"title":"T\udc00","body":"",` + validTags + `}`, 400, "malformed_json", ""},
		{"a key in capitals", `{"TITLE":"Shouting","body":"",` + validTags + `}`, 400, "unknown_field", "TITLE"},
		{"a nested key in capitals", `{"title":"T","body":"","tags":{"RATING":"Mature","warnings":["No Archive Warnings Apply"],"fandoms":["X"]}}`, 400, "unknown_field", "tags.RATING"},
		{"a key given twice", `{"title":"One","title":"Two","body":"",` + validTags + `}`, 400, "duplicate_field", "title"},
		{"a nested wrong type", `{"title":"T","body":"","tags":{"rating":"Mature","warnings":["No Archive Warnings Apply"],"fandoms":[7]}}`, 400, "wrong_type", "tags.fandoms[0]"},
		{"an array body", `[]`, 400, "wrong_type", ""},
		{"a string body", `"title"`, 400, "wrong_type", ""},
	}
	for _, tc := range cases {
		res := api.do("POST", "/v1/drafts", tok, tc.body)
		e, _ := res.Body["error"].(map[string]any)
		field, _ := e["field"].(string)
		msg, _ := e["message"].(string)
		if res.Status != tc.status || res.code() != tc.code || field != tc.field {
			t.Errorf("%s: %d %v; want %d %s at %q", tc.name, res.Status, res.Body, tc.status, tc.code, tc.field)
		}
		if strings.Contains(msg, "  ") || msg == "" {
			t.Errorf("%s: message %q; want a sentence", tc.name, msg)
		}
	}
	var n int
	if err := api.DB.QueryRow("SELECT COUNT(*) FROM drafts").Scan(&n); err != nil || n != 0 {
		t.Errorf("drafts saved from refused bodies: %d (%v); want 0", n, err)
	}
}

// A header block over the limit is refused in the API's error shape, as
// every other refusal is, not with the standard library's plain text.
func TestHeadersOverTheLimitAnswer431InTheErrorShape(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t, nil, Edge{MaxHeaderBytes: 4 << 10})
	for _, size := range []int{12 << 10, 64 << 10} { // net/http allows 4 KiB over the limit
		conn, err := net.Dial("tcp", strings.TrimPrefix(api.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		go conn.Write([]byte("GET /v1/tags/1 HTTP/1.1\r\nHost: test\r\nX-Big: " + strings.Repeat("a", size) + "\r\n\r\n"))
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("headers of %d bytes: no answer: %v", size, err)
		}
		var body struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		err = json.NewDecoder(res.Body).Decode(&body)
		res.Body.Close()
		if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge || err != nil || body.Error.Code != "headers_too_large" ||
			res.Header.Get("Content-Type") != "application/json" {
			t.Errorf("headers of %d bytes: %d %s %+v (%v); want 431 headers_too_large in the error shape",
				size, res.StatusCode, res.Header.Get("Content-Type"), body, err)
		}
	}
}

// A catch-up rate the database cannot hold is the client's mistake, 422,
// not a 500 (issue 21, finding 8).
func TestResumeAtARateOutOfRangeIs422(t *testing.T) {
	t.Parallel()
	api := newTestAPI(t, nil, Edge{})
	tok := api.token(1, RoleAdmin)
	for _, body := range []string{`{"catch_up_per_second": 99999999999}`, `{"catch_up_per_second": 1000001}`, `{"catch_up_per_second": -1}`} {
		res := api.do("POST", "/v1/admin/counter/resume", tok, body)
		e, _ := res.Body["error"].(map[string]any)
		if res.Status != http.StatusUnprocessableEntity || res.code() != "invalid_rate" || e["field"] != "catch_up_per_second" {
			t.Errorf("resume %s: %d %v; want 422 invalid_rate at catch_up_per_second", body, res.Status, res.Body)
		}
	}
}
