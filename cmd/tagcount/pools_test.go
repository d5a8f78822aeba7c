package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tagcount/tagcount/cmd/tagcount/httpapi"
	"github.com/tagcount/tagcount/counter"
	"github.com/tagcount/tagcount/migrations"
	"github.com/tagcount/tagcount/migrations/testdb"
)

// budget is the most connections the processes of roles open at their
// default pool sizes.
func budget(t *testing.T, roles ...string) int {
	t.Helper()
	total := 0
	for _, role := range roles {
		var s settings
		if _, err := parse(role, nil, io.Discard, &s, nil); err != nil {
			t.Fatal(err)
		}
		o := s.stackOptions()
		o.API, o.Worker, o.Counter = role == "api", role == "worker", role == "counter"
		p := o.withDefaults().Pools
		total += p.Main
		if o.API {
			total += p.Writes
		}
		if o.Worker {
			total += p.Jobs
		}
	}
	return total
}

func TestTwoReplicasOfEveryRoleFitMariaDBsDefaultMaxConnectionsWithRoomToSpare(t *testing.T) {
	t.Parallel()
	// MariaDB's default max_connections is 151; a third of it stays free
	// for migrations, operators, monitoring and a rolling deploy's extra
	// replica.
	const maxConnections, spare = 151, 50
	got := budget(t, "api", "api", "worker", "worker", "counter", "counter")
	if got > maxConnections-spare {
		t.Errorf("two replicas of every role open up to %d connections; want at most %d of %d", got, maxConnections-spare, maxConnections)
	}
	// docs/operations.md's table states these numbers.
	for role, want := range map[string]int{"api": 24, "worker": 18, "counter": 6} {
		if got := budget(t, role); got != want {
			t.Errorf("%s opens up to %d connections by default; docs/operations.md says %d", role, got, want)
		}
	}
}

func TestPoolFlagsRefuseNegativeSizesNamingTheFlag(t *testing.T) {
	t.Parallel()
	for _, flag := range []string{"--mysql-max-conns", "--mysql-writes-max-conns", "--mysql-jobs-max-conns",
		"--reconcile-read-max-conns", "--mysql-max-idle-conns"} {
		var s settings
		_, err := parse("api", []string{flag, "-1"}, io.Discard, &s, nil)
		if err == nil || !strings.Contains(err.Error(), flag) {
			t.Errorf("%s -1: %v; want an error naming the flag", flag, err)
		}
	}
}

