package httpapi

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"go.yaml.in/yaml/v3"
)

// openAPIYAML is the API's OpenAPI 3.1 document, written by hand from the
// handlers and their types: the reference for every route, body, status
// and header. The end-to-end tests validate every request and answer
// against it, so a handler that drifts from it fails a test.
//
//go:embed openapi.yaml
var openAPIYAML []byte

// OpenAPI returns the OpenAPI document as JSON, as GET /v1/openapi.json
// serves it, or the error that kept the embedded YAML from converting.
var OpenAPI = sync.OnceValues(func() ([]byte, error) {
	var doc any
	if err := yaml.Unmarshal(openAPIYAML, &doc); err != nil {
		return nil, fmt.Errorf("openapi.yaml: %w", err)
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("openapi.yaml as JSON: %w", err)
	}
	return b, nil
})

// handleOpenAPI serves GET /v1/openapi.json, unauthenticated: a client
// needs the document before it has a token.
func (s *server) handleOpenAPI() http.Handler {
	return s.handle(func(w http.ResponseWriter, r *http.Request) error {
		doc, err := OpenAPI()
		if err != nil {
			return err
		}
		w.Header().Set("Content-Type", "application/json")
		_, err = w.Write(doc)
		return err
	})
}
