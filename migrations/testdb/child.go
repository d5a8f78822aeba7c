package testdb

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/tagcount/tagcount/migrations"
)

// A child is a helper process a test starts and may kill: this test binary
// again, running only the helper test named, with its config in the
// environment.
const (
	childTestEnv   = "TAGCOUNT_TEST_CHILD"
	childConfigEnv = "TAGCOUNT_TEST_CHILD_CONFIG"
)

// StartChild starts the helper test named test of this test binary as a
// child process, handing it cfg (as JSON; the helper reads it with
// ChildConfig). The child writes to this process's stderr, dies with the
// test binary even when that is killed, and is killed at cleanup.
func StartChild(t testing.TB, test string, cfg any) *exec.Cmd {
	t.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatalf("testdb: child config: %v", err)
	}
	child := exec.Command(os.Args[0], "-test.run=^"+test+"$")
	child.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	child.Env = append(os.Environ(), childTestEnv+"="+test, childConfigEnv+"="+string(raw))
	child.Stdout, child.Stderr = os.Stderr, os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { child.Process.Kill(); child.Wait() })
	return child
}

// ChildConfig reads into cfg the config StartChild handed this process. A
// helper test calls it first: run as an ordinary test (not as a child), it
// is skipped.
func ChildConfig(t testing.TB, cfg any) {
	t.Helper()
	if os.Getenv(childTestEnv) != t.Name() {
		t.Skip("a helper process that another test starts")
	}
	if err := json.Unmarshal([]byte(os.Getenv(childConfigEnv)), cfg); err != nil {
		t.Fatalf("testdb: child config: %v", err)
	}
}

// ChildDB opens the database at dsn for a helper process (its config's
// DSN, read with ChildConfig first); it fails t when it cannot. The pool is
// left open: a child runs until it is killed or its test ends.
func ChildDB(t testing.TB, dsn string) *migrations.DB {
	t.Helper()
	db, err := migrations.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	return db
}
