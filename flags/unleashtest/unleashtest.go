// Package unleashtest runs a real unleash-server (7.5.1, from npm) on the
// local PostgreSQL for tests, and drives it through its admin API.
//
// When unleash-server is not installed it installs it first, with `bash
// .ci/unleash.sh install` (once per machine: test binaries starting at the
// same moment wait for the one that installs). It needs Node.js >= 20, the
// npm registry for that first install, and PostgreSQL on 127.0.0.1:5432
// with trust auth for user postgres. A test that cannot get a server fails
// with the reason (the installer's output when it could not install); it
// never skips.
//
// Each server gets its own database and port. The server process exits when
// the test binary does, even if the binary is killed: it watches its stdin.
package unleashtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tagcount/tagcount/migrations/testdb"
)

const (
	// Version is the unleash-server version .ci/unleash.sh installs.
	Version = "7.5.1"
	// Environment is the Unleash environment flags are configured in and
	// ClientToken reads.
	Environment = "development"
	// Project is the Unleash project flags are created in.
	Project = "default"

	adminToken  = "*:*.tagcount-unleashtest-admin"
	clientToken = "default:development.tagcount-unleashtest-client"

	startTimeout = 90 * time.Second
	// installTimeout bounds the first install, below go test's default
	// timeout, so a stuck npm fails the test with its output.
	installTimeout = 8 * time.Minute
)

// Server is a running unleash-server for tests.
type Server struct {
	port   int
	db     string
	script string
	shared bool

	cmd    *exec.Cmd
	stdin  io.WriteCloser
	output *tailBuffer
	exited chan struct{} // closed when the process has exited

	stopOnce sync.Once
	http     *http.Client
}

// Start starts a dedicated unleash-server on a free port with its own
// database, ready to serve when Start returns. The server is stopped and its
// database dropped when the test finishes. Start fails the test (never
// skips) when it cannot install or start one, saying why.
func Start(t testing.TB) *Server {
	t.Helper()
	s, err := start(t)
	if err != nil {
		t.Fatalf("unleashtest: cannot start unleash-server %s: %v", Version, err)
	}
	t.Cleanup(func() {
		s.Stop()
		if err := s.dropDB(); err != nil {
			t.Logf("unleashtest: dropping database %s: %v", s.db, err)
		}
	})
	return s
}

var shared struct {
	sync.Mutex
	s *Server
}

// Shared returns a server shared by every test in the test binary, starting
// it on first use. Tests sharing it must use distinct flag names, and must
// not Stop it (Stop on a shared server does nothing). It exits with the test
// binary; its database is dropped by a later Start or Shared.
func Shared(t testing.TB) *Server {
	t.Helper()
	shared.Lock()
	defer shared.Unlock()
	if shared.s != nil {
		select {
		case <-shared.s.exited:
			t.Fatalf("unleashtest: the shared unleash-server exited; its output:\n%s", shared.s.output.String())
		default:
			return shared.s
		}
	}
	s, err := start(t)
	if err != nil {
		t.Fatalf("unleashtest: cannot start unleash-server %s: %v", Version, err)
	}
	s.shared = true
	shared.s = s
	return s
}

// APIURL is the base URL clients use, e.g. http://127.0.0.1:PORT/api.
func (s *Server) APIURL() string { return s.baseURL() + "/api" }

// ClientToken is a client (backend) API token for the development
// environment.
func (s *Server) ClientToken() string { return clientToken }

// CreateFlag creates a release flag in the default project with one
// flexibleRollout strategy (rollout 0%, stickiness userId, groupId = name) in
// the development environment, and enables that environment. It fails the
// test on any error.
func (s *Server) CreateFlag(t testing.TB, name string) {
	t.Helper()
	s.admin(t, http.MethodPost, "/projects/"+Project+"/features", map[string]any{
		"name": name, "type": "release", "description": "created by unleashtest",
	}, nil)
	s.admin(t, http.MethodPost, s.envPath(name)+"/strategies", map[string]any{
		"name":       "flexibleRollout",
		"parameters": rolloutParams(name, 0),
	}, nil)
	s.SetEnabled(t, name, true)
}

