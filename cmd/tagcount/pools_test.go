package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

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
	res, err := apiClient(t).Get(st.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	if f := families["go_sql_max_open_connections"]; f != nil {
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
