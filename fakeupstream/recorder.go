package fakeupstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Recorder is an attacker's host: a TLS server that takes any request,
// keeps everything it carried (form, query and headers) and answers with a
// fixed status. Tests of the config writer's attacks point a mount at it and
// then look at what it received, and replay it at the real server.
type Recorder struct {
	srv    *httptest.Server
	status int

	mu       sync.Mutex
	received []Capture
}

// Capture is one request as the attacker's host saw it.
type Capture struct {
	Method string
	Path   string
	// Form is the query and the body's form values together.
	Form   url.Values
	Header http.Header
}

// StartRecorder runs an attacker's host that answers every request with
// status (400 invalid_request for any status >= 400, an empty JSON object
// otherwise).
func StartRecorder(status int) *Recorder {
	rec := &Recorder{status: status}
	rec.srv = httptest.NewTLSServer(http.HandlerFunc(rec.serve))
	return rec
}

func (rec *Recorder) serve(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	rec.mu.Lock()
	rec.received = append(rec.received, Capture{Method: r.Method, Path: r.URL.Path, Form: r.Form, Header: r.Header.Clone()})
	rec.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(rec.status)
	if rec.status >= http.StatusBadRequest {
		_, _ = w.Write([]byte(`{"error":"invalid_request"}`))
		return
	}
	_, _ = w.Write([]byte(`{}`))
}

// URL is the host's base URL (https).
func (rec *Recorder) URL() string { return rec.srv.URL }

// CACertPEM is the certificate to trust the host with, as ca_cert.
func (rec *Recorder) CACertPEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rec.srv.Certificate().Raw}))
}

// Close stops the host.
func (rec *Recorder) Close() { rec.srv.Close() }

// Received is every request the host got so far.
func (rec *Recorder) Received() []Capture {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	out := make([]Capture, len(rec.received))
	copy(out, rec.received)
	return out
}

// credentialFields are the form fields that carry a credential in an
// OAuth2 request of any kind the engine makes.
var credentialFields = []string{"client_assertion", "client_secret", "password", "refresh_token", "token", "access_token"}

// Credentials is every credential-bearing value the host received: form
// fields that carry one and Authorization headers.
func (rec *Recorder) Credentials() []string {
	var out []string
	for _, c := range rec.Received() {
		for _, f := range credentialFields {
			if v := c.Form.Get(f); v != "" {
				out = append(out, f+"="+v)
			}
		}
		if v := c.Header.Get("Authorization"); v != "" {
			out = append(out, "Authorization: "+v)
		}
	}
	return out
}

// Assertions is every client assertion the host received.
func (rec *Recorder) Assertions() []string {
	var out []string
	for _, c := range rec.Received() {
		if v := c.Form.Get("client_assertion"); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// ReplayAssertion is the attacker's next step: it presents assertion at the
// real token endpoint as the client, and says whether it bought a live
// token there.
func (s *Server) ReplayAssertion(ctx context.Context, clientID, assertion string) (bool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(s.caPEM) {
		return false, errors.New("the fake's CA does not parse")
	}
	hc := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"client_id":             {clientID},
		"client_assertion_type": {ClientAssertionType},
		"client_assertion":      {assertion},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.JWTTokenURL(), strings.NewReader(form.Encode()))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := hc.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return false, err
	}
	if resp.StatusCode != http.StatusOK {
		return false, nil
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &tok); err != nil {
		return false, fmt.Errorf("the token answer does not parse: %w", err)
	}
	return s.TokenLive(tok.AccessToken), nil
}
