package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// soakProc is one process of the soak (a service role or the broker),
// started from the built binary, logging to its own file. The soak kills
// and restarts it; if it exits without being told to, that is recorded as
// a crash and it is started again, as a process manager would.
type soakProc struct {
	name    string
	bin     string
	args    []string
	logPath string
	url     string // its /readyz, /metrics and API; "" for the broker

	mu         sync.Mutex
	cmd        *exec.Cmd
	done       chan struct{}
	expected   bool // the soak stopped it
	closed     bool // the soak is over: never restart
	unexpected []string
}

// start starts the process. It fails the test when the binary cannot run.
func (p *soakProc) start(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.startLocked(); err != nil {
		t.Fatalf("soak: start %s: %v", p.name, err)
	}
}

func (p *soakProc) startLocked() error {
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "=== soak: %s starting at %s\n", p.name, time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	// The process dies with the test binary, even when that is killed, and
	// has a group of its own so a signal reaches it alone.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return err
	}
	done := make(chan struct{})
	p.cmd, p.done, p.expected = cmd, done, false
	go p.wait(cmd, f, done)
	return nil
}

// wait reaps the process; an exit nobody asked for is a crash.
func (p *soakProc) wait(cmd *exec.Cmd, f *os.File, done chan struct{}) {
	err := cmd.Wait()
	f.Close()
	p.mu.Lock()
	crashed := !p.expected && !p.closed && p.cmd == cmd
	if crashed {
		p.unexpected = append(p.unexpected, fmt.Sprintf("%s exited by itself at %s: %v",
			p.name, time.Now().UTC().Format("15:04:05.000"), err))
	}
	p.mu.Unlock()
	close(done)
	if !crashed {
		return
	}
	time.Sleep(time.Second) // a process manager's restart delay
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed && p.cmd == cmd {
		if err := p.startLocked(); err != nil {
			p.unexpected = append(p.unexpected, fmt.Sprintf("%s could not be restarted: %v", p.name, err))
		}
	}
}

// stop sends sig to the process and waits until it has exited (SIGKILL
// after a minute).
func (p *soakProc) stop(sig syscall.Signal) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.expected = true
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	syscall.Kill(-cmd.Process.Pid, sig)
	select {
	case <-done:
	case <-time.After(time.Minute):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// close kills the process for good.
func (p *soakProc) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.stop(syscall.SIGKILL)
}

func (p *soakProc) crashes() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.unexpected...)
}

// soakService is the service under test as separate processes of the
// built binary, on a private MariaDB, Redis and broker, so that faults
// hurt nobody else.
type soakService struct {
	t         *testing.T
	dir       string
	db        *testdb.Server
	redis     *testdb.Redis
	dsn       string
	secret    string
	timeout   time.Duration // every request's deadline (--request-timeout)
	broker    *soakProc
	counter   *soakProc
	worker    *soakProc
	apiLegacy *soakProc
	apiNew    *soakProc
	check     *migrations.DB // the soak's own pool, for the final checks
	// Fault-injection counters of the worker's past lives.
	dropped, reannounced atomic.Int64
}

// roles are the service's processes, in the order they are started.
func (s *soakService) roles() []*soakProc {
	return []*soakProc{s.counter, s.worker, s.apiLegacy, s.apiNew}
}

func (s *soakService) procs() []*soakProc { return append([]*soakProc{s.broker}, s.roles()...) }

// buildTagcount builds the binary once for the run, from the module root.
func buildTagcount(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tagcount")
	cmd := exec.Command("go", "build", "-tags", "faults", "-o", bin, "./cmd/tagcount") // --fault-publish-drop-rate
	cmd.Dir = "../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("soak: go build: %v\n%s", err, out)
	}
	return bin
}

