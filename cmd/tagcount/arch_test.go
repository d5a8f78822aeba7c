package main

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/tagcount/tagcount"

// layer says where each of the module's packages stands. Dependencies point
// one way: the binary (and its HTTP layer and load generator) → domain
// packages → the database package. A package not named here fails the test
// until someone says where it belongs.
var layer = map[string]int{
	"migrations":      0,
	"migrations/loop": 0, // the loops' sleep, ticker and config defaults; imports nothing of ours

	"counter/tags":         1, // the tags table, tag names and identity, the new-tag quota
	"migrations/testdb":    1,
	"flags":                1,
	"drafts":               2, // names tags (counter/tags) in content
	"counter":              2, // counts tags; reads their ids (counter/tags)
	"flags/unleashtest":    2, // test support: takes testdb's FreePort
	"poster":               3, // posts drafts (drafts), files them under tags (counter/tags) and writes their counts' outbox (counter)
	"flags/rollout":        3, // moves flags' new-path flag; reads drafts' and counter's tables (imports drafts)
	"counter/reconcile":    4, // reads the posted works' side (poster) and the counts' side (counter)
	"poster/postertest":    4,
	"cmd/tagcount/httpapi": 5,
	"cmd/tagcount/loadgen": 6,
	"cmd/tagcount/archive": 6, // builds archive-shaped databases in bulk (plain SQL)
	"cmd/tagcount":         7,

	// Test support: checks HTTP traffic against the API's OpenAPI document.
	"cmd/tagcount/httpapi/openapitest": 5,
	// The archive's shares of ratings, warnings and categories; imports nothing of ours.
	"cmd/tagcount/tagmix": 5,
}

// mayImportHTTP are the packages that may import net/http: the binary and
// its HTTP layer, the load generator (an HTTP client), flags (the Unleash
// client's transport) and test helpers that drive servers.
var mayImportHTTP = []string{"cmd/tagcount", "cmd/tagcount/httpapi", "cmd/tagcount/httpapi/openapitest", "cmd/tagcount/loadgen",
	"flags", "flags/unleashtest", "flags/rollout"}

type listedPackage struct {
	ImportPath string
	Imports    []string
}

// listPackages runs `go list -json ./...` from the module root.
func listPackages(t *testing.T) []listedPackage {
	t.Helper()
	cmd := exec.Command("go", "list", "-json", "./...")
	cmd.Dir = "../.."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []listedPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listedPackage
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		p.ImportPath = strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// TestPackagesDependOneWay reads the import graph of every package (test
// files apart) and fails when a package imports one at its own layer or
// above, when a domain package imports the HTTP layer or cmd, or when a
// package that is not the HTTP layer, the binary or an HTTP client imports
// net/http.
func TestPackagesDependOneWay(t *testing.T) {
	t.Parallel()
	pkgs := listPackages(t)
	if len(pkgs) < len(layer) {
		t.Fatalf("go list found %d packages, fewer than the %d the layering names", len(pkgs), len(layer))
	}
	for _, p := range pkgs {
		level, known := layer[p.ImportPath]
		if !known {
			t.Errorf("package %s is not placed in the layering of arch_test.go", p.ImportPath)
			continue
		}
		for _, imp := range p.Imports {
			if imp == "net/http" && !slices.Contains(mayImportHTTP, p.ImportPath) {
				t.Errorf("%s imports net/http: only the HTTP layer, the binary and HTTP clients may", p.ImportPath)
			}
			rel, ours := strings.CutPrefix(imp, module+"/")
			if !ours {
				continue
			}
			if strings.HasPrefix(rel, "cmd/") && !strings.HasPrefix(p.ImportPath, "cmd/") {
				t.Errorf("domain package %s imports %s: nothing below cmd may", p.ImportPath, rel)
			}
			if l, ok := layer[rel]; ok && l >= level {
				t.Errorf("%s (layer %d) imports %s (layer %d): dependencies must point down", p.ImportPath, level, rel, l)
			}
		}
	}
}

// posterUsesOfCounter are the names of package counter that poster may
// use: the counting contract (a tag's numbers, their deltas, the outbox
// write and the legacy bump, the events announced after commit). The tags
// table, tag names and the quota are counter/tags'; loops' helpers are
// migrations/loop's.
var posterUsesOfCounter = []string{"Announcer", "BumpCounts", "Delta", "Event", "Sum", "SumsByID", "WriteOutbox"}

// TestPosterUsesOnlyTheCountingContractOfCounter parses poster's files
// (tests apart) and fails for each name of package counter they use that
// is not in posterUsesOfCounter.
func TestPosterUsesOnlyTheCountingContractOfCounter(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("../../poster/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("poster's files: %v (%d found)", err, len(files))
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, use := range counterUses(f) {
			if !slices.Contains(posterUsesOfCounter, use.Sel.Name) {
				t.Errorf("%s: poster uses counter.%s, which is not the counting contract (posterUsesOfCounter); "+
					"tags-table names live in counter/tags", fset.Position(use.Pos()), use.Sel.Name)
			}
		}
	}
}

// counterUses returns the selector expressions of f on its import of
// package counter (under whatever name f imports it).
func counterUses(f *ast.File) []*ast.SelectorExpr {
	local := ""
	for _, imp := range f.Imports {
		if path, _ := strconv.Unquote(imp.Path.Value); path == module+"/counter" {
			local = "counter"
			if imp.Name != nil {
				local = imp.Name.Name
			}
		}
	}
	if local == "" {
		return nil
	}
	var uses []*ast.SelectorExpr
	ast.Inspect(f, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok {
			if id, ok := sel.X.(*ast.Ident); ok && id.Name == local {
				uses = append(uses, sel)
			}
		}
		return true
	})
	return uses
}

// maxFuncLines is the longest a function (tests included) may be, from
// its func line to its closing brace.
const maxFuncLines = 80

// TestNoFunctionIsOverEightyLines parses every Go file of the module and
// fails for each function declaration longer than maxFuncLines.
func TestNoFunctionIsOverEightyLines(t *testing.T) {
	t.Parallel()
	fset := token.NewFileSet()
	files := 0
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != "../.." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		files++
		for _, decl := range f.Decls {
			if fn, ok := decl.(*ast.FuncDecl); ok && fn.Body != nil {
				start, end := fset.Position(fn.Pos()), fset.Position(fn.End())
				n := end.Line - start.Line + 1
				if n > maxFuncLines {
					t.Errorf("%s: %s is %d lines; split it to %d or fewer", start, fn.Name.Name, n, maxFuncLines)
				}
			}
		}
		return nil
	})
	if err != nil || files < 100 {
		t.Fatalf("walking the module: %v (%d Go files read)", err, files)
	}
}