// SetRollout sets the rollout percentage (0-100) of the flag's
// flexibleRollout strategy in the development environment.
func (s *Server) SetRollout(t testing.TB, name string, percent int) {
	t.Helper()
	if percent < 0 || percent > 100 {
		t.Fatalf("unleashtest: rollout %d%% is not in 0-100", percent)
	}
	var strategies []struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	s.admin(t, http.MethodGet, s.envPath(name)+"/strategies", nil, &strategies)
	for _, st := range strategies {
		if st.Name == "flexibleRollout" {
			s.admin(t, http.MethodPut, s.envPath(name)+"/strategies/"+st.ID, map[string]any{
				"name":       "flexibleRollout",
				"parameters": rolloutParams(name, percent),
			}, nil)
			return
		}
	}
	t.Fatalf("unleashtest: flag %s has no flexibleRollout strategy in %s", name, Environment)
}

// SetEnabled turns the flag's development environment on or off.
func (s *Server) SetEnabled(t testing.TB, name string, on bool) {
	t.Helper()
	state := "off"
	if on {
		state = "on"
	}
	s.admin(t, http.MethodPost, s.envPath(name)+"/"+state, nil, nil)
}

// Stop kills the server and waits for it to exit; afterwards nothing listens
// on its port. It is idempotent, and does nothing on a Shared server.
func (s *Server) Stop() {
	if s.shared {
		return
	}
	s.stopOnce.Do(s.kill)
}

func (s *Server) kill() {
	if s.cmd == nil {
		return
	}
	_ = s.stdin.Close() // the server exits on EOF
	pgid := s.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-s.exited
	}
	// bash execs node, so the group is normally gone; make sure of it.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

func rolloutParams(name string, percent int) map[string]string {
	return map[string]string{"rollout": strconv.Itoa(percent), "stickiness": "userId", "groupId": name}
}

func (s *Server) baseURL() string { return "http://127.0.0.1:" + strconv.Itoa(s.port) }

func (s *Server) envPath(flag string) string {
	return "/projects/" + Project + "/features/" + flag + "/environments/" + Environment
}

func (s *Server) admin(t testing.TB, method, path string, in, out any) {
	t.Helper()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatalf("unleashtest: %v", err)
		}
		body = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, s.baseURL()+"/api/admin"+path, body)
	if err != nil {
		t.Fatalf("unleashtest: %v", err)
	}
	req.Header.Set("Authorization", adminToken)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.http.Do(req)
	if err != nil {
		t.Fatalf("unleashtest: %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("unleashtest: %s %s: %s: %s", method, path, resp.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("unleashtest: %s %s: decoding %s: %v", method, path, b, err)
		}
	}
}

var dbSeq atomic.Int64

func start(t testing.TB) (*Server, error) {
	script, err := findScript()
	if err != nil {
		return nil, err
	}
	if err := ensureInstalled(t, script); err != nil {
		return nil, err
	}
	dropAbandonedDBs(script)
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ { // a free port can be taken before the server binds it
		port := testdb.FreePort(t)
		s := &Server{
			port:   port,
			db:     fmt.Sprintf("tagcount_ut_%d_%d", os.Getpid(), dbSeq.Add(1)),
			script: script,
			output: &tailBuffer{max: 64 << 10},
			exited: make(chan struct{}),
			http:   &http.Client{Timeout: 30 * time.Second},
		}
		if lastErr = s.launch(); lastErr == nil {
			return s, nil
		}
		s.Stop()
		_ = s.dropDB()
		if !strings.Contains(lastErr.Error(), "EADDRINUSE") {
			break
		}
	}
	return nil, lastErr
}

func (s *Server) launch() error {
	cmd := exec.Command("bash", s.script, "run", strconv.Itoa(s.port), s.db)
	cmd.Env = append(os.Environ(),
		"TAGCOUNT_UNLEASH_EXIT_ON_STDIN_EOF=1",
		"TAGCOUNT_UNLEASH_ADMIN_TOKEN="+adminToken,
		"TAGCOUNT_UNLEASH_CLIENT_TOKEN="+clientToken,
	)
	cmd.Stdout = s.output
	cmd.Stderr = s.output
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("bash %s run: %w", s.script, err)
	}
	s.cmd, s.stdin = cmd, stdin
	go func() {
		_ = cmd.Wait()
		close(s.exited)
	}()

	// Ready means the client API answers with the client token: the
	// database is migrated and the tokens exist.
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-s.exited:
			return fmt.Errorf("unleash-server exited during start (is PostgreSQL up on 127.0.0.1:5432?); output:\n%s", s.output.String())
		default:
		}
		if s.ready() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("unleash-server on port %d not ready within %v; output:\n%s", s.port, startTimeout, s.output.String())
		}
		select {
		case <-s.exited:
		case <-time.After(100 * time.Millisecond): // poll interval, not synchronisation
		}
	}
}

