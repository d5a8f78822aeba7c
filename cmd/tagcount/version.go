package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
)

// runVersion prints the module's path and version, the Go version it was
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

// versionText formats bi as aligned "name  value" lines.
func versionText(bi *debug.BuildInfo) string {
	rows := [][2]string{{"module", bi.Main.Path}, {"version", bi.Main.Version}, {"go", bi.GoVersion}}
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
