package main

import (
	"bytes"
	"context"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
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
	for _, args := range [][]string{{"loadgen", "--no-such-flag"}, {"version", "extra"}, {"no-such-command"}, {}} {
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
