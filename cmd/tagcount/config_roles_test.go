package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/migrations/testdb"
)

func TestSettingsRefuseInvalidValuesNamingTheFlag(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		flag string
	}{
		{[]string{"--log-level", "verbose"}, "--log-level"},
		{[]string{"--log-format", "xml"}, "--log-format"},
		{[]string{"--max-in-flight", "0"}, "--max-in-flight"},
		{[]string{"--posting-path", "fast"}, "--posting-path"},
	} {
		var s settings
		_, err := parse("api", c.args, io.Discard, &s, nil)
		if err == nil || !strings.Contains(err.Error(), c.flag) {
			t.Errorf("api %q: %v, want an error naming %s", c.args, err, c.flag)
		}
	}
	for _, c := range []struct {
		role string
		args []string
		flag string
	}{
		{"worker", []string{"--job-concurrency", "0"}, "--job-concurrency"},
		{"counter", []string{"--kafka-partitions", "-1"}, "--kafka-partitions"},
		{"counter", []string{"--counter-flush-timeout", "0s"}, "--counter-flush-timeout"},
		{"worker", []string{"--job-poll", "0s"}, "--job-poll"},
		{"api", []string{"--shutdown-delay", "-1s"}, "--shutdown-delay"},
	} {
		var s settings
		_, err := parse(c.role, c.args, io.Discard, &s, nil)
		if err == nil || !strings.Contains(err.Error(), c.flag) {
			t.Errorf("%s %q: %v, want an error naming %s", c.role, c.args, err, c.flag)
		}
	}
}

func TestEachRoleAcceptsAndListsOnlyItsFlags(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		role        string
		has, hasNot []string
	}{
		{"api", []string{"auth-secret", "rate-limit-writes", "mysql-dsn", "http-addr"}, []string{"job-concurrency", "counter-flush-timeout", "reconcile-at"}},
		{"worker", []string{"job-concurrency", "reconcile-at", "kafka-brokers"}, []string{"auth-issuer", "rate-limit-writes", "counter-flush-timeout"}},
		{"counter", []string{"counter-flush-timeout", "kafka-brokers"}, []string{"auth-issuer", "job-concurrency", "queue"}},
		{"migrate", []string{"mysql-dsn", "force"}, []string{"redis-addr", "kafka-brokers", "http-addr"}},
		{"queues", []string{"redis-addr", "queue", "queues-addr"}, []string{"mysql-dsn", "kafka-brokers"}},
		{"dev", []string{"auth-secret", "job-concurrency", "counter-flush-timeout"}, nil},
	} {
		var stderr bytes.Buffer
		if err := run(context.Background(), []string{c.role, "-h"}, io.Discard, &stderr); err != nil {
			t.Fatalf("%s -h: %v", c.role, err)
		}
		for _, f := range c.has {
			if !strings.Contains(stderr.String(), "  -"+f+" ") {
				t.Errorf("%s -h does not list -%s:\n%s", c.role, f, stderr.String())
			}
		}
		for _, f := range c.hasNot {
			if strings.Contains(stderr.String(), "  -"+f+" ") {
				t.Errorf("%s -h lists -%s, which it does not use", c.role, f)
			}
			err := run(context.Background(), []string{c.role, "--" + f, "1"}, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), f) {
				t.Errorf("%s --%s: %v, want it refused as not defined", c.role, f, err)
			}
		}
	}
}

func TestEveryFlagInTheRoleTableExists(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("all", flag.ContinueOnError)
	new(settings).register(fs)
	for name := range flagRoles {
		if fs.Lookup(name) == nil {
			t.Errorf("flagRoles names %q, which is no setting", name)
		}
	}
}

func TestUnknownEnvIsWarnedAboutWithASuggestionOrRefusedWhenStrict(t *testing.T) {
	t.Parallel()
	environ := []string{"TAGCOUNT_KAFKA_BROKRS=k:9092", "TAGCOUNT_MYSQL_DSN=x", "TAGCOUNT_TOTALLY_UNRELATED=1", "HOME=/root"}
	known := []string{"kafka-brokers", "mysql-dsn"}
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	if err := checkEnv(environ, known, false, log); err != nil {
		t.Fatalf("not strict: %v, want warnings only", err)
	}
	out := logs.String()
	for _, want := range []string{`"variable":"TAGCOUNT_KAFKA_BROKRS","did_you_mean":"TAGCOUNT_KAFKA_BROKERS"`, `"variable":"TAGCOUNT_TOTALLY_UNRELATED"}`, `"level":"WARN"`} {
		if !strings.Contains(out, want) {
			t.Errorf("warnings lack %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "TAGCOUNT_MYSQL_DSN\"") || strings.Contains(out, "HOME") {
		t.Errorf("a known or foreign variable was warned about:\n%s", out)
	}
	err := checkEnv(environ, known, true, log)
	if err == nil || !strings.Contains(err.Error(), "TAGCOUNT_KAFKA_BROKRS (did you mean TAGCOUNT_KAFKA_BROKERS?)") ||
		!strings.Contains(err.Error(), "--strict-env") {
		t.Errorf("strict: %v, want an error naming the variable and the suggestion", err)
	}
}

func TestStrictEnvIsAcceptedByEveryCommand(t *testing.T) {
	t.Parallel()
	// The commands on the shared parser (reconcile, wrangle and others
	// parse their own way).
	for _, name := range []string{"api", "worker", "counter", "dev", "migrate", "queues", "token", "version", "loadgen", "broker"} {
		var stderr bytes.Buffer
		if err := run(context.Background(), []string{name, "-h"}, io.Discard, &stderr); err != nil || !strings.Contains(stderr.String(), "-strict-env") {
			t.Errorf("%s -h: %v; -strict-env not listed", name, err)
		}
	}
}

func TestWithoutTopicCreationAMissingTopicIsRefusedByName(t *testing.T) {
	t.Parallel()
	redisAddr := testdb.RequireRedis(t)
	db := testdb.New(t)
	b, err := counter.StartEmbeddedBroker(context.Background(), t.TempDir(), 1, "present-topic", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	brokers := strings.Join(b.Addrs(), ",")
	if err := counter.VerifyTopic(context.Background(), b.Addrs(), "present-topic"); err != nil {
		t.Errorf("VerifyTopic of an existing topic: %v", err)
	}
	err = run(context.Background(), []string{"worker", "--mysql-dsn", db.DSN, "--redis-addr", redisAddr,
		"--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0", "--kafka-brokers", brokers,
		"--kafka-topic", "missing-topic", "--kafka-create-topics=false"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "missing-topic") {
		t.Fatalf("worker with a missing topic and --kafka-create-topics=false: %v; want an error naming missing-topic", err)
	}
	if err := counter.VerifyTopic(context.Background(), b.Addrs(), "missing-topic"); err == nil {
		t.Errorf("the worker created missing-topic although told not to")
	}
}
