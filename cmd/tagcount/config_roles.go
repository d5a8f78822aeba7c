package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
)

// roles is a set of the commands that read the shared settings.
type roles uint8

const (
	roleAPI roles = 1 << iota
	roleWorker
	roleCounter
	roleDev
	roleMigrate
	roleQueues

	// services are the long-running roles; each has an HTTP listener for
	// probes and metrics, logs, and a shutdown sequence.
	services = roleAPI | roleWorker | roleCounter | roleDev
)

// roleNames maps a command name (parse's name) to its role.
var roleNames = map[string]roles{
	"api": roleAPI, "worker": roleWorker, "counter": roleCounter,
	"dev": roleDev, "migrate": roleMigrate, "queues": roleQueues,
}

// flagRoles is the one table of which commands accept which shared
// setting: a command lists and accepts a flag only when its role is in the
// flag's set. A flag registered in settings but missing here belongs to
// every service role, so a new flag works before it is sorted in (add it
// here to narrow it).
var flagRoles = map[string]roles{
	"http-addr": services, "admin-addr": services, "shutdown-delay": services, "shutdown-timeout": services | roleQueues,
	"log-level": services | roleQueues | roleMigrate, "log-format": services | roleQueues | roleMigrate,
	"mysql-dsn": services | roleMigrate, "mysql-ca-file": services | roleMigrate,
	"redis-addr": services | roleQueues, "redis-url": services | roleQueues, "redis-ca-file": services | roleQueues,
	"queue":    roleAPI | roleWorker | roleDev | roleQueues,
	"data-dir": services,
	// Accepted by every service so one command line template serves all.
	"auth-secret":        services,
	"max-token-lifetime": roleAPI | roleDev,
	"auth-issuer":        roleAPI | roleDev, "auth-audience": roleAPI | roleDev,
	"posting-path": roleAPI | roleWorker | roleDev,
	// The API runs reconciles over HTTP; the worker runs the nightly one.
	"reconcile-at": roleWorker | roleDev, "reconcile-read-dsn": roleAPI | roleWorker | roleDev,
	"reconcile-read-max-conns": roleAPI | roleWorker | roleDev,
	"job-concurrency":          roleWorker | roleDev, "job-poll": roleWorker | roleDev,
	"wrangle-rows-per-tx": roleWorker | roleDev, "wrangle-rows-per-second": roleWorker | roleDev,
	"bulk-after":            roleAPI | roleWorker | roleDev,
	"counter-flush-timeout": roleCounter | roleDev,
	// Only the worker and the counter ensure topics (stack.startKafka).
	"kafka-create-topics": roleWorker | roleCounter | roleDev,
	"quota-drafts":        roleAPI | roleDev, "quota-new-tags-per-day": roleAPI | roleDev,
	// The request edge (deadlines, shedding, rate limits) is the API's.
	"request-timeout": roleAPI | roleDev, "max-in-flight": roleAPI | roleDev, "queue-wait": roleAPI | roleDev,
	"body-bytes-in-flight": roleAPI | roleDev, "trusted-proxies": roleAPI | roleDev,
	"rate-limit-prefix": roleAPI | roleDev, "rate-limit-timeout": roleAPI | roleDev,
	"rate-limit-writes": roleAPI | roleDev, "rate-limit-writes-burst": roleAPI | roleDev,
	"rate-limit-reads": roleAPI | roleDev, "rate-limit-reads-burst": roleAPI | roleDev,
	"rate-limit-admin": roleAPI | roleDev, "rate-limit-admin-burst": roleAPI | roleDev,
	"rate-limit-anonymous": roleAPI | roleDev, "rate-limit-anonymous-burst": roleAPI | roleDev,
}

// rolesOf returns the roles that accept the shared setting name.
func rolesOf(name string) roles {
	if r, ok := flagRoles[name]; ok {
		return r
	}
	return services
}

// registerFor registers into fs the shared settings the command name
// accepts; the others keep their defaults in s. It returns every shared
// setting's name, the ones of other roles included.
func (s *settings) registerFor(fs *flag.FlagSet, name string) []string {
	all := flag.NewFlagSet("all", flag.ContinueOnError)
	s.register(all)
	var names []string
	all.VisitAll(func(f *flag.Flag) {
		names = append(names, f.Name)
		if rolesOf(f.Name)&roleNames[name] != 0 {
			fs.Var(f.Value, f.Name, f.Usage)
		}
	})
	return names
}

// envName is the environment variable a flag is also read from.
func envName(flagName string) string {
	return "TAGCOUNT_" + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(flagName))
}

// checkEnv looks for TAGCOUNT_ variables in environ that name no flag in
// known (this command's flags and every shared setting, so a variable set
// for all roles is not flagged in one). It logs a warning naming each, with
// the closest known name when one is near; with strict it returns an error
// naming them instead.
func checkEnv(environ, known []string, strict bool, log *slog.Logger) error {
	byEnv := make(map[string]bool, len(known))
	for _, k := range known {
		byEnv[envName(k)] = true
	}
	var unknown []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "TAGCOUNT_") && !byEnv[k] {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	var msgs []string
	for _, k := range unknown {
		attrs := []any{"variable", k}
		msg := k
		if near := nearest(k, byEnv); near != "" {
			attrs = append(attrs, "did_you_mean", near)
			msg += " (did you mean " + near + "?)"
		}
		msgs = append(msgs, msg)
		if !strict {
			log.Warn("unknown TAGCOUNT_ environment variable, ignored", attrs...)
		}
	}
	if strict && len(unknown) > 0 {
		return fmt.Errorf("--strict-env: unknown environment variables: %s", strings.Join(msgs, ", "))
	}
	return nil
}

// nearest returns the name in names at most 3 edits from k, the closest
// (alphabetically first of equals), or "" when none is that close.
func nearest(k string, names map[string]bool) string {
	best, bestD := "", 4
	for n := range names {
		if d := editDistance(k, n); d < bestD || (d == bestD && n < best) {
			best, bestD = n, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// settingsLogger returns the logger parse warns with: the one the settings
// ask for when the command has settings, else text on stderr.
func settingsLogger(stderr io.Writer, s *settings) *slog.Logger {
	if s == nil {
		return slog.New(slog.NewTextHandler(stderr, nil))
	}
	return newLogger(stderr, s.LogLevel, s.LogFormat)
}