func (s *Server) ready() bool {
	req, _ := http.NewRequest(http.MethodGet, s.APIURL()+"/client/features", nil)
	req.Header.Set("Authorization", clientToken)
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (s *Server) dropDB() error {
	out, err := exec.Command("bash", s.script, "dropdb", s.db).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// findScript finds .ci/unleash.sh: $TAGCOUNT_UNLEASH_SCRIPT, else in the
// working directory or the nearest parent that has it (tests run in their
// package's directory).
func findScript() (string, error) {
	if p := os.Getenv("TAGCOUNT_UNLEASH_SCRIPT"); p != "" {
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, ".ci", "unleash.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New(".ci/unleash.sh not found above the working directory (set TAGCOUNT_UNLEASH_SCRIPT)")
		}
		dir = parent
	}
}

// install serialises installs within this test binary; the lock file
// serialises them between binaries.
var install sync.Mutex

// ensureInstalled installs unleash-server with the script when it is not
// installed. Under an exclusive lock on a file next to the install
// directory, so that of several test binaries starting at once one installs
// and the others wait, then find it installed. It returns the installer's
// output when the install fails.
func ensureInstalled(t testing.TB, script string) error {
	home, err := installHome(script)
	if err != nil {
		return err
	}
	if checkInstalled(home) == nil {
		return nil
	}
	install.Lock()
	defer install.Unlock()
	if err := os.MkdirAll(filepath.Dir(home), 0o755); err != nil {
		return err
	}
	lockPath := filepath.Join(filepath.Dir(home), filepath.Base(home)+".install.lock")
	lock, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close() // releases the lock
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", lockPath, err)
	}
	if checkInstalled(home) == nil {
		return nil // another test binary installed it while this one waited
	}
	t.Logf("unleashtest: unleash-server %s is not installed in %s; installing it", Version, home)
	ctx, cancel := context.WithTimeout(context.Background(), installTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bash", script, "install").CombinedOutput()
	if err != nil {
		return fmt.Errorf("bash %s install: %v; its output:\n%s", script, err, out)
	}
	if err := checkInstalled(home); err != nil {
		return fmt.Errorf("%w; the installer's output:\n%s", err, out)
	}
	t.Logf("unleashtest: installed unleash-server %s in %s", Version, home)
	return nil
}

// installHome is the install directory the script uses.
func installHome(script string) (string, error) {
	out, err := exec.Command("bash", script, "home").Output()
	if err != nil {
		return "", fmt.Errorf("bash %s home: %v", script, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// checkInstalled returns an error unless unleash-server Version is
// installed in home.
func checkInstalled(home string) error {
	b, err := os.ReadFile(filepath.Join(home, "node_modules", "unleash-server", "package.json"))
	if err != nil {
		return fmt.Errorf("unleash-server is not installed in %s", home)
	}
	var pkg struct{ Version string }
	if json.Unmarshal(b, &pkg) != nil || pkg.Version != Version {
		return fmt.Errorf("unleash-server in %s is %q, want %s", home, pkg.Version, Version)
	}
	return nil
}

var abandonedOnce sync.Once

var utDB = regexp.MustCompile(`^tagcount_ut_(\d+)_\d+$`)

// dropAbandonedDBs drops databases left by test binaries that are gone
// (Shared servers, killed runs).
func dropAbandonedDBs(script string) {
	abandonedOnce.Do(func() {
		out, err := exec.Command("psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qtAX",
			"-c", "SELECT datname FROM pg_database WHERE datname LIKE 'tagcount_ut_%'").Output()
		if err != nil {
			return
		}
		for _, name := range strings.Fields(string(out)) {
			m := utDB.FindStringSubmatch(name)
			if m == nil {
				continue
			}
			pid, _ := strconv.Atoi(m[1])
			if err := syscall.Kill(pid, 0); pid == os.Getpid() || err == nil || errors.Is(err, syscall.EPERM) {
				continue // its test binary is still running
			}
			_ = exec.Command("bash", script, "dropdb", name).Run()
		}
	})
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.max {
		b.buf = append([]byte(nil), b.buf[len(b.buf)-b.max:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
