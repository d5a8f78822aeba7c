package rollout

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tagcount/tagcount/flags"
)

// UnleashAdmin sets a flag's rollout percentage through the Unleash admin
// API: the flexibleRollout strategy of the flag in one environment (created
// when the flag has none), keeping its stickiness and groupId, so the same
// authors stay in as the percentage grows.
type UnleashAdmin struct {
	// URL is the Unleash API URL the service's client uses, e.g.
	// http://unleash:4242/api.
	URL string
	// Token is an admin API token.
	Token string
	// Project and Environment default to "default" and "production".
	Project, Environment string
	// Flag defaults to flags.NewPostingPath.
	Flag string
	// Timeout bounds each request; default 10s.
	Timeout time.Duration
}

// ErrUnleash is wrapped by the errors of UnleashAdmin's calls that the
// server answered with a failure.
var ErrUnleash = errors.New("unleash admin API")

type strategy struct {
	ID         string         `json:"id,omitempty"`
	Name       string         `json:"name"`
	Parameters map[string]any `json:"parameters"`
}

// SetPercent implements Setter. It returns an error wrapping ErrUnleash
// when the server refuses (bad token, no such flag or environment), or the
// transport's error.
func (u UnleashAdmin) SetPercent(ctx context.Context, percent int) error {
	if percent < 0 || percent > 100 {
		return fmt.Errorf("rollout percentage %d is not in 0-100", percent)
	}
	flag, base := u.flag(), u.strategiesPath()
	var list []strategy
	if err := u.call(ctx, http.MethodGet, base, nil, &list); err != nil {
		return err
	}
	params := map[string]any{"stickiness": "userId", "groupId": flag}
	for _, s := range list {
		if s.Name != "flexibleRollout" {
			continue
		}
		for k, v := range s.Parameters {
			params[k] = v
		}
		params["rollout"] = strconv.Itoa(percent)
		return u.call(ctx, http.MethodPut, base+"/"+url.PathEscape(s.ID), strategy{Name: s.Name, Parameters: params}, nil)
	}
	params["rollout"] = strconv.Itoa(percent)
	return u.call(ctx, http.MethodPost, base, strategy{Name: "flexibleRollout", Parameters: params}, nil)
}

// Percent returns the rollout percentage of the flag's flexibleRollout
// strategy, or an error as SetPercent does (one wrapping ErrUnleash when
// the flag has no such strategy).
func (u UnleashAdmin) Percent(ctx context.Context) (int, error) {
	var list []strategy
	if err := u.call(ctx, http.MethodGet, u.strategiesPath(), nil, &list); err != nil {
		return 0, err
	}
	for _, s := range list {
		if s.Name == "flexibleRollout" {
			return strconv.Atoi(fmt.Sprint(s.Parameters["rollout"]))
		}
	}
	return 0, fmt.Errorf("%w: %s has no flexibleRollout strategy", ErrUnleash, u.flag())
}

func (u UnleashAdmin) flag() string { return cmp.Or(u.Flag, flags.NewPostingPath) }

func (u UnleashAdmin) strategiesPath() string {
	return "/projects/" + url.PathEscape(cmp.Or(u.Project, "default")) + "/features/" + url.PathEscape(u.flag()) +
		"/environments/" + url.PathEscape(cmp.Or(u.Environment, "production")) + "/strategies"
}

func (u UnleashAdmin) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, cmp.Or(u.Timeout, 10*time.Second))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(u.URL, "/")+"/admin"+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", u.Token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%w: %s %s: %s: %.300s", ErrUnleash, method, path, resp.Status, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// LocalFlags sets the rollout percentage in the definitions a flags client
// evaluates when it runs without an Unleash server (on the shipped
// bootstrap, as `tagcount dev` does), so plans work in development. The
// change lives in that process: a restart starts from the bootstrap again,
// and a runner sets the running plan's step again.
type LocalFlags struct {
	Client *flags.Client
	Flag   string // default flags.NewPostingPath
}

// SetPercent implements Setter; it returns flags.ErrHasServer when the
// client fetches from a server (use UnleashAdmin there).
func (l LocalFlags) SetPercent(_ context.Context, percent int) error {
	return l.Client.SetLocalRollout(cmp.Or(l.Flag, flags.NewPostingPath), percent)
}
