package flags

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tagcount/tagcount/migrations/testdb"
)

// newClient starts a client with test defaults and closes it at cleanup.
func newClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	c, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

// deadURL is an Unleash URL on a port nothing listens on.
func deadURL(t *testing.T) string {
	t.Helper()
	return "http://127.0.0.1:" + strconv.Itoa(testdb.FreePort(t)) + "/api"
}

// flagDoc is one flag of a client-features document: enabled, with a
// flexibleRollout strategy at the given percentage.
type flagDoc struct {
	name    string
	enabled bool
	rollout int
}

func featuresJSON(flags ...flagDoc) []byte {
	features := []map[string]any{}
	for _, f := range flags {
		features = append(features, map[string]any{
			"name": f.name, "type": "release", "enabled": f.enabled,
			"strategies": []map[string]any{{
				"name": "flexibleRollout",
				"parameters": map[string]string{
					"rollout": strconv.Itoa(f.rollout), "stickiness": "userId", "groupId": f.name,
				},
			}},
		})
	}
	b, _ := json.Marshal(map[string]any{"version": 2, "features": features})
	return b
}

// writeFile writes data to dir/name with the given modification time.
func writeFile(t *testing.T, dir, name string, data []byte, mtime time.Time) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeBackup writes a backup file, in the Unleash client's format, for app
// "tagcount" in dir.
func writeBackup(t *testing.T, dir string, mtime time.Time, flags ...flagDoc) {
	t.Helper()
	features, err := parseFeatures(featuresJSON(flags...))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(features)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, backupFileName("tagcount"), b, mtime)
}

// countOn counts the authors 1..n for whom the flag is on.
func countOn(c *Client, name string, n int) int {
	on := 0
	for id := int64(1); id <= int64(n); id++ {
		if c.Enabled(name, id) {
			on++
		}
	}
	return on
}

func syncErrors(c *Client) float64 {
	return testutil.ToFloat64(c.metrics.syncs.WithLabelValues("error"))
}
