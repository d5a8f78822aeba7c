package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/tagcount/tagcount/cmd/tagcount/loadgen"
)

func TestLoadgenSpikeScenarioReportsEverySecondsBacklogAndPostsEveryWorkWithExactCounts(t *testing.T) {
	t.Parallel()
	lr := runLoadgenCmd(t, "--scenario", "spike", "--paths", "new", "--rate", "8",
		"--spike-before", "2s", "--spike-for", "2s", "--spike-after", "3s")
	var rep loadgen.SpikeReport
	b, err := os.ReadFile(lr.JSON)
	if err == nil {
		err = json.Unmarshal(b, &rep)
	}
	if err != nil {
		t.Fatal(err)
	}
	res := rep.Result
	if res == nil || res.Works.Started == 0 || res.Works.Completed != res.Works.Started-res.Works.Failed || res.Check == nil || !res.Check.Exact {
		t.Fatalf("spike result %+v; want every work started posted and exact counts", res)
	}
	phases := map[string]int{}
	sampled := 0
	for _, s := range rep.Seconds {
		phases[s.Phase]++
		if s.Backlog >= 0 {
			sampled++
		}
	}
	if phases[loadgen.PhaseBefore] == 0 || phases[loadgen.PhaseSpike] == 0 || phases[loadgen.PhaseAfter] == 0 || sampled == 0 {
		t.Errorf("seconds by phase %v, %d with a backlog sample; want all three phases and samples", phases, sampled)
	}
	if len(rep.Targets) != 3 || !strings.Contains(lr.Stdout, "backlog gone after the spike") {
		t.Errorf("targets %+v; printed:\n%s", rep.Targets, lr.Stdout)
	}
	if left := loadgenDatabases(t, lr.RunID); len(left) != 0 {
		t.Errorf("the spike left its database behind: %v", left)
	}
}
