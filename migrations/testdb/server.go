package testdb

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tagcount/tagcount/migrations"
)

// Server is a private MariaDB server a test may kill and restart without
// disturbing other tests. Its data directory survives restarts.
type Server struct {
	process
	dir  string
	port int
}

// process is a private server's process. It dies with the test binary,
// even when that is killed.
type process struct {
	t       testing.TB
	cmd     *exec.Cmd
	stopped chan struct{} // closed when cmd has exited
}

// start starts name with args, or fails the test.
func (p *process) start(name string, args ...string) {
	p.t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("testdb: start %s: %v", name, err)
	}
	p.cmd = cmd
	p.stopped = make(chan struct{})
	go func() { cmd.Wait(); close(p.stopped) }()
}

// stop sends sig (and SIGCONT: a paused process acts on SIGTERM only once
// it runs) and waits for the process to exit, killing it after a minute.
func (p *process) stop(sig syscall.Signal) {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	p.cmd.Process.Signal(sig)
	p.cmd.Process.Signal(syscall.SIGCONT)
	select {
	case <-p.stopped:
	case <-time.After(time.Minute):
		p.cmd.Process.Kill()
		<-p.stopped
	}
	p.cmd = nil
}

// StartProcess starts name with args as a private server of the test: it
// dies with the test binary, even when that is killed, and is killed when
// the test ends. It fails the test when name cannot start.
func StartProcess(t testing.TB, name string, args ...string) {
	t.Helper()
	p := &process{t: t}
	p.start(name, args...)
	t.Cleanup(func() { p.stop(syscall.SIGKILL) })
}

// StartServer initialises a data directory and starts mariadbd on a free
// port. It fails the test when MariaDB's binaries are missing.
func StartServer(t testing.TB) *Server {
	t.Helper()
	s := &Server{process: process{t: t}, dir: mariadbDataDir(t), port: StablePort(t)}
	s.Start()
	t.Cleanup(func() { s.Stop(false) })
	return s
}

// DSN returns the DSN of database name on this server.
func (s *Server) DSN(name string) string {
	return fmt.Sprintf("root@tcp(127.0.0.1:%d)/%s?parseTime=true", s.port, name)
}

// Open creates database name on the server, migrates it and returns a pool
// on it, closed when the test ends. It fails the test on any error.
func (s *Server) Open(name string) *migrations.DB {
	s.t.Helper()
	ctx := context.Background()
	dsn := s.DSN(name)
	if err := migrations.CreateDatabase(ctx, dsn); err != nil {
		s.t.Fatalf("testdb: %v", err)
	}
	db, err := migrations.Open(ctx, dsn)
	if err != nil {
		s.t.Fatalf("testdb: %v", err)
	}
	s.t.Cleanup(func() { db.Close() })
	if err := migrations.Up(ctx, db); err != nil {
		s.t.Fatalf("testdb: %v", err)
	}
	return db
}

// StartMariaDB starts a private mariadbd (see StartProcess) on port of
// 127.0.0.1 with a new data directory, as StartServer does, and settings
// (mariadbd options, such as TLS certificates) after StartServer's. It
// does not wait for the server: a test that needs other settings knows best
// how to tell that it is up.
func StartMariaDB(t testing.TB, port int, settings ...string) {
	t.Helper()
	StartProcess(t, mariadbd, append(mariadbdArgs(mariadbDataDir(t), port), settings...)...)
}

// mariadbd is MariaDB's server binary on Debian.
const mariadbd = "/usr/sbin/mariadbd"

// mariadbDataDir initialises a MariaDB data directory, "data" in a new
// temporary folder, and returns the folder (mariadbd's socket and log go
// beside it).
func mariadbDataDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mariadb-install-db", "--no-defaults", "--datadir="+filepath.Join(dir, "data"),
		"--user="+currentUser(), "--auth-root-authentication-method=normal", "--skip-test-db").CombinedOutput()
	if err != nil {
		t.Fatalf("testdb: mariadb-install-db: %v\n%s", err, out)
	}
	return dir
}

// mariadbdArgs are the options of a private mariadbd serving the data in
// dir (from mariadbDataDir) on port.
func mariadbdArgs(dir string, port int) []string {
	return []string{"--no-defaults", "--datadir=" + filepath.Join(dir, "data"),
		"--port=" + strconv.Itoa(port), "--bind-address=127.0.0.1", "--socket=" + filepath.Join(dir, "sock"),
		"--user=" + currentUser(), "--innodb-buffer-pool-size=32M", "--skip-name-resolve",
		"--log-error=" + filepath.Join(dir, "error.log")}
}

