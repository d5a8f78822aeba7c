package httpapi

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi/openapitest"
)

// notServedYet marks a path item the document describes before its
// handler lands (another change is building it); the route test fails once
// it is served, so the mark goes when the route comes.
const notServedYet = "x-not-served-yet"

// apiValidator returns the validator of the API's document (loaded once
// per test binary) or fails t.
var apiValidator = openapitest.Once(OpenAPI)

// servedRoutes returns the patterns routes.go registers, as "METHOD /path",
// the catch-all "/" left out. A pattern that is not a string literal fails
// t: the test, and a reader, must see every route in that file.
func servedRoutes(t *testing.T) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "routes.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var routes []string
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || len(call.Args) == 0 {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok || (sel.Sel.Name != "Handle" && sel.Sel.Name != "HandleFunc") {
			return true
		}
		lit, ok := call.Args[0].(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			t.Errorf("routes.go registers a route whose pattern is not a string literal: %#v", call.Args[0])
			return true
		}
		pattern, _ := strconv.Unquote(lit.Value)
		if pattern != "/" {
			routes = append(routes, pattern)
		}
		return true
	})
	if len(routes) < 10 {
		t.Fatalf("found only %d routes in routes.go: %v", len(routes), routes)
	}
	return routes
}

func TestEveryRouteIsInTheOpenAPIDocumentAndEveryOperationIsServed(t *testing.T) {
	t.Parallel()
	v := apiValidator(t)
	served := servedRoutes(t)
	var documented []string
	for path, item := range v.Doc.Paths.Map() {
		_, planned := item.Extensions[notServedYet]
		for method := range item.Operations() {
			route := method + " " + path
			switch in := slices.Contains(served, route); {
			case planned && in:
				t.Errorf("%s is served now: remove %s from its path in openapi.yaml", route, notServedYet)
			case !planned && !in:
				t.Errorf("the OpenAPI document has %s, which routes.go does not serve", route)
			}
			documented = append(documented, route)
		}
	}
	for _, route := range served {
		if !slices.Contains(documented, route) {
			t.Errorf("routes.go serves %s, which the OpenAPI document lacks", route)
		}
	}
}

func TestTheOpenAPIDocumentIsServedWithoutAToken(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, nil, Edge{})
	res, err := apiValidator(t).Client(t).Get(a.URL + "/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	want, _ := OpenAPI()
	if res.StatusCode != http.StatusOK || !bytes.Equal(body, want) {
		t.Fatalf("GET /v1/openapi.json: %d %.200s; want 200 and the document", res.StatusCode, body)
	}
	if got := apiValidator(t).Doc.OpenAPI; !strings.HasPrefix(got, "3.1.") {
		t.Errorf("the document is OpenAPI %q; want 3.1", got)
	}
}