// startSoakService starts the private dependencies, migrates, and starts
// the broker, a counter, a worker dropping 10% of its announcements, and an
// API per posting path, each ready before it returns.
func startSoakService(t *testing.T, timeout time.Duration) *soakService {
	t.Helper()
	bin := buildTagcount(t)
	s := &soakService{t: t, dir: t.TempDir(), db: testdb.StartServer(t), redis: testdb.StartRedis(t),
		secret: randomHex(32), timeout: timeout}
	s.dsn = s.db.DSN("tagcount")
	port := testdb.StablePort(t) // the broker is started again on it
	s.broker = &soakProc{name: "broker", bin: bin, logPath: filepath.Join(s.dir, "broker.log"),
		args: []string{"broker", "--port", strconv.Itoa(port), "--data-dir", filepath.Join(s.dir, "kafka"),
			"--kafka-partitions", "4"}}
	if out, err := exec.Command(bin, "migrate", "--mysql-dsn", s.dsn).CombinedOutput(); err != nil {
		t.Fatalf("soak: tagcount migrate: %v\n%s", err, out)
	}
	brokers := "127.0.0.1:" + strconv.Itoa(port)
	s.counter = s.role(bin, "counter", brokers)
	s.worker = s.role(bin, "worker", brokers, "--fault-publish-drop-rate", "0.1")
	s.apiLegacy = s.role(bin, "api", brokers, "--posting-path", "legacy")
	s.apiLegacy.name = "api-legacy"
	s.apiNew = s.role(bin, "api", brokers, "--posting-path", "new")
	s.apiNew.name = "api-new"
	t.Cleanup(func() {
		for _, p := range s.procs() {
			p.close()
		}
	})
	s.broker.start(t)
	testdb.WaitFor(t, time.Minute, "the broker to listen", func() bool {
		c, err := net.DialTimeout("tcp", brokers, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	for _, p := range s.roles() {
		p.start(t)
	}
	for _, p := range s.roles() {
		s.waitReady(p, 2*time.Minute)
	}
	var err error
	if s.check, err = migrations.Open(context.Background(), s.dsn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.check.Close() })
	return s
}

// role describes a service process: every flag that points it at the
// private dependencies, with short tier intervals so deferred tags flush
// within the recovery budget, and rate limits far above the soak's load
// (the limiter still runs, on the private Redis).
func (s *soakService) role(bin, role, brokers string, extra ...string) *soakProc {
	port := testdb.StablePort(s.t) // the process is started again on it
	addr := "127.0.0.1:" + strconv.Itoa(port)
	// The nightly reconcile would correct drift and hide a bug: schedule it
	// half a day away.
	reconcileAt := time.Now().UTC().Add(12 * time.Hour).Format("15:04")
	args := []string{role, "--http-addr", addr, "--mysql-dsn", s.dsn, "--redis-addr", s.redis.Addr(),
		"--kafka-brokers", brokers, "--kafka-partitions", "4",
		"--data-dir", filepath.Join(s.dir, role+"-"+strconv.Itoa(port)),
		"--tier-medium-from", "50", "--tier-large-from", "500",
		"--tier-medium-min", "1s", "--tier-medium-max", "3s", "--tier-large-interval", "2s",
		"--shutdown-timeout", "5s"}
	// Each role accepts only its own flags (config_roles.go).
	switch role {
	case "api":
		args = append(args, "--auth-secret", s.secret, "--request-timeout", s.timeout.String())
		for _, class := range []string{"writes", "reads", "admin"} {
			args = append(args, "--rate-limit-"+class, "100000", "--rate-limit-"+class+"-burst", "100000")
		}
	case "worker":
		args = append(args, "--reconcile-at", reconcileAt)
	}
	return &soakProc{name: role, bin: bin, url: "http://" + addr, args: append(args, extra...),
		logPath: filepath.Join(s.dir, role+"-"+strconv.Itoa(port)+".log")}
}

// waitReady waits until p's /readyz answers 200.
func (s *soakService) waitReady(p *soakProc, d time.Duration) {
	s.t.Helper()
	hc := &http.Client{Timeout: 2 * time.Second}
	testdb.WaitFor(s.t, d, p.name+" to be ready (log: "+p.logPath+")", func() bool {
		res, err := hc.Get(p.url + "/readyz")
		if err != nil {
			return false
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	})
}

// keepLogs copies every process's log out of the test's temporary
// directory, which is removed when the test ends, into dir (a new
// temporary directory when empty), and returns where.
func (s *soakService) keepLogs(dir string) string {
	var err error
	if dir == "" {
		dir, err = os.MkdirTemp("", "tagcount-soak-logs-")
	} else {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		return "(logs not kept: " + err.Error() + ")"
	}
	for _, p := range s.procs() {
		if raw, err := os.ReadFile(p.logPath); err == nil {
			os.WriteFile(filepath.Join(dir, filepath.Base(p.logPath)), raw, 0o644)
		}
	}
	return dir
}