// Start starts the server (again) and waits until it accepts connections.
func (s *Server) Start() {
	s.t.Helper()
	s.start(mariadbd, mariadbdArgs(s.dir, s.port)...)
	deadline := time.Now().Add(30 * time.Second)
	for {
		db, err := migrations.Open(context.Background(), s.DSN(""))
		if err == nil {
			db.Close()
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.dir, "error.log"))
			s.t.Fatalf("testdb: private mariadbd did not come up: %v\n%s", err, log)
		}
		time.Sleep(50 * time.Millisecond) // polling a starting server
	}
}

// Stop stops the server: with kill, by SIGKILL (a crash); otherwise by
// SIGTERM (a clean shutdown). It waits for the process to exit.
func (s *Server) Stop(kill bool) {
	if kill {
		s.stop(syscall.SIGKILL)
		return
	}
	s.stop(syscall.SIGTERM)
}

// Pause stops the server with SIGSTOP: it keeps its connections and its
// port open but answers nothing, as a hung database does, until Resume.
// It returns once every thread of the server is stopped: the signal is
// delivered asynchronously, and a statement sent before a busy thread
// stops could still be answered.
func (s *Server) Pause() {
	s.signal(syscall.SIGSTOP)
	WaitFor(s.t, 10*time.Second, "the paused mariadbd's threads to stop", func() bool { return allStopped(s.cmd.Process.Pid) })
}

// allStopped reports whether every thread of process pid is in the
// stopped state (T in /proc/PID/task/TID/stat).
func allStopped(pid int) bool {
	stats, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil || len(stats) == 0 {
		return false
	}
	for _, path := range stats {
		raw, err := os.ReadFile(path)
		// The state follows the command name, which is in parentheses.
		i := bytes.LastIndexByte(raw, ')')
		if err != nil || i < 0 || i+2 >= len(raw) || raw[i+2] != 'T' {
			return false
		}
	}
	return true
}

// Resume lets a paused server go on (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	if s.cmd == nil || s.cmd.Process == nil {
		s.t.Fatalf("testdb: signal %v: the private mariadbd is not running", sig)
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("testdb: signal %v to mariadbd: %v", sig, err)
	}
}

// Redis is a private redis-server a test may stop and start again.
type Redis struct {
	process
	port int
}

// StartRedis starts redis-server on a free port, keeping nothing on disk.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	r := &Redis{process: process{t: t}, port: StablePort(t)}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// Addr is the server's address.
func (r *Redis) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

// Start starts the server (again) and waits until it answers PING.
func (r *Redis) Start() {
	r.t.Helper()
	r.start("redis-server", "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	c := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			r.t.Fatalf("testdb: private redis-server did not come up")
		}
		time.Sleep(20 * time.Millisecond) // polling a starting server
	}
}

// Stop kills the server and waits for it to exit.
func (r *Redis) Stop() { r.stop(syscall.SIGKILL) }

// Queue returns an asynq queue name of the test's own, so tests sharing the
// machine's Redis never take each other's jobs.
func Queue(t testing.TB) string {
	return "t_" + sanitize(t.Name()) + "_" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
}

// RedisAddr is the machine's Redis tests use: TAGCOUNT_TEST_REDIS_ADDR or
// 127.0.0.1:6379. RequireRedis fails the test when it does not answer.
func RedisAddr() string {
	if v := os.Getenv("TAGCOUNT_TEST_REDIS_ADDR"); v != "" {
		return v
	}
	return "127.0.0.1:6379"
}

// RequireRedis fails the test (never skips) when the machine's Redis is down.
func RequireRedis(t testing.TB) string {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: RedisAddr()})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("Redis at %s is required: %v", RedisAddr(), err)
	}
	return RedisAddr()
}

// Listen returns a TCP listener on a free port of 127.0.0.1, closed when
// the test ends (closing it before is harmless).
func Listen(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StablePort returns a TCP port on 127.0.0.1 that was free a moment ago,
// below the kernel's ephemeral range: a server stopped and started again on
// it cannot find it taken meanwhile by the source port of an outgoing
// connection, as a port from FreePort can be.
func StablePort(t testing.TB) int {
	t.Helper()
	const from = 10000
	to := 32768 // Linux's default start of the ephemeral range
	if raw, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(raw)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				to = n
			}
		}
	}
	if to <= from+1000 {
		return FreePort(t)
	}
	for range 100 {
		port := from + rand.IntN(to-from)
		if l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			l.Close()
			return port
		}
	}
	t.Fatalf("testdb: no free port between %d and %d", from, to)
	return 0
}

func currentUser() string {
	if u := os.Getenv("USER"); u != "" && !strings.ContainsAny(u, " /") {
		return u
	}
	return "root"
}
