package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/tagcount/tagcount/migrations/testdb"
	"github.com/tagcount/tagcount/poster"
)

// Set TAGCOUNT_QUEUES_SCREENSHOT to a file name to keep the test's
// screenshot of the queue UI (docs/queues.png is one).
const queuesScreenshotEnv = "TAGCOUNT_QUEUES_SCREENSHOT"

func TestQueuesCommandShowsThePostingQueueInABrowser(t *testing.T) {
	t.Parallel()
	chromium := requireTool(t, "chromium", "chromium")
	redisAddr := testdb.RequireRedis(t)
	queue := testdb.Queue(t)
	enqueuePostingJobs(t, redisAddr, queue, 3)

	addr := fmt.Sprintf("127.0.0.1:%d", testdb.FreePort(t))
	var stdout testdb.Buffer
	queues := startCommand(t, &stdout, "queues", "--redis-addr", redisAddr, "--queues-addr", addr, "--queue", queue,
		"--log-level", "error")
	base := "http://" + addr
	testdb.WaitFor(t, 30*time.Second, "the queue UI to answer", func() bool {
		queues.failIfStopped(t)
		res, err := http.Get(base + "/")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	})
	if want := base + "/queues/" + queue; !strings.Contains(stdout.String(), want) {
		t.Errorf("queues printed %q; want the queue's URL %s", stdout.String(), want)
	}
	if pending := queuePending(t, base, queue); pending != 3 {
		t.Errorf("the UI's API shows %d pending jobs in %s, want 3", pending, queue)
	}

	// The page is rendered by JavaScript: only a browser shows what an
	// operator sees.
	page := base + "/queues/" + queue + "?status=pending"
	dom := runChromium(t, chromium, "--dump-dom", page)
	for _, want := range []string{queue, poster.TypeSyncDraft} {
		if !bytes.Contains(dom, []byte(want)) {
			t.Errorf("the rendered queue page does not show %q:\n%.2000s", want, dom)
		}
	}
	shot := filepath.Join(t.TempDir(), "queues.png")
	runChromium(t, chromium, "--screenshot="+shot, page)
	png, err := os.ReadFile(shot)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("no PNG screenshot of the queue page: %v", err)
	}
	if keep := os.Getenv(queuesScreenshotEnv); keep != "" {
		if err := os.WriteFile(keep, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	queues.stop(t)
}

// enqueuePostingJobs puts n posting jobs in queue, where no worker takes
// them, and removes the queue when the test ends.
func enqueuePostingJobs(t *testing.T, redisAddr, queue string, n int) {
	t.Helper()
	opt := asynq.RedisClientOpt{Addr: redisAddr}
	c := asynq.NewClient(opt)
	defer c.Close()
	for i := range n {
		if _, err := c.Enqueue(poster.NewSyncDraftTask(int64(1001+i), 1, queue, poster.DefaultMaxRetry)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		in := asynq.NewInspector(opt)
		defer in.Close()
		in.DeleteQueue(queue, true)
	})
}

// queuePending reads the queue's pending job count from the UI's API.
func queuePending(t *testing.T, base, queue string) int {
	t.Helper()
	res, err := http.Get(base + "/api/queues/" + queue)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body struct {
		Current struct {
			Pending int `json:"pending"`
		} `json:"current"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatalf("GET /api/queues/%s: %d %v", queue, res.StatusCode, err)
	}
	return body.Current.Pending
}

// runChromium runs headless Chromium on url with a private profile and no
// network but the page's own, and returns what it printed.
func runChromium(t *testing.T, chromium string, mode, url string) []byte {
	t.Helper()
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(), "--window-size=1280,900", "--virtual-time-budget=5000", mode, url}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, chromium, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", mode, err, stderr.String())
	}
	return stdout.Bytes()
}
