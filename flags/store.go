package flags

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/Unleash/unleash-client-go/v4/api"
)

// Where the definitions being evaluated came from.
const (
	SourceServer    = "server"    // fetched from the Unleash server by this process
	SourceBackup    = "backup"    // the backup file an earlier run wrote
	SourceBootstrap = "bootstrap" // the bootstrap file or the embedded bootstrap
	SourceDefault   = "default"   // nothing: every flag has its default (off)
)

//go:embed bootstrap.json
var embeddedBootstrap []byte

// bootstrap is a parsed bootstrap document.
type bootstrap struct {
	features map[string]api.Feature
	modTime  time.Time // compared with the backup's; zero: older than any backup
	origin   string    // file path, or "embedded"
}

// loadBootstrap reads path, or the embedded bootstrap when path is empty. The
// embedded bootstrap dates from the executable's modification time, so a
// backup written before this binary was installed does not override it.
func loadBootstrap(path string) (bootstrap, error) {
	if path == "" {
		features, err := parseFeatures(embeddedBootstrap)
		if err != nil {
			return bootstrap{}, fmt.Errorf("embedded bootstrap: %w", err)
		}
		b := bootstrap{features: features, origin: "embedded"}
		if exe, err := os.Executable(); err == nil {
			if fi, err := os.Stat(exe); err == nil {
				b.modTime = fi.ModTime()
			}
		}
		return b, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return bootstrap{}, fmt.Errorf("BootstrapFile: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return bootstrap{}, fmt.Errorf("BootstrapFile: %w", err)
	}
	features, err := parseFeatures(data)
	if err != nil {
		return bootstrap{}, fmt.Errorf("BootstrapFile %s: %w", path, err)
	}
	return bootstrap{features: features, modTime: fi.ModTime(), origin: path}, nil
}

// parseFeatures parses a client-features document, the body of
// GET /api/client/features: {"version": 2, "features": [...]}.
func parseFeatures(data []byte) (map[string]api.Feature, error) {
	var doc struct {
		Version  int            `json:"version"`
		Features *[]api.Feature `json:"features"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("not a client-features JSON document: %w", err)
	}
	if dec.More() {
		return nil, errors.New("not a client-features JSON document: trailing data after the object")
	}
	if doc.Features == nil {
		return nil, errors.New(`not a client-features JSON document: no "features" array`)
	}
	features := make(map[string]api.Feature, len(*doc.Features))
	for i, f := range *doc.Features {
		if f.Name == "" {
			return nil, fmt.Errorf("features[%d] has no name", i)
		}
		features[f.Name] = repair(f)
	}
	return features, nil
}

// repair returns f with the strategy parameters that would make the Unleash
// client panic made safe: flexibleRollout asserts that stickiness and groupId
// are strings. A missing stickiness becomes "default" and a missing groupId
// the flag's name, which is what the Unleash UI fills in. Nothing else
// changes.
func repair(f api.Feature) api.Feature {
	if len(f.Strategies) == 0 {
		return f
	}
	strategies := make([]api.Strategy, len(f.Strategies))
	for i, s := range f.Strategies {
		if s.Name == "flexibleRollout" {
			params := make(api.ParameterMap, len(s.Parameters)+2)
			for k, v := range s.Parameters {
				params[k] = v
			}
			if v, ok := params["stickiness"].(string); !ok || v == "" {
				params["stickiness"] = "default"
			}
			if _, ok := params["groupId"].(string); !ok {
				params["groupId"] = f.Name
			}
			s.Parameters = params
		}
		strategies[i] = s
	}
	f.Strategies = strategies
	return f
}

func backupFileName(appName string) string {
	// The Unleash client's own file name, so a backup written by either is
	// read by the other.
	return fmt.Sprintf("unleash-repo-schema-v1-%s.json", appName)
}

// store is the Unleash client's Storage: it holds the definitions being
// evaluated, chooses the start state (backup, bootstrap or nothing) and
// writes the backup after each fetch that changed something.
//
// The client's own storages load the backup file and, when it has anything
// in it, ignore the bootstrap, however old the backup is. This one uses the
// backup only when it is at least as new as the bootstrap.
type store struct {
	log        *slog.Logger
	metrics    *metrics
	backupPath string // "" keeps no backup

	mu       sync.RWMutex
	data     map[string]any // name -> api.Feature, as the client expects
	source   string
	lastSync time.Time

	synced     chan struct{} // closed at the first fetch from the server
	syncedOnce sync.Once
}

type storeState struct {
	features map[string]api.Feature
	source   string
	lastSync time.Time
}

func newStore(log *slog.Logger, m *metrics, boot bootstrap, backupPath string, useBackup bool) *store {
	s := &store{log: log, metrics: m, backupPath: backupPath, synced: make(chan struct{})}
	s.data, s.source = s.initial(boot, useBackup)
	m.setSource(s.source)
	return s
}

func (s *store) initial(boot bootstrap, useBackup bool) (map[string]any, string) {
	if useBackup && s.backupPath != "" {
		features, modTime, err := readBackup(s.backupPath)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			s.log.Warn("ignoring unreadable flag backup", "path", s.backupPath, "err", err)
		case modTime.Before(boot.modTime):
			s.log.Warn("ignoring flag backup older than the bootstrap", "path", s.backupPath,
				"backup_time", modTime, "bootstrap", boot.origin, "bootstrap_time", boot.modTime)
		default:
			s.log.Info("flags start from backup", "path", s.backupPath, "backup_time", modTime)
			return toAny(features), SourceBackup
		}
	}
	if len(boot.features) > 0 {
		return toAny(boot.features), SourceBootstrap
	}
	return map[string]any{}, SourceDefault
}

func readBackup(path string) (map[string]api.Feature, time.Time, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, time.Time{}, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, time.Time{}, err
	}
	var raw map[string]api.Feature
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, time.Time{}, fmt.Errorf("malformed backup: %w", err)
	}
	features := make(map[string]api.Feature, len(raw))
	for name, f := range raw {
		if f.Name == "" {
			f.Name = name
		}
		features[name] = repair(f)
	}
	return features, fi.ModTime(), nil
}

func toAny(features map[string]api.Feature) map[string]any {
	data := make(map[string]any, len(features))
	for k, v := range features {
		data[k] = v
	}
	return data
}

// Init is called by the Unleash client; newStore has done the work.
func (s *store) Init(backupPath, appName string) {}

// Load is part of the Storage interface; the start state is loaded by newStore.
func (s *store) Load() error { return nil }

// Reset takes the definitions the client just fetched from the server.
func (s *store) Reset(data map[string]any, persist bool) error {
	features := make(map[string]api.Feature, len(data))
	for name, v := range data {
		f, ok := v.(api.Feature)
		if !ok {
			continue
		}
		features[name] = repair(f)
	}
	now := time.Now()
	s.mu.Lock()
	s.data = toAny(features)
	s.source = SourceServer
	s.lastSync = now
	s.mu.Unlock()
	s.metrics.setSource(SourceServer)
	s.metrics.synced(now)
	s.syncedOnce.Do(func() { close(s.synced) })
	if persist {
		if err := s.writeBackup(features); err != nil {
			s.metrics.backupErrors.Inc()
			s.log.Warn("cannot write flag backup", "path", s.backupPath, "err", err)
		}
	}
	return nil
}

// touch records a fetch that found nothing changed. The backup's
// modification time moves with it: it dates the last time the server
// confirmed the backup's content, which is what the comparison with the
// bootstrap at the next start needs.
func (s *store) touch(now time.Time) {
	s.mu.Lock()
	fromServer := s.source == SourceServer
	if fromServer {
		s.lastSync = now
	}
	s.mu.Unlock()
	s.metrics.synced(now)
	if fromServer && s.backupPath != "" {
		if err := os.Chtimes(s.backupPath, now, now); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Debug("cannot touch flag backup", "path", s.backupPath, "err", err)
		}
	}
}

// Persist is called by the Unleash client on Close. The backup is written
// after each fetch instead, so that a backup always holds server state.
func (s *store) Persist() error { return nil }

func (s *store) writeBackup(features map[string]api.Feature) error {
	if s.backupPath == "" {
		return nil
	}
	data, err := json.Marshal(features)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.backupPath), ".flags-backup-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), s.backupPath)
}

// Get is called by the Unleash client for every evaluation.
func (s *store) Get(name string) (any, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.data[name]
	return v, ok
}

// List is called by the Unleash client's ListFeatures.
func (s *store) List() []any {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]any, 0, len(s.data))
	for _, v := range s.data {
		out = append(out, v)
	}
	return out
}

func (s *store) state() storeState {
	s.mu.RLock()
	defer s.mu.RUnlock()
	features := make(map[string]api.Feature, len(s.data))
	for k, v := range s.data {
		if f, ok := v.(api.Feature); ok {
			features[k] = f
		}
	}
	return storeState{features: features, source: s.source, lastSync: s.lastSync}
}
