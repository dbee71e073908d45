package fakeupstream

import (
	"io"
	"net/http"
	"strings"
	"time"
)

// Fault changes how the fake answers requests to one endpoint. At most one
// of DropAfterProcessing, Redirect, BodyBytes, Malformed, Body and Status
// answers as it normally does (after Delay, with RetryAfter).
type Fault struct {
	// Status, when set, answers with this HTTP status and an OAuth2 error
	// body with Code (default "server_error") and Description (default
	// "injected fault"). Code and Description go out as they are, of any
	// length or content, as a misbehaving server might send them.
	Status      int
	Code        string
	Description string
	// Body, when set, is sent as is (with Status, or 200).
	Body string
	// Malformed answers 200 with a body that is not JSON.
	Malformed bool
	// BodyBytes, when > 0, answers with Status (or 200) and a JSON object
	// of this many bytes that holds nothing but padding, as a server that
	// sends something other than a token answer.
	BodyBytes int
	// Redirect, when set, answers with Status (or 307 Temporary Redirect,
	// which keeps the method and the body) and this Location.
	Redirect string
	// RetryAfter, when set, goes out as the Retry-After header with
	// whatever answer the fault or the endpoint gives: delay-seconds
	// ("30") or an HTTP date (time.Now().Add(d).UTC().Format(http.TimeFormat)).
	RetryAfter string
	// DropAfterProcessing serves the request as normal, so whatever it
	// changes is changed (a secret created, a token issued), throws the
	// answer away and drops the connection: the client sees a network
	// error for a request that took effect, as after a crash or a cut
	// line between the server's commit and its answer.
	DropAfterProcessing bool
	// Then, when set, is called once the fault has applied: after the
	// answer was written, or, with DropAfterProcessing, after the request
	// was served and just before the connection drops. It runs on the
	// request's goroutine, outside the fake's lock, so a test can use it
	// to act at that exact point (crash a backend, cancel a context).
	Then func()
	// Delay waits this long first (or until the client gives up), then
	// answers as the other fields say, or normally when none is set.
	Delay time.Duration
	// After lets this many matching requests through before the fault
	// starts; Times is how many it hits (1 when 0, every one when < 0).
	After int
	Times int
}

type fault struct {
	Fault
	left int
}

// InjectFault adds a fault on one endpoint; faults apply in the order added.
func (s *Server) InjectFault(ep Endpoint, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	left := f.Times
	if left == 0 {
		left = 1
	}
	s.faults[ep] = append(s.faults[ep], &fault{Fault: f, left: left})
}

// ClearFaults drops every fault not yet used up.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = map[Endpoint][]*fault{}
}

// begin counts a request, runs the hook and returns the fault that
// applies to it, if any.
func (s *Server) begin(ep Endpoint, r *http.Request) *Fault {
	s.mu.Lock()
	s.hits[ep]++
	hook := s.hook
	var active *Fault
	remaining := s.faults[ep][:0]
	for _, f := range s.faults[ep] {
		switch {
		case active != nil:
		case f.After > 0:
			f.After--
		default:
			cp := f.Fault
			active = &cp
			if f.left > 0 {
				f.left--
			}
		}
		if f.left != 0 {
			remaining = append(remaining, f)
		}
	}
	s.faults[ep] = remaining
	s.mu.Unlock()

	if hook != nil {
		hook(ep, r)
	}
	return active
}

// writePadding writes a JSON object of n bytes (or the smallest one, when
// n is less) in pieces, so a fake asked for megabytes never holds them.
func writePadding(w http.ResponseWriter, n int) {
	const head, tail = `{"padding":"`, `"}`
	_, _ = io.WriteString(w, head)
	chunk := strings.Repeat("x", 32<<10)
	for left := n - len(head) - len(tail); left > 0; left -= len(chunk) {
		if _, err := io.WriteString(w, chunk[:min(left, len(chunk))]); err != nil {
			return // the client stopped reading
		}
	}
	_, _ = io.WriteString(w, tail)
}

// discardWriter takes a handler's answer and throws it away.
type discardWriter struct{ header http.Header }

func (d discardWriter) Header() http.Header         { return d.header }
func (d discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d discardWriter) WriteHeader(int)             {}
