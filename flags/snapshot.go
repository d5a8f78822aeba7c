package flags

import (
	"strconv"
	"time"

	"github.com/Unleash/unleash-client-go/v4/api"
)

// Snapshot is what one instance evaluates now.
type Snapshot struct {
	// Source is where the definitions in use came from: "server", "backup",
	// "bootstrap" or "default" (nothing: every flag is off).
	Source string `json:"source"`
	// LastSync is the last successful fetch from the server; zero if none.
	LastSync time.Time `json:"last_sync,omitzero"`
	// ServerURL is the Unleash API URL, empty when running without a server.
	ServerURL       string      `json:"server_url"`
	RefreshInterval string      `json:"refresh_interval,omitempty"`
	InstanceID      string      `json:"instance_id"`
	Flags           []FlagState `json:"flags"`
}

// FlagState is one named flag as the current definitions have it.
type FlagState struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	PerAuthor   bool   `json:"per_author"`
	// Default applies when the flag is not Defined.
	Default bool `json:"default"`
	// Defined says whether the current definitions have the flag at all.
	Defined bool `json:"defined"`
	// Enabled is the flag's on/off toggle in its environment; strategies
	// decide who gets it only while it is on.
	Enabled bool `json:"enabled"`
	// RolloutPercent is the share of authors (or, for an instance-wide flag,
	// of instances) that get the flag: 0 when undefined or disabled, 100 for
	// an enabled flag whose strategies let everyone in, the flexibleRollout
	// percentage otherwise. Nil when constraints make it depend on more than
	// the rollout.
	RolloutPercent *float64 `json:"rollout_percent"`
	Stickiness     string   `json:"stickiness,omitempty"`
	Strategies     []string `json:"strategies"`
	// Value is what an instance-wide flag evaluates to on this instance;
	// omitted for per-author flags.
	Value *bool `json:"value,omitempty"`
}

// Snapshot returns the named flags as this instance evaluates them now.
func (c *Client) Snapshot() Snapshot {
	st := c.store.state()
	snap := Snapshot{
		Source:     st.source,
		LastSync:   st.lastSync,
		ServerURL:  redactURL(c.cfg.URL),
		InstanceID: c.cfg.InstanceID,
		Flags:      make([]FlagState, 0, len(definitions)),
	}
	if c.cfg.URL != "" {
		snap.RefreshInterval = c.cfg.RefreshInterval.String()
	}
	for _, d := range definitions {
		fs := FlagState{
			Name:        d.Name,
			Description: d.Description,
			PerAuthor:   d.PerAuthor,
			Default:     d.Default,
			Strategies:  []string{},
		}
		if f, ok := st.features[d.Name]; ok {
			fs.Defined = true
			fs.Enabled = f.Enabled
			fs.RolloutPercent, fs.Stickiness = rollout(f)
			for _, s := range f.Strategies {
				fs.Strategies = append(fs.Strategies, s.Name)
			}
		} else {
			zero := 0.0
			fs.RolloutPercent = &zero
		}
		if !d.PerAuthor {
			v := c.evaluate(d.Name, 0)
			fs.Value = &v
		}
		snap.Flags = append(snap.Flags, fs)
	}
	return snap
}

// rollout summarises who gets an enabled flag; see FlagState.RolloutPercent.
func rollout(f api.Feature) (*float64, string) {
	pct := func(v float64) *float64 { return &v }
	if !f.Enabled {
		return pct(0), ""
	}
	if len(f.Strategies) == 0 {
		return pct(100), ""
	}
	best, stickiness, known := 0.0, "", true
	for _, s := range f.Strategies {
		if len(s.Constraints) > 0 || len(s.Segments) > 0 {
			known = false
			continue
		}
		switch s.Name {
		case "default":
			best = 100
		case "flexibleRollout":
			p, ok := parsePercent(s.Parameters["rollout"])
			if !ok {
				continue
			}
			if p >= best {
				best = p
				stickiness, _ = s.Parameters["stickiness"].(string)
			}
		default:
			known = false
		}
	}
	if !known && best < 100 {
		return nil, stickiness
	}
	return pct(best), stickiness
}

func parsePercent(v any) (float64, bool) {
	switch v := v.(type) {
	case float64:
		return v, true
	case string:
		f, err := strconv.ParseFloat(v, 64)
		return f, err == nil
	}
	return 0, false
}
