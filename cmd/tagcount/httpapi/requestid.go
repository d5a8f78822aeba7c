package httpapi

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net/http"

	"github.com/tagcount/tagcount/poster"
)

// RequestIDHeader carries a request's id, from the client or made here, on
// the request and on every response.
const RequestIDHeader = "X-Request-ID"

// maxRequestIDLen bounds a client's request id; a longer one is replaced.
const maxRequestIDLen = 128

// RequestID returns the id of the request ctx belongs to, or "" outside a
// request. It is poster's: the id rides with the change into the posting
// job, its announcements and the counter's log lines.
func RequestID(ctx context.Context) string { return poster.RequestID(ctx) }

// withRequestID takes the client's X-Request-ID when it is safe to log and
// echo (1 to 128 visible ASCII characters) or makes a new one, sets it on
// the response before anything can fail, and puts it in the request's
// context for the logs and for the work the request starts.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(RequestIDHeader)
		if !validRequestID(id) {
			id = rand.Text()
		}
		w.Header().Set(RequestIDHeader, id)
		next.ServeHTTP(w, r.WithContext(poster.WithRequestID(r.Context(), id)))
	})
}

func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

// LogHandler returns h adding request_id to every record logged with a
// context that carries one (the *Context methods of slog.Logger): a
// request's, or a posting job's, so every line a request causes, in any
// package and process, can be found by the id its client saw.
func LogHandler(h slog.Handler) slog.Handler {
	if _, ok := h.(requestIDHandler); ok {
		return h
	}
	return requestIDHandler{h}
}

type requestIDHandler struct{ slog.Handler }

func (h requestIDHandler) Handle(ctx context.Context, rec slog.Record) error {
	if id := RequestID(ctx); id != "" {
		rec.AddAttrs(slog.String("request_id", id))
	}
	return h.Handler.Handle(ctx, rec)
}

func (h requestIDHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return requestIDHandler{h.Handler.WithAttrs(attrs)}
}

func (h requestIDHandler) WithGroup(name string) slog.Handler {
	return requestIDHandler{h.Handler.WithGroup(name)}
}
