package mapsindoors

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// asStored is the lease as Vault hands it back on revocation: its
// internal data went through JSON in Vault's lease storage and over the
// plugin's gRPC connection.
func asStored(t testing.TB, s *logical.Secret) *logical.Secret {
	t.Helper()
	blob, err := json.Marshal(s.InternalData)
	require.NoError(t, err)
	cp := *s
	cp.InternalData = map[string]any{}
	require.NoError(t, json.Unmarshal(blob, &cp.InternalData))
	return &cp
}

// closedPort is a loopback port nothing listens on.
func closedPort(t testing.TB) int {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}

// A lease whose token is logged out when it ends must end however the
// mount changed since it was issued, and whatever the upstream says about
// a token that is already gone; only a real failure makes Vault retry.
// Retrying the rest forever makes Vault mark the lease irrevocable, and
// `vault secrets disable` then fails.
func TestRevoke_LeasesEndWithoutTheConfigAndNeverStick(t *testing.T) {
	cases := []struct {
		name string
		// before runs between the read and the revocation; it may change
		// the lease as Vault would hand it back.
		before func(t *testing.T, e *testEnv, other *fakeupstream.Server, secret *logical.Secret)
		// retry is a failure Vault must retry; otherwise the revocation
		// must succeed.
		retry bool
		// loggedOut says the token must be logged out at the fake that
		// issued it.
		loggedOut bool
		// logoutCalls is how many logout requests the fake that issued the
		// token may see.
		logoutCalls int
	}{
		{name: "config deleted", loggedOut: true, logoutCalls: 1,
			before: func(t *testing.T, e *testEnv, _ *fakeupstream.Server, _ *logical.Secret) {
				_, err := e.do(t, logical.DeleteOperation, "config", nil)
				require.NoError(t, err)
			}},
		{name: "provider changed", loggedOut: true, logoutCalls: 1,
			before: func(t *testing.T, e *testEnv, _ *fakeupstream.Server, _ *logical.Secret) {
				data := e.fake.PluginConfig("mapsindoors")
				data["username"], data["password"], data["revocation_url"] = "", "", ""
				e.writeConfig(t, data)
			}},
		{name: "revocation_url moved to another host", loggedOut: true, logoutCalls: 1,
			before: func(t *testing.T, e *testEnv, other *fakeupstream.Server, _ *logical.Secret) {
				data := e.fake.PluginConfig("cameramanager")
				data["revocation_url"] = other.CameraManagerLogoutURL()
				data["ca_cert"] = other.CACertPEM()
				e.writeConfig(t, data)
			}},
		{name: "token already expired, config deleted", loggedOut: false, logoutCalls: 0,
			before: func(t *testing.T, e *testEnv, _ *fakeupstream.Server, _ *logical.Secret) {
				_, err := e.do(t, logical.DeleteOperation, "config", nil)
				require.NoError(t, err)
				clock := &fixedClock{t: time.Now().Add(2 * time.Hour)}
				e.b.now = clock.Now
			}},
		{name: "upstream says 400", logoutCalls: 1, before: faultOnLogout(400)},
		{name: "upstream says 401", logoutCalls: 1, before: faultOnLogout(401)},
		{name: "upstream says 403", logoutCalls: 1, before: faultOnLogout(403)},
		{name: "upstream says 404", logoutCalls: 1, before: faultOnLogout(404)},
		{name: "upstream says 410", logoutCalls: 1, before: faultOnLogout(410)},
		{name: "upstream says 503", retry: true, logoutCalls: 1, before: faultOnLogout(503)},
		{name: "upstream says 429", retry: true, logoutCalls: 1, before: faultOnLogout(429)},
		{name: "upstream unreachable", retry: true, logoutCalls: 0,
			before: func(t *testing.T, e *testEnv, _ *fakeupstream.Server, secret *logical.Secret) {
				unreachable := fmt.Sprintf("https://127.0.0.1:%d/rest/v2.0/users/self/tokens/current", closedPort(t))
				if _, recorded := secret.InternalData["revocation_url"]; recorded {
					secret.InternalData["revocation_url"] = unreachable
					return
				}
				// Before the fix the lease records no URL: move the config's.
				data := e.fake.PluginConfig("cameramanager")
				data["revocation_url"] = unreachable
				e.writeConfig(t, data)
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, fakeupstream.Options{})
			other := startOtherFake(t)
			e.writeConfig(t, e.fake.PluginConfig("cameramanager"))
			e.role(t, "cam", nil)
			resp := e.read(t, "creds/cam")
			token := resp.Data["access_token"].(string)
			secret := asStored(t, resp.Secret)

			tc.before(t, e, other, secret)
			_, err := e.revoke(t, secret)
			if tc.retry {
				require.Error(t, err, "a real failure must make Vault retry")
				for _, s := range e.fake.Sensitive() {
					requireNoSecretIn(t, err.Error(), s, "the error holds a secret or token")
				}
			} else {
				require.NoError(t, err, "the lease must end")
			}
			require.Equal(t, tc.logoutCalls, e.fake.Hits(fakeupstream.EndpointCameraManagerLogout))
			if tc.loggedOut {
				require.False(t, e.fake.TokenLive(token), "the lease's token must be logged out")
			}
			require.Zero(t, other.Hits(fakeupstream.EndpointCameraManagerLogout), "the token went to a host that did not issue it")
			require.Empty(t, other.Unexpected())
		})
	}
}

func faultOnLogout(status int) func(*testing.T, *testEnv, *fakeupstream.Server, *logical.Secret) {
	return func(_ *testing.T, e *testEnv, _ *fakeupstream.Server, _ *logical.Secret) {
		e.fake.InjectFault(fakeupstream.EndpointCameraManagerLogout, fakeupstream.Fault{Status: status, Code: http.StatusText(status)})
	}
}

// Leases issued before leases kept what their revocation needs carry only
// the role, the expiry and the token (and the framework's secret_type):
// they are logged out through the config while there is one that logs
// tokens out, and otherwise end with a warning, since they expire by
// themselves.
func TestRevoke_OldLeasesWithoutRecordedEndpoint(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.writeConfig(t, e.fake.PluginConfig("cameramanager"))
	e.role(t, "cam", nil)
	old := func() (*logical.Secret, string) {
		resp := e.read(t, "creds/cam")
		s := asStored(t, resp.Secret)
		for k := range s.InternalData {
			if k != "secret_type" && k != "role" && k != "expires_at" && k != "access_token" {
				delete(s.InternalData, k)
			}
		}
		return s, resp.Data["access_token"].(string)
	}

	// Not through the config as it is now, which a writer may have moved
	// (TestAttackLeaseHolder_AnOldLeaseNeverFollowsAMovedRevocationURL):
	// the lease ends, the token expires by itself.
	secret, token := old()
	_, err := e.revoke(t, secret)
	require.NoError(t, err)
	require.True(t, e.fake.TokenLive(token), "not logged out through the config")

	secret, token = old()
	_, err = e.do(t, logical.DeleteOperation, "config", nil)
	require.NoError(t, err)
	_, err = e.revoke(t, secret)
	require.NoError(t, err, "with no config to log it out, the lease still ends")
	require.True(t, e.fake.TokenLive(token))
	require.True(t, strings.Contains(e.logs.String(), "could not be logged out"), "and the log says so")
}
