package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/tagcount/tagcount"

// layer says where each of the module's packages stands. Dependencies point
// one way: the binary (and its HTTP layer and load generator) → domain
// packages → the database package. A package not named here fails the test
// until someone says where it belongs.
var layer = map[string]int{
	"migrations": 0,

	"drafts":               1,
	"counter":              1,
	"flags":                1,
	"poster":               2, // posts drafts (drafts) and writes their counts' outbox (counter)
	"counter/reconcile":    3, // reads the posted works' side (poster) and the counts' side (counter)
	"poster/postertest":    3,
	"migrations/testdb":    1,
	"flags/unleashtest":    2, // test support: takes testdb's FreePort
	"flags/rollout":        2, // moves flags' new-path flag; reads drafts' and counter's tables
	"cmd/tagcount/httpapi": 4,
	"cmd/tagcount/loadgen": 5,
	"cmd/tagcount/archive": 5, // builds archive-shaped databases in bulk (plain SQL)
	"cmd/tagcount":         6,

	// Test support: checks HTTP traffic against the API's OpenAPI document.
	"cmd/tagcount/httpapi/openapitest": 4,
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
