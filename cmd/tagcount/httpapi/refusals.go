package httpapi

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
)

// Listener returns ln with each connection's answers passed through
// unchanged but for the refusals net/http writes itself, before any handler
// runs: a header block over the server's MaxHeaderBytes (431) and a request
// that is not valid HTTP (400). Those it writes as plain text, with no way
// to configure them; through this listener they are in the API's error
// shape (headers_too_large, malformed_request) with a request id, as every
// other refusal is. The API's server must serve on it.
func Listener(ln net.Listener) net.Listener { return refusalListener{ln} }

type refusalListener struct{ net.Listener }

func (l refusalListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return refusalConn{c}, nil
}

type refusalConn struct{ net.Conn }

// Write sends p, or the error-shaped form of p when p is one of net/http's
// own refusals, which it writes in a single Write.
func (c refusalConn) Write(p []byte) (int, error) {
	if out, ok := shapeRefusal(p); ok {
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// CloseWrite lets net/http half-close after a refusal, as it does on a bare
// TCP connection, so the client reads the answer before the connection
// resets.
func (c refusalConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// plainRefusal is what follows the status line of every refusal net/http
// writes itself (server.go's errorHeaders).
const plainRefusal = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

// shapeRefusal returns the error-shaped answer for p when p is a whole
// plain-text refusal of net/http ("HTTP/1.1 431 Request Header Fields Too
// Large" + plainRefusal + its text), and false for anything else.
func shapeRefusal(p []byte) ([]byte, bool) {
	statusLine, text, ok := bytes.Cut(p, []byte(plainRefusal))
	if !ok || !bytes.HasPrefix(statusLine, []byte("HTTP/1.1 4")) || bytes.ContainsAny(statusLine, "\r\n") {
		return nil, false
	}
	status, err := strconv.Atoi(string(statusLine[len("HTTP/1.1 ") : len("HTTP/1.1 ")+3]))
	if err != nil || !bytes.HasPrefix(text, statusLine[len("HTTP/1.1 "):len("HTTP/1.1 ")+3]) {
		return nil, false
	}
	e := errorDetail{Code: "malformed_request", Message: "the request is not valid HTTP/1.1"}
	if status == http.StatusRequestHeaderFieldsTooLarge {
		e = errorDetail{Code: "headers_too_large", Message: "the request's header block is larger than the limit"}
	}
	body, _ := json.Marshal(errorBody{Error: e})
	return fmt.Appendf(nil, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n%s: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s\n",
		status, http.StatusText(status), RequestIDHeader, rand.Text(), len(body)+1, body), true
}
