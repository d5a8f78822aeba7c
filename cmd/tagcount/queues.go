package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/hibiken/asynqmon"
)

// defaultQueuesAddr keeps the queue UI on the local machine unless an
// operator chooses otherwise: it shows jobs' payloads and can delete jobs.
const defaultQueuesAddr = "127.0.0.1:8081"

// runQueues runs `tagcount queues`: the asynqmon web UI over the job queue's
// Redis, for operators to see pending, retrying and archived posting jobs.
// It serves until ctx ends (SIGTERM), then lets requests in flight finish.
// It returns an error when Redis does not answer or the address is taken.
func runQueues(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var (
		s        settings
		addr     string
		readOnly bool
	)
	if _, err := parse("queues", args, stderr, &s, func(fs *flag.FlagSet) {
		fs.StringVar(&addr, "queues-addr", defaultQueuesAddr, "listen address of the queue UI; it shows job payloads and deletes jobs, so keep it on localhost or behind auth")
		fs.BoolVar(&readOnly, "queues-read-only", false, "show the queues without the controls that change them")
	}); err != nil {
		return err
	}
	log := newLogger(stderr, s.LogLevel, s.LogFormat)
	ropt, err := s.Redis.options()
	if err != nil {
		return err
	}
	if err := pingRedis(ctx, s.Redis, ropt); err != nil {
		return err
	}
	ui := asynqmon.New(asynqmon.Options{RedisConnOpt: asynqOpt(ropt), ReadOnly: readOnly})
	defer ui.Close()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: ui, ReadHeaderTimeout: 10 * time.Second}
	// Said before serving (the listener already holds the address), so
	// whoever the UI answers has been told where it is.
	fmt.Fprintf(stdout, "tagcount queues: the job queue UI is at http://%s/queues/%s (Redis %s)\n", ln.Addr(), s.Queue, ropt.Addr)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down", "role", "queues")
	sctx, cancel := context.WithTimeout(context.Background(), s.ShutdownTimeout)
	defer cancel()
	err = srv.Shutdown(sctx)
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
