// Command tagcount runs the tagcount service and its tools. It only wires:
// every subcommand parses its settings (flags with TAGCOUNT_* environment
// fallbacks) and hands them to the domain packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

type command struct {
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
	summary string
}

var commands = map[string]command{
	"dev":       {runDev, "run everything in one process on the local MariaDB and Redis, with embedded Kafka"},
	"api":       {runAPI, "serve the HTTP API"},
	"worker":    {runWorker, "run background jobs: posting, requeueing, sweeping the outbox, nightly reconcile"},
	"counter":   {runCounter, "consume tag-use events and keep tag counts"},
	"migrate":   {runMigrate, "apply (up), roll back (down) or show (version) the schema"},
	"token":     {runToken, "print a bearer token for local use"},
	"reconcile": {runReconcile, "find and correct drifted counts now"},
	"wrangle":   {runWrangle, "tag wrangling maintenance: `wrangle rekey` re-keys tags by the current identity rule"},
	"rollout":   {runRollout, "start, watch, pause, resume or abort the guarded rollout of the new posting path; its history"},
	"loadgen":   {runLoadgen, "drive production-like posting load and compare the paths"},
	"archive":   {runArchive, "`archive build`: fill a database with an archive-shaped set of works and drifted counts"},
	"broker":    {runBroker, "run the embedded Kafka-protocol broker on its own (development, soak tests)"},
	"queues":    {runQueues, "serve the job queue's web UI (asynqmon) for operators; keep it private"},
	"version":   {runVersion, "print the version and build information"},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "tagcount:", err)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "tagcount: unknown command %q\n\n", args[0])
		usage(stderr)
		return errUsage
	}
	err := cmd.run(ctx, args[1:], stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		// -h, -help and --help printed the command's flags as asked.
		return nil
	}
	return err
}

// oneStep checks that args start with want, the one step of command (such
// as `archive build`), whose flags follow. With no step it prints the
// step's usage (purpose says what it does) and returns errUsage; asked for
// help, it prints it and returns flag.ErrHelp; with any other step it says
// so and returns errUsage.
func oneStep(args []string, command, want, purpose string, stderr io.Writer) error {
	usage := func() {
		fmt.Fprintf(stderr, "usage: tagcount %s %s [flags]\n\n%s\nRun `tagcount %s %s -h` for its flags.\n", command, want, purpose, command, want)
	}
	switch {
	case len(args) == 0:
		usage()
		return errUsage
	case args[0] == "-h" || args[0] == "--help" || args[0] == "-help":
		usage()
		return flag.ErrHelp
	case args[0] != want:
		fmt.Fprintf(stderr, "tagcount %s: unknown step %q\n\n", command, args[0])
		usage()
		return errUsage
	}
	return nil
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: tagcount <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun `tagcount <command> -h` for a command's flags; every flag also reads TAGCOUNT_<FLAG_NAME>.")
}
