package mapsindoors

import (
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

func TestTokenPerLease_EachLeaseRevokedByRFC7009(t *testing.T) {
	for _, method := range []string{"client_secret_basic", "client_secret_post", "private_key_jwt"} {
		t.Run(method, func(t *testing.T) {
			var e *testEnv
			if method == "private_key_jwt" {
				e = newJWTEnvWith(t, func(f *fakeupstream.Server) map[string]any {
					return map[string]any{"revocation_url": f.JWTRevocationURL()}
				})
				e.register(t, "RS256")
			} else {
				e = newTestEnv(t, fakeupstream.Options{})
				cfg := e.fake.JWTPluginConfig(method)
				cfg["revocation_url"] = e.fake.JWTRevocationURL()
				e.writeConfig(t, cfg)
			}
			e.role(t, "shared", nil)
			e.role(t, "own", map[string]any{"token_per_lease": true})
			require.Equal(t, true, e.read(t, "roles/own").Data["token_per_lease"])
			require.Equal(t, false, e.read(t, "roles/shared").Data["token_per_lease"])

			s1, s2 := e.read(t, "creds/shared"), e.read(t, "creds/shared")
			requireSameToken(t, s1.Data["access_token"].(string), s2.Data["access_token"], "a role without token_per_lease shares its token")
			requireNoKey(t, s1.Secret.InternalData, "access_token", "a shared token is not revoked with one lease")

			first, second := e.read(t, "creds/own"), e.read(t, "creds/own")
			a, b := first.Data["access_token"].(string), second.Data["access_token"].(string)
			requireNewToken(t, a, b, "every lease has a token of its own")
			require.Equal(t, e.fake.JWTRevocationURL(), first.Secret.InternalData["revocation_url"])

			_, err := e.revoke(t, first.Secret)
			require.NoError(t, err)
			require.False(t, e.fake.TokenActive(a), "the server revoked the lease's token")
			require.True(t, e.fake.TokenActive(b), "and no other")
			form := e.fake.LastForm(fakeupstream.EndpointJWTRevoke)
			require.Equal(t, "access_token", form.Get("token_type_hint"))
			if method == "private_key_jwt" {
				seen, ok := e.fake.LastAssertion()
				require.True(t, ok)
				require.Equal(t, fakeupstream.EndpointJWTRevoke, seen.Endpoint)
				require.True(t, seen.Accepted)
				require.Equal(t, e.fake.JWTTokenURL(), seen.Claims["aud"], "the revocation's aud is the token endpoint, as fosite wants")
			}

			_, err = e.revoke(t, s1.Secret)
			require.NoError(t, err)
			require.True(t, e.fake.TokenActive(s1.Data["access_token"].(string)), "revoking a lease of a shared token leaves it alone")
		})
	}
}

func TestTokenPerLease_RevocationNeverSticks(t *testing.T) {
	for _, tc := range []struct {
		name string
		// before runs before the revocation; it may change the fake, the
		// config or the clock.
		before func(t *testing.T, e *testEnv, clock *fixedClock)
		// retried says the revocation fails so that Vault retries it.
		retried bool
		// sent says a revocation request reaches the server.
		sent    bool
		revoked bool
		logs    string
	}{
		{name: "revoked", sent: true, revoked: true},
		{name: "a 503 is retried", sent: true, retried: true, before: func(t *testing.T, e *testEnv, _ *fixedClock) {
			e.fake.InjectFault(fakeupstream.EndpointJWTRevoke, fakeupstream.Fault{Status: http.StatusServiceUnavailable})
		}},
		{name: "a 429 is retried", sent: true, retried: true, before: func(t *testing.T, e *testEnv, _ *fixedClock) {
			e.fake.InjectFault(fakeupstream.EndpointJWTRevoke, fakeupstream.Fault{Status: http.StatusTooManyRequests, Code: "slow_down"})
		}},
		{name: "a dropped connection is retried", sent: true, retried: true, before: func(t *testing.T, e *testEnv, _ *fixedClock) {
			e.fake.InjectFault(fakeupstream.EndpointJWTRevoke, fakeupstream.Fault{Delay: time.Minute})
			e.writeConfig(t, map[string]any{"request_timeout": "1s"})
		}},
		{name: "a refused client authentication is final", sent: true, logs: "the server refused to revoke its token", before: func(t *testing.T, e *testEnv, _ *fixedClock) {
			e.fake.InjectFault(fakeupstream.EndpointJWTRevoke, fakeupstream.Fault{Status: http.StatusUnauthorized, Code: "invalid_client"})
		}},
		{name: "an unsupported token type is final", sent: true, logs: "unsupported_token_type", before: func(t *testing.T, e *testEnv, _ *fixedClock) {
			e.fake.InjectFault(fakeupstream.EndpointJWTRevoke, fakeupstream.Fault{Status: http.StatusBadRequest, Code: "unsupported_token_type"})
		}},
		{name: "an expired token needs nothing", logs: "its token had already expired", before: func(t *testing.T, e *testEnv, clock *fixedClock) {
			clock.Add(2 * time.Hour)
		}},
		{name: "without a config there is nothing to authenticate with", logs: "the mount has no config", before: func(t *testing.T, e *testEnv, _ *fixedClock) {
			_, err := e.do(t, logical.DeleteOperation, "config", nil)
			require.NoError(t, err)
		}},
		{name: "a token never goes to another revocation URL", logs: "not the one the token was issued under", before: func(t *testing.T, e *testEnv, _ *fixedClock) {
			e.writeConfig(t, map[string]any{"revocation_url": e.fake.URL() + "/elsewhere/revoke", "client_secret": e.fake.Credentials().ClientSecret})
		}},
		{name: "a config that no longer revokes", logs: "not the one the token was issued under", before: func(t *testing.T, e *testEnv, _ *fixedClock) {
			e.writeConfig(t, map[string]any{"revocation_url": "", "client_secret": e.fake.Credentials().ClientSecret})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, fakeupstream.Options{})
			clock := &fixedClock{t: time.Now()}
			e.b.now = clock.Now
			cfg := e.fake.JWTPluginConfig("client_secret_basic")
			cfg["revocation_url"] = e.fake.JWTRevocationURL()
			e.writeConfig(t, cfg)
			e.role(t, "own", map[string]any{"token_per_lease": true})
			creds := e.read(t, "creds/own")
			token := creds.Data["access_token"].(string)
			if tc.before != nil {
				tc.before(t, e, clock)
			}
			_, err := e.revoke(t, creds.Secret)
			if tc.retried {
				require.ErrorContains(t, err, "revoke the token")
				require.Contains(t, e.logs.String(), "Vault retries the revocation")
				e.fake.ClearFaults()
				e.writeConfig(t, map[string]any{"request_timeout": "30s"})
				_, err = e.revoke(t, creds.Secret)
				require.NoError(t, err, "the retry succeeds")
				require.True(t, e.fake.TokenRevoked(token))
				return
			}
			require.NoError(t, err, "the lease ends")
			require.Equal(t, tc.sent, e.fake.Hits(fakeupstream.EndpointJWTRevoke) > 0)
			require.Equal(t, tc.revoked, e.fake.TokenRevoked(token))
			require.Contains(t, e.logs.String(), tc.logs)
			require.Empty(t, e.fake.Unexpected(), "nothing went to another URL")
		})
	}
}

func TestTokenPerLease_WithoutRevocationURLKeepsNoToken(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.writeConfig(t, e.fake.JWTPluginConfig("client_secret_basic"))
	e.role(t, "own", map[string]any{"token_per_lease": true})
	first, second := e.read(t, "creds/own"), e.read(t, "creds/own")
	requireNewToken(t, first.Data["access_token"], second.Data["access_token"], "a token_per_lease role gets a token per read")
	requireNoKey(t, first.Secret.InternalData, "access_token", "nothing could revoke it, so it is not kept")
	_, err := e.revoke(t, first.Secret)
	require.NoError(t, err)
	require.Zero(t, e.fake.Hits(fakeupstream.EndpointJWTRevoke))
}
