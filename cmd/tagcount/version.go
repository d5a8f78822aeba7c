package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// The release build stamps these (deploy/build-image.sh):
//
//	go build -ldflags "-X main.version=v1.2.3 -X main.commit=<sha> -X main.built=<RFC 3339 UTC>"
//
// They are empty in a build that was not stamped; stamp then falls back on
// what the Go toolchain recorded.
var (
	version string
	commit  string
	built   string
)

// buildStamp is what a running binary says it is.
type buildStamp struct{ Version, Commit, Built string }

// stamp returns the -ldflags values, each falling back on the build
// information the toolchain recorded (the module version, vcs.revision,
// vcs.time) and then on "unknown", so the build-info gauge always has its
// three labels.
func stamp(bi *debug.BuildInfo) buildStamp {
	var recorded buildStamp
	if bi != nil {
		recorded.Version = bi.Main.Version
		for _, st := range bi.Settings {
			switch st.Key {
			case "vcs.revision":
				recorded.Commit = st.Value
			case "vcs.time":
				recorded.Built = st.Value
			}
		}
	}
	return buildStamp{Version: cmp.Or(version, recorded.Version, "unknown"),
		Commit: cmp.Or(commit, recorded.Commit, "unknown"), Built: cmp.Or(built, recorded.Built, "unknown")}
}

// buildInfo returns the tagcount_build_info gauge: always 1, its labels
// saying which build runs, so a dashboard sees a rollout's versions side by
// side.
func buildInfo() prometheus.Collector {
	bi, _ := debug.ReadBuildInfo()
	st := stamp(bi)
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "tagcount_build_info",
		Help:        "Always 1; the labels name the running build's version, commit and build time.",
		ConstLabels: prometheus.Labels{"version": st.Version, "commit": st.Commit, "built": st.Built}})
	g.Set(1)
	return g
}

// runVersion prints the stamped version, commit and build time (when the
// build was stamped), the module's path and version, the Go version it was
// built with and, when the build recorded them, the VCS revision, its time
// and whether the work tree had uncommitted changes. It fails when the
// binary carries no build information.
func runVersion(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if _, err := parse("version", args, stderr, nil, nil); err != nil {
		return err
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return errors.New("this binary carries no build information")
	}
	_, err := io.WriteString(stdout, versionText(bi))
	return err
}

// versionText formats bi, and the -ldflags stamp where set, as aligned
// "name  value" lines.
func versionText(bi *debug.BuildInfo) string {
	rows := [][2]string{{"module", bi.Main.Path}, {"version", cmp.Or(version, bi.Main.Version)}}
	if commit != "" {
		rows = append(rows, [2]string{"commit", commit})
	}
	if built != "" {
		rows = append(rows, [2]string{"built", built})
	}
	rows = append(rows, [2]string{"go", bi.GoVersion})
	if bi.Main.Sum != "" {
		rows = append(rows, [2]string{"sum", bi.Main.Sum})
	}
	// Stamped by `go build` in a VCS checkout (-buildvcs), not by go run or
	// go test.
	for _, key := range []string{"vcs", "vcs.revision", "vcs.time", "vcs.modified"} {
		for _, st := range bi.Settings {
			if st.Key == key && st.Value != "" {
				rows = append(rows, [2]string{key, st.Value})
			}
		}
	}
	var out string
	for _, r := range rows {
		out += fmt.Sprintf("%-13s %s\n", r[0], r[1])
	}
	return out
}
