package flags

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// transport sits between the Unleash client and the network.
//
//   - Offline (no URL) it answers every request itself, so the client's fetch
//     loop finds "not modified" and nothing leaves the process.
//   - It counts fetches by result for the metrics, and notes a successful
//     "not modified" as a sync.
//   - The client registers itself synchronously inside NewClient, which would
//     make New wait for an unreachable server; registration only feeds the
//     Unleash UI, so it is sent in the background and answered at once.
type transport struct {
	base    http.RoundTripper
	offline bool
	bg      context.Context // cancelled by Close
	timeout time.Duration
	log     *slog.Logger
	metrics *metrics
	store   *store
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	path := req.URL.Path
	switch {
	case t.offline:
		if req.Body != nil {
			req.Body.Close()
		}
		return synthetic(req, http.StatusNotModified), nil
	case req.Method == http.MethodPost && strings.HasSuffix(path, "/client/register"):
		go t.register(req)
		return synthetic(req, http.StatusAccepted), nil
	case req.Method == http.MethodGet && strings.HasSuffix(path, "/client/features"):
		resp, err := t.base.RoundTrip(req)
		switch {
		case err != nil:
			t.metrics.syncs.WithLabelValues("error").Inc()
		case resp.StatusCode == http.StatusNotModified:
			t.metrics.syncs.WithLabelValues("not_modified").Inc()
			t.store.touch(time.Now())
		case resp.StatusCode >= 200 && resp.StatusCode < 300:
			t.metrics.syncs.WithLabelValues("ok").Inc()
		default:
			t.metrics.syncs.WithLabelValues("error").Inc()
		}
		return resp, err
	default:
		return t.base.RoundTrip(req)
	}
}

func (t *transport) register(req *http.Request) {
	ctx, cancel := context.WithTimeout(t.bg, t.timeout)
	defer cancel()
	resp, err := t.base.RoundTrip(req.Clone(ctx))
	if err != nil {
		t.log.Debug("unleash client registration failed", "err", err)
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		t.log.Warn("unleash client registration refused", "status", resp.StatusCode)
	}
}

func synthetic(req *http.Request, status int) *http.Response {
	return &http.Response{
		Status:     http.StatusText(status),
		StatusCode: status,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     http.Header{},
		Body:       http.NoBody,
		Request:    req,
	}
}
