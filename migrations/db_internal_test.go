package migrations

import (
	"testing"
	"time"
)

func TestOpenSetsDriverTimeoutsTheDSNLeavesOut(t *testing.T) {
	t.Parallel()
	cfg, err := openConfig("root@tcp(127.0.0.1:3306)/tagcount")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ReadTimeout != DefaultIOTimeout || cfg.WriteTimeout != DefaultIOTimeout || cfg.Timeout == 0 {
		t.Errorf("DSN without timeouts: read %v, write %v, dial %v; want %v, %v and a dial timeout",
			cfg.ReadTimeout, cfg.WriteTimeout, cfg.Timeout, DefaultIOTimeout, DefaultIOTimeout)
	}
	cfg, err = openConfig("root@tcp(127.0.0.1:3306)/tagcount?readTimeout=5m&writeTimeout=7s&timeout=2s")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ReadTimeout != 5*time.Minute || cfg.WriteTimeout != 7*time.Second || cfg.Timeout != 2*time.Second {
		t.Errorf("DSN with timeouts: read %v, write %v, dial %v; want the DSN's 5m, 7s, 2s",
			cfg.ReadTimeout, cfg.WriteTimeout, cfg.Timeout)
	}
}

func TestIDListOfNoIDsMatchesNothingAndIsValidSQL(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		ids  []int64
		want string
	}{
		{nil, "SELECT id FROM t WHERE id IN (NULL)"},
		{[]int64{7}, "SELECT id FROM t WHERE id IN (7)"},
		{[]int64{3, -1, 12}, "SELECT id FROM t WHERE id IN (3,-1,12)"},
	} {
		if got := IDList("SELECT id FROM t WHERE id IN (", c.ids, ")"); got != c.want {
			t.Errorf("IDList(%v) = %q; want %q", c.ids, got, c.want)
		}
	}
}
