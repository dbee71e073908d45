package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The fosite-based OAuth2 server of ./oauthserver, run as a process on
// loopback: an implementation of RFC 6749, 7523, 7009 and 7662 that is not
// the project's own fake. See oauthserver/README.md.

var (
	oauthServerOnce sync.Once
	oauthServerBin  string
	oauthServerErr  error
)

// buildOAuthServer builds ./oauthserver once per test run, into the run's
// temporary plugin directory, which TestMain removes. Nothing registers it
// as a plugin.
func buildOAuthServer(t testing.TB) string {
	t.Helper()
	oauthServerOnce.Do(func() {
		out := filepath.Join(pluginDir, "oauthserver-e2e")
		if oauthServerErr = goBuild(".", "-o", out, "./oauthserver").Run(); oauthServerErr == nil {
			oauthServerBin = out
		}
	})
	require.NoError(t, oauthServerErr, "build ./oauthserver")
	return oauthServerBin
}

// oauthReady is the server's ready file.
type oauthReady struct {
	BaseURL               string `json:"base_url"`
	TokenEndpoint         string `json:"token_endpoint"`
	RevocationEndpoint    string `json:"revocation_endpoint"`
	IntrospectionEndpoint string `json:"introspection_endpoint"`
	AdminClientsURL       string `json:"admin_clients_url"`
	CAFile                string `json:"ca_file"`
}

// oauthServer is one running server, with the secrets of the clients it
// was started with.
type oauthServer struct {
	t       testing.TB
	info    oauthReady
	caPEM   string
	hc      *http.Client
	secrets map[string]string
	logPath string
}

// startOAuthServer runs the server with three secret clients: "basic"
// (client_secret_basic), "post" (client_secret_post) and "introspector",
// which the tests introspect with. private_key_jwt clients are registered
// later, once a mount has made its keys.
func startOAuthServer(t *testing.T) *oauthServer {
	t.Helper()
	bin := buildOAuthServer(t)
	dir := t.TempDir()
	s := &oauthServer{t: t, secrets: map[string]string{}, logPath: filepath.Join(dir, "oauthserver.log")}
	var clients []map[string]any
	for _, c := range []struct{ id, method string }{{"basic", "client_secret_basic"}, {"post", "client_secret_post"}, {"introspector", "client_secret_basic"}} {
		s.secrets[c.id] = randomSecret(t)
		clients = append(clients, map[string]any{"id": c.id, "secret": s.secrets[c.id], "token_endpoint_auth_method": c.method})
	}
	blob, err := json.Marshal(map[string]any{"clients": clients})
	require.NoError(t, err)
	clientsFile := filepath.Join(dir, "clients.json")
	require.NoError(t, os.WriteFile(clientsFile, blob, 0o600))
	ready := filepath.Join(dir, "ready.json")

	logFile, err := os.Create(s.logPath)
	require.NoError(t, err)
	// The server outlives this call; the cleanup below ends it.
	cmd := exec.Command(bin, "-clients", clientsFile, "-ca-out", filepath.Join(dir, "ca.pem"), //nolint:noctx // see above
		"-ready-file", ready, "-token-lifetime", "120s")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = logFile.Close() // the server is gone; the log stays readable
		close(exited)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			// The server logs no secret, assertion or token (its README).
			data, _ := os.ReadFile(s.logPath)
			t.Logf("oauthserver log:\n%s", maskSensitive(string(data)))
		}
	})

	eventually(t, 30*time.Second, "the oauthserver's ready file", func() bool {
		data, err := os.ReadFile(ready)
		return err == nil && json.Unmarshal(data, &s.info) == nil
	})
	ca, err := os.ReadFile(s.info.CAFile)
	require.NoError(t, err)
	s.caPEM = string(ca)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(ca))
	s.hc = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	return s
}

func randomSecret(t testing.TB) string {
	b := make([]byte, 24)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return base64.RawURLEncoding.EncodeToString(b)
}

// pluginConfig is an oauth2 mount's config for a client of this server.
func (s *oauthServer) pluginConfig(clientID, method string) map[string]any {
	cfg := map[string]any{
		"provider":          "oauth2",
		"token_url":         s.info.TokenEndpoint,
		"client_id":         clientID,
		"token_auth_method": method,
		"ca_cert":           s.caPEM,
	}
	if secret, ok := s.secrets[clientID]; ok {
		cfg["client_secret"] = secret
	}
	return cfg
}

// admin PUTs body to an admin endpoint (no authentication: loopback test
// infrastructure).
func (s *oauthServer) admin(path string, body []byte) {
	s.t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPut, s.info.AdminClientsURL+path, bytes.NewReader(body))
	require.NoError(s.t, err)
	resp, err := s.hc.Do(req)
	require.NoError(s.t, err)
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	require.Equal(s.t, http.StatusNoContent, resp.StatusCode, "admin PUT %s: %s", path, msg)
}

// registerJWTClient registers a private_key_jwt client with its keys
// inline (jwks) or at a jwks_uri.
func (s *oauthServer) registerJWTClient(id, alg string, jwks json.RawMessage, jwksURI string) {
	s.t.Helper()
	spec := map[string]any{"id": id, "token_endpoint_auth_method": "private_key_jwt", "token_endpoint_auth_signing_alg": alg}
	if jwks != nil {
		spec["jwks"] = jwks
	}
	if jwksURI != "" {
		spec["jwks_uri"] = jwksURI
	}
	blob, err := json.Marshal(spec)
	require.NoError(s.t, err)
	s.admin("/"+id, blob)
}

// introspect says whether the server holds the token active (RFC 7662),
// asked as the introspection client: a revocation's 200 proves nothing.
func (s *oauthServer) introspect(token string) map[string]any {
	s.t.Helper()
	form := url.Values{"token": {token}, "token_type_hint": {"access_token"}}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, s.info.IntrospectionEndpoint, strings.NewReader(form.Encode()))
	require.NoError(s.t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("introspector", s.secrets["introspector"])
	resp, err := s.hc.Do(req)
	require.NoError(s.t, err)
	defer resp.Body.Close()
	var body map[string]any
	require.NoError(s.t, json.NewDecoder(resp.Body).Decode(&body))
	require.Equal(s.t, http.StatusOK, resp.StatusCode, "introspection: %v", body)
	return body
}

func (s *oauthServer) active(token string) bool {
	return s.introspect(token)["active"] == true
}

// log is the server's request log so far.
func (s *oauthServer) log() string {
	data, err := os.ReadFile(s.logPath)
	require.NoError(s.t, err)
	return string(data)
}

// jwksUnauthenticated GETs a mount's JWKS over Vault's HTTP API without a
// Vault token, as an authorization server given its URL fetches it.
func (v *vaultServer) jwksUnauthenticated(mount string) (int, string, []byte) {
	v.t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, v.addr+"/v1/"+mount+"/jwks", nil)
	require.NoError(v.t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(v.t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(v.t, err)
	return resp.StatusCode, resp.Header.Get("Content-Type"), body
}

// credsToken reads creds through the HTTP API, returning the token and
// the lease id, or the error status.
func (v *vaultServer) credsToken(mount, role string) (token, leaseID string, err error) {
	code, body := v.api(http.MethodGet, mount+"/creds/"+role, nil)
	if code != http.StatusOK {
		return "", "", fmt.Errorf("creds read: HTTP %d: %v", code, body["errors"])
	}
	data, _ := body["data"].(map[string]any)
	token, _ = data["access_token"].(string)
	leaseID, _ = body["lease_id"].(string)
	return token, leaseID, nil
}
