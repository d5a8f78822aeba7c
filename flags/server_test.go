package flags

// These tests run a real unleash-server (see package unleashtest, which
// installs it on first use).

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/tagcount/tagcount/flags/unleashtest"
	"github.com/tagcount/tagcount/migrations/testdb"
)

const refresh = 200 * time.Millisecond

// propagation is how long a test waits for a change made through the admin
// API to reach a client (the server's own revision polling, about a second,
// plus the refresh interval usually): generous, it only catches a change
// that never arrives.
const propagation = 15 * time.Second

func serverClient(t *testing.T, srv *unleashtest.Server, cfg Config) *Client {
	t.Helper()
	cfg.URL = srv.APIURL()
	cfg.Token = srv.ClientToken()
	if cfg.RefreshInterval == 0 {
		cfg.RefreshInterval = refresh
	}
	if cfg.BackupDir == "" {
		cfg.BackupDir = t.TempDir()
	}
	c := newClient(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), propagation)
	defer cancel()
	if err := c.WaitForSync(ctx); err != nil {
		t.Fatalf("no sync from %s: %v", srv.APIURL(), err)
	}
	return c
}

// rolloutIs reports whether the client's definitions have the flag enabled
// at the given flexibleRollout percentage.
func rolloutIs(c *Client, name string, percent float64) bool {
	f, ok := c.store.state().features[name]
	if !ok {
		return false
	}
	got, _ := rollout(f)
	return got != nil && *got == percent
}

func TestRolloutFlipAndRollbackReachEveryAuthor(t *testing.T) {
	t.Parallel()
	srv := unleashtest.Shared(t)
	srv.CreateFlag(t, NewPostingPath) // 0%
	c := serverClient(t, srv, Config{})
	const authors = 200

	// The server's 0% replaces the embedded bootstrap's 100%.
	testdb.WaitFor(t, propagation, "0% from the server", func() bool { return countOn(c, NewPostingPath, authors) == 0 })
	if s := c.Snapshot(); s.Source != SourceServer || s.LastSync.IsZero() {
		t.Errorf("snapshot source %q last sync %v, want server and a time", s.Source, s.LastSync)
	}

	srv.SetRollout(t, NewPostingPath, 100)
	start := time.Now()
	testdb.WaitFor(t, propagation, "100% reaching every author", func() bool {
		return countOn(c, NewPostingPath, authors) == authors
	})
	t.Logf("0%% -> 100%% reached the client in %v (refresh %v)", time.Since(start), refresh)

	srv.SetRollout(t, NewPostingPath, 0) // roll back
	start = time.Now()
	testdb.WaitFor(t, propagation, "rollback to 0% reaching every author", func() bool {
		return countOn(c, NewPostingPath, authors) == 0
	})
	t.Logf("100%% -> 0%% reached the client in %v", time.Since(start))

	srv.SetRollout(t, NewPostingPath, 100)
	testdb.WaitFor(t, propagation, "100% again", func() bool { return countOn(c, NewPostingPath, authors) == authors })
	srv.SetEnabled(t, NewPostingPath, false) // the other way to roll back
	testdb.WaitFor(t, propagation, "disabling reaching every author", func() bool {
		return countOn(c, NewPostingPath, authors) == 0
	})
}

func TestHalfRolloutSplitsAuthorsStickily(t *testing.T) {
	t.Parallel()
	const flag = "tagcount.test.half-rollout"
	srv := unleashtest.Shared(t)
	srv.CreateFlag(t, flag)
	srv.SetRollout(t, flag, 50)
	a := serverClient(t, srv, Config{InstanceID: "a"})
	b := serverClient(t, srv, Config{InstanceID: "b"})
	for _, c := range []*Client{a, b} {
		testdb.WaitFor(t, propagation, "50% on the client", func() bool { return rolloutIs(c, flag, 50) })
	}

	const authors = 1000
	first := make([]bool, authors+1)
	on := 0
	for id := 1; id <= authors; id++ {
		first[id] = a.Enabled(flag, int64(id))
		if first[id] {
			on++
		}
	}
	if on < 400 || on > 600 {
		t.Errorf("50%% rollout is on for %d of %d authors, want 400-600", on, authors)
	}
	t.Logf("50%% rollout: on for %d of %d authors", on, authors)
	for round := 0; round < 3; round++ {
		for id := 1; id <= authors; id++ {
			if got := a.Enabled(flag, int64(id)); got != first[id] {
				t.Fatalf("round %d: author %d got %v, earlier %v", round, id, got, first[id])
			}
			if got := b.Enabled(flag, int64(id)); got != first[id] {
				t.Fatalf("author %d: client b says %v, client a %v", id, got, first[id])
			}
		}
	}
}

func TestStoppedServerKeepsTheLastFetchedState(t *testing.T) {
	t.Parallel()
	srv := unleashtest.Start(t) // its own: this test kills it
	srv.CreateFlag(t, NewPostingPath)
	srv.SetRollout(t, NewPostingPath, 100)
	srv.CreateFlag(t, TierDeferral)
	srv.SetRollout(t, TierDeferral, 100)
	srv.SetEnabled(t, TierDeferral, false) // unlike the bootstrap, which has it on
	// ReconcileApply is not on the server at all: off, although the bootstrap has it on.

	backupDir := filepath.Join(t.TempDir(), "unleash")
	c := serverClient(t, srv, Config{BackupDir: backupDir})
	const authors = 200
	testdb.WaitFor(t, propagation, "the server's state", func() bool {
		return countOn(c, NewPostingPath, authors) == authors && !c.TierDeferral() && !c.ReconcileApply() &&
			c.Snapshot().Source == SourceServer
	})

	srv.Stop()
	errs := syncErrors(c)
	testdb.WaitFor(t, propagation, "a failed fetch after the server stopped", func() bool { return syncErrors(c) > errs })
	if got := countOn(c, NewPostingPath, authors); got != authors {
		t.Errorf("after the server stopped NewPostingPath is on for %d of %d authors, want all", got, authors)
	}
	if c.TierDeferral() || c.ReconcileApply() {
		t.Error("after the server stopped a flag reverted to the bootstrap")
	}
	if s := c.Snapshot(); s.Source != SourceServer || s.LastSync.IsZero() {
		t.Errorf("snapshot source %q last sync %v, want server with a sync time", s.Source, s.LastSync)
	}

	// A restart while the server is still down starts from the backup the
	// first client wrote, as long as the bootstrap is older than it.
	boot := writeFile(t, t.TempDir(), "bootstrap.json", embeddedBootstrap, time.Now().Add(-time.Hour))
	restarted := newClient(t, Config{URL: srv.APIURL(), Token: srv.ClientToken(), RefreshInterval: refresh,
		BackupDir: backupDir, BootstrapFile: boot})
	if s := restarted.Snapshot(); s.Source != SourceBackup {
		t.Errorf("restarted client's source = %q, want backup", s.Source)
	}
	if got := countOn(restarted, NewPostingPath, authors); got != authors || restarted.TierDeferral() || restarted.ReconcileApply() {
		t.Errorf("restarted client: NewPostingPath on for %d, TierDeferral %v, ReconcileApply %v; want the server's last state",
			got, restarted.TierDeferral(), restarted.ReconcileApply())
	}
}
