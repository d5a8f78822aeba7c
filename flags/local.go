package flags

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/Unleash/unleash-client-go/v4/api"
)

// ErrHasServer is returned by SetLocalRollout when the client fetches its
// definitions from an Unleash server, which alone decides them then.
var ErrHasServer = errors.New("flags: definitions come from the Unleash server; change them there")

// SetLocalRollout sets the named flag on, with one flexibleRollout strategy
// at percent (0-100; stickiness and groupId kept, or userId and the flag's
// name), in the definitions this client evaluates. It is for a client
// without a server (the bootstrap, as in development): the change lasts
// until the process ends. It returns ErrHasServer when a URL is configured
// and an error for a percentage out of range.
func (c *Client) SetLocalRollout(name string, percent int) error {
	if c.cfg.URL != "" {
		return ErrHasServer
	}
	if percent < 0 || percent > 100 {
		return fmt.Errorf("flags: rollout %d%% is not in 0-100", percent)
	}
	s := c.store
	s.mu.Lock()
	defer s.mu.Unlock()
	f, _ := s.data[name].(api.Feature)
	params := api.ParameterMap{"stickiness": "userId", "groupId": name}
	for _, st := range f.Strategies {
		if st.Name == "flexibleRollout" {
			for k, v := range st.Parameters {
				params[k] = v
			}
			break
		}
	}
	params["rollout"] = strconv.Itoa(percent)
	f.Name, f.Enabled = name, true
	f.Strategies = []api.Strategy{{Name: "flexibleRollout", Parameters: params}}
	// A fresh map: the client may be iterating over the old one.
	data := make(map[string]any, len(s.data)+1)
	for k, v := range s.data {
		data[k] = v
	}
	data[name] = repair(f)
	s.data = data
	return nil
}
