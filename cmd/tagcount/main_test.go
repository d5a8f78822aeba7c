package main

import (
	"bytes"
	"context"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

func TestEveryCommandPrintsItsFlagsAndSucceedsOnHelp(t *testing.T) {
	t.Parallel()
	for name := range commands {
		for _, help := range []string{"-h", "--help"} {
			var stdout, stderr bytes.Buffer
			if err := run(context.Background(), []string{name, help}, &stdout, &stderr); err != nil {
				t.Errorf("tagcount %s %s: %v, want success\n%s", name, help, err, stderr.String())
			}
			if !strings.Contains(stderr.String(), "usage: tagcount "+name) {
				t.Errorf("tagcount %s %s printed no usage:\n%s", name, help, stderr.String())
			}
		}
	}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"loadgen", "-h"}, &stdout, &stderr); err != nil || !strings.Contains(stderr.String(), "-concurrency") {
		t.Errorf("tagcount loadgen -h: %v; the flags are not listed:\n%s", err, stderr.String())
	}
}

func TestUnknownFlagsAndCommandsStillFail(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"loadgen", "--no-such-flag"}, {"version", "extra"}, {"no-such-command"}, {},
		{"archive"}, {"archive", "no-such-step"}, {"wrangle", "--mysql-dsn", "x"}} {
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), args, &stdout, &stderr); err == nil {
			t.Errorf("tagcount %q succeeded, want an error", args)
		}
	}
}

func TestVersionPrintsTheModuleAndGoVersion(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &stdout, &stderr); err != nil {
		t.Fatalf("tagcount version: %v\n%s", err, stderr.String())
	}
	for _, want := range []string{"github.com/tagcount/tagcount", runtime.Version()} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("tagcount version does not say %q:\n%s", want, stdout.String())
		}
	}
}

func TestVersionShowsTheRevisionWhenTheBuildRecordedIt(t *testing.T) {
	t.Parallel()
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/tagcount/tagcount", Version: "v1.2.3"},
		Settings: []debug.BuildSetting{
			{Key: "-trimpath", Value: "true"}, {Key: "vcs", Value: "git"},
			{Key: "vcs.revision", Value: "71e202bc18cd79ad1fdae643e90aae04fb6f1b2d"},
			{Key: "vcs.time", Value: "2026-12-02T03:05:32Z"}, {Key: "vcs.modified", Value: "true"},
		}}
	got := versionText(bi)
	for _, want := range []string{"v1.2.3", "go1.26.8", "vcs.revision  71e202bc18cd79ad1fdae643e90aae04fb6f1b2d", "vcs.time      2026-12-02T03:05:32Z", "vcs.modified  true"} {
		if !strings.Contains(got, want) {
			t.Errorf("version text lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "trimpath") {
		t.Errorf("version text shows build flags:\n%s", got)
	}
}

// background is a tagcount command a test runs in the background.
type background struct {
	name   string
	cancel context.CancelFunc
	done   chan error
}

// startCommand runs `tagcount args...` in the background with stdout (which
// it closes, if it can be closed, once the command returns) and stderr
// discarded. The test ends it with stop.
func startCommand(t *testing.T, stdout io.Writer, args ...string) *background {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	b := &background{name: args[0], cancel: cancel, done: make(chan error, 1)}
	go func() {
		b.done <- run(ctx, args, stdout, io.Discard)
		if c, ok := stdout.(io.Closer); ok {
			c.Close()
		}
	}()
	return b
}

// failIfStopped fails t if the command has already returned.
func (b *background) failIfStopped(t *testing.T) {
	t.Helper()
	select {
	case err := <-b.done:
		t.Fatalf("%s stopped: %v", b.name, err)
	default:
	}
}

// stop ends the command's context, as SIGTERM does, and fails t unless it
// then returns nil within a minute.
func (b *background) stop(t *testing.T) {
	t.Helper()
	b.cancel()
	select {
	case err := <-b.done:
		if err != nil {
			t.Fatalf("%s after its context ended: %v", b.name, err)
		}
	case <-time.After(time.Minute):
		t.Fatalf("%s did not stop within a minute of its context ending", b.name)
	}
}

// defaultStackOptions returns the stack options of `tagcount api` run with
// no flags (and no TAGCOUNT_ environment the test sets).
func defaultStackOptions(t *testing.T) stackOptions {
	t.Helper()
	var s settings
	if _, err := parse("api", nil, io.Discard, &s, nil); err != nil {
		t.Fatal(err)
	}
	return s.stackOptions()
}
