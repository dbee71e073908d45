package mapsindoors

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// Attacks of a caller that may revoke its own leases (docs/policies/vso.hcl
// grants it, so that an operator can end a token early).

// The open question of issue 16, measured: on CameraManager a logout ends
// the token's refresh token too, and the mount shares one refresh token;
// so a reader that revokes each lease it gets turns every read into a
// password login. The engine bounds it at one password login per creds
// read, never more, and one at a time (loginSem): the loop costs the
// account what the caller's own read rate costs, which Vault's rate limit
// quotas bound. It cannot make the engine log in more often than it reads,
// nor end anyone else's token: the other leases' tokens stay live.
func TestAttackLeaseHolder_ReadRevokeLoopCostsAtMostOneLoginPerRead(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.writeConfig(t, e.fake.PluginConfig("cameramanager"))
	e.role(t, "cam", nil)
	victim := e.read(t, "creds/cam").Data["access_token"].(string)
	require.Equal(t, 1, e.fake.Grants(fakeupstream.EndpointCameraManagerToken, "password"))

	const cycles = 10
	for range cycles {
		resp := e.read(t, "creds/cam")
		_, err := e.revoke(t, asStored(t, resp.Secret))
		require.NoError(t, err)
		require.False(t, e.fake.TokenLive(resp.Data["access_token"].(string)), "the revoked lease's token is logged out")
	}
	logins := e.fake.Grants(fakeupstream.EndpointCameraManagerToken, "password") - 1
	t.Logf("%d read+revoke cycles: %d password logins, %d refreshes", cycles, logins,
		e.fake.Grants(fakeupstream.EndpointCameraManagerToken, "refresh_token"))
	require.LessOrEqual(t, logins, cycles, "at most one password login per read")
	require.True(t, e.fake.TokenLive(victim), "another lease's token is not ended by the loop")
}

// If the upstream pushes back on the logins the loop causes (refuses the
// password, or asks for quiet), the loop gets the remembered answer: it
// cannot turn reads into logins against a refusal or a Retry-After.
func TestAttackLeaseHolder_ReadRevokeLoopStopsAtTheUpstreamsPushBack(t *testing.T) {
	for name, fault := range map[string]fakeupstream.Fault{
		"refused":     {Status: http.StatusBadRequest, Code: "invalid_grant", Times: -1},
		"Retry-After": {Status: http.StatusTooManyRequests, Code: "slow_down", RetryAfter: "60", Times: -1},
	} {
		t.Run(name, func(t *testing.T) {
			e := newTestEnv(t, fakeupstream.Options{})
			clock := &fixedClock{t: time.Now()}
			e.b.now = clock.Now
			e.writeConfig(t, e.fake.PluginConfig("cameramanager"))
			e.role(t, "cam", nil)
			resp := e.read(t, "creds/cam")
			_, err := e.revoke(t, asStored(t, resp.Secret))
			require.NoError(t, err)
			e.fake.InjectFault(fakeupstream.EndpointCameraManagerToken, fault)
			hits := e.fake.Hits(fakeupstream.EndpointCameraManagerToken)
			for range 20 {
				_, err := e.do(t, logical.ReadOperation, "creds/cam", nil)
				require.Error(t, err)
			}
			// The refresh of the logged-out token, then one login at most.
			require.LessOrEqual(t, e.fake.Hits(fakeupstream.EndpointCameraManagerToken)-hits, 2,
				"20 reads against the upstream's push-back")
		})
	}
}

// A lease of the version before leases recorded their revocation URL
// holds its token and nothing else. A config writer who moves
// revocation_url (with credentials of their own, as the trust rule asks)
// must not get that token when the lease is revoked: such a lease ends
// without a logout, and the log says so.
func TestAttackLeaseHolder_AnOldLeaseNeverFollowsAMovedRevocationURL(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.writeConfig(t, e.fake.PluginConfig("cameramanager"))
	e.role(t, "cam", nil)
	resp := e.read(t, "creds/cam")
	secret := asStored(t, resp.Secret)
	for k := range secret.InternalData {
		if k != "secret_type" && k != "role" && k != "expires_at" && k != "access_token" {
			delete(secret.InternalData, k) // as a lease of the version before
		}
	}
	token := resp.Data["access_token"].(string)

	attacker := fakeupstream.StartRecorder(http.StatusOK)
	t.Cleanup(attacker.Close)
	e.writeConfig(t, map[string]any{
		"token_url":         attacker.URL() + "/token",
		"revocation_url":    attacker.URL() + "/logout",
		"ca_cert":           attacker.CACertPEM(),
		"client_secret":     "attackers-own-api-key-secret",
		"username":          "attacker",
		"password":          "attackers-own-password",
		"verify_connection": false,
	})
	_, err := e.revoke(t, secret)
	require.NoError(t, err, "the lease ends")

	for _, c := range attacker.Credentials() {
		// Not require.NotContains: its message would print the token.
		require.False(t, strings.Contains(c, token), "the attacker's host received the lease's live token")
	}
	require.True(t, strings.Contains(e.logs.String(), "could not be logged out"), "the log says the token was not logged out")
}