func TestEveryPoolIsSizedAsConfiguredAndExportsItsStatistics(t *testing.T) {
	t.Parallel()
	db := testdb.New(t)
	st := testStack(t, stackOptions{Path: "new", ReconcileReadDSN: db.DSN,
		Pools: poolSettings{Main: 5, Writes: 3, Jobs: 6, ReconcileRead: 2, MaxIdle: 2, MaxIdleTime: time.Minute}})
	if got := st.DB.Stats().MaxOpenConnections; got != 5 {
		t.Errorf("main pool of %d connections; want --mysql-max-conns 5", got)
	}
	if st.edge.DBSlots != 5 {
		t.Errorf("the API has %d database slots; want the main pool's 5", st.edge.DBSlots)
	}
	got := map[string]float64{}
	if f := metricFamilies(t, st.URL+"/metrics")["go_sql_max_open_connections"]; f != nil {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "db_name" {
					got[l.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
	}
	for pool, want := range map[string]float64{"main": 5, "writes": 3, "jobs": 6, "reconcile_read": 2} {
		if got[pool] != want {
			t.Errorf(`go_sql_max_open_connections{db_name=%q} = %v; want %v (all: %v)`, pool, got[pool], want, got)
		}
	}
}

// The deployment docs/operations.md's budget is written for: two replicas
// of every role at the default pool sizes, on a MariaDB at its default
// max_connections, serving more authors at once than any pool has
// connections.
func TestTwoReplicasOfEveryRoleUnderLoadFitAMariaDBAtItsDefaultMaxConnections(t *testing.T) {
	t.Parallel()
	srv := testdb.StartServer(t) // --no-defaults: max_connections is MariaDB's default
	broker, err := counter.StartEmbeddedBroker(context.Background(), t.TempDir(), 4, counter.DefaultTopic, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	generous := httpapi.RateLimit{PerSecond: 10000, Burst: 10000}
	queue := testdb.Queue(t)
	base := stackOptions{MySQLDSN: srv.DSN("tagcount"), RedisAddr: testdb.RequireRedis(t), Queue: queue, Path: "new",
		AuthSecret: "test-secret-test-secret-test-secret", Brokers: broker.Addrs(), Partitions: 4, GroupID: queue,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Edge: httpapi.Edge{RateLimits: httpapi.RateLimits{Prefix: queue + ":", Timeout: time.Minute,
			Writes: generous, Reads: generous, Admin: generous, Anonymous: generous}}}
	var apis []*stack
	for i, role := range []string{"api", "api", "worker", "worker", "counter", "counter"} {
		o := base
		o.DataDir = t.TempDir()
		o.Create, o.Migrate = i == 0, i == 0
		o.API, o.Worker, o.Counter = role == "api", role == "worker", role == "counter"
		st, err := startStack(context.Background(), o)
		if err != nil {
			t.Fatalf("start %s: %v", role, err)
		}
		t.Cleanup(func() { st.Close() })
		if o.API {
			apis = append(apis, st)
		}
	}

	const authors, worksEach = 48, 6 // 48 authors at once: three times an API's 16 database slots
	var wg sync.WaitGroup
	errs := make(chan error, authors)
	for a := range authors {
		wg.Go(func() {
			st := apis[a%len(apis)]
			tok, _ := st.Auth.IssueToken(int64(1000+a), httpapi.RoleAuthor, time.Hour)
			for i := range worksEach {
				if err := createAndPost(st.URL, tok, fmt.Sprintf("Budget %d-%d", a, i)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	c := apis[1].client(t, 7, httpapi.RoleAuthor)
	testdb.WaitFor(t, time.Minute, "the counters to count every post", func() bool {
		status, tag, _ := c.do("GET", "/v1/tags?type=freeform&name=Connection%20Budget", nil)
		return status == 200 && tag["count"] == float64(authors*worksEach)
	})

	check, err := migrations.Open(context.Background(), srv.DSN(""))
	if err != nil {
		t.Fatal(err)
	}
	defer check.Close()
	var limit, name string
	var peak int
	if err := check.QueryRow("SELECT @@max_connections").Scan(&limit); err != nil || limit != "151" {
		t.Fatalf("the private server's max_connections is %s (%v); want MariaDB's default 151", limit, err)
	}
	if err := check.QueryRow("SHOW GLOBAL STATUS LIKE 'Max_used_connections'").Scan(&name, &peak); err != nil {
		t.Fatal(err)
	}
	// The six processes' pools, and this test's own connection.
	if want := budget(t, "api", "api", "worker", "worker", "counter", "counter") + 1; peak > want {
		t.Errorf("the server's peak was %d connections; the default pools of two replicas of every role promise at most %d", peak, want)
	}
	t.Logf("peak connections: %d of %s", peak, limit)
}

// createAndPost creates a draft through the API at base and posts it,
// returning an error unless both are accepted.
func createAndPost(base, token, title string) error {
	status, d, err := sendJSON(http.DefaultClient, "POST", base+"/v1/drafts", token, draftBody(title, "Connection Budget"))
	if err != nil || status != http.StatusCreated || id(d, "id") == "" {
		return fmt.Errorf("create %q: %d %v %v", title, status, d, err)
	}
	status, res, err := sendJSON(http.DefaultClient, "POST", base+"/v1/drafts/"+id(d, "id")+"/post", token, nil)
	if err != nil || status != http.StatusAccepted {
		return fmt.Errorf("post %q: %d %v %v", title, status, res, err)
	}
	return nil
}
