package mapsindoors

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// The attacks of an operator whose only right on the mount is `update` on
// config: no read of config, no create (the config exists), no delete. Such
// a caller may break the mount (write a wrong client id, say), but must
// never obtain, or make Vault send to a host of their choosing, a token, a
// refresh token, a secret, a password or a client assertion that the real
// server accepts. Every attack runs with verify_connection on (Vault's
// default), because that login is the first request a config write makes.
//
// On a private_key_jwt mount the real server may trust the mount's JWKS by
// URL (jwks_uri): it then trusts every key the mount publishes, so a fresh
// key is no barrier. The engine holds the line with where a config's
// requests go: that destination is fixed for the life of a private_key_jwt
// config, and moving it takes deleting the config (a capability of its own),
// which retires its keys.

// configWriterTarget is a private_key_jwt mount that works against the
// real server, which trusts the mount's JWKS by URL (the strongest trust an
// attacker can hope for), and the attacker's host.
func configWriterTarget(t *testing.T) (*testEnv, *fakeupstream.Recorder) {
	t.Helper()
	e := newJWTEnv(t, nil)
	e.useJWKSURI(t, "RS256")
	e.role(t, "api", nil)
	e.read(t, "creds/api") // the mount works against the real server
	e.verifyConfigWrites = true
	attacker := fakeupstream.StartRecorder(http.StatusBadRequest)
	t.Cleanup(attacker.Close)
	return e, attacker
}

// requireNothingHarvested checks what the attacker's host got: nothing at
// all, so certainly no credential and no assertion to replay.
func requireNothingHarvested(t *testing.T, e *testEnv, attacker *fakeupstream.Recorder) {
	t.Helper()
	for _, a := range attacker.Assertions() {
		live, err := e.fake.ReplayAssertion(t.Context(), e.fake.Credentials().ClientID, a)
		require.NoError(t, err)
		require.False(t, live, "an assertion the attacker's host received buys a token at the real server")
	}
	require.Zero(t, len(attacker.Credentials()), "the attacker's host received a credential")
	require.Zero(t, len(attacker.Received()), "the attacker's host received a request")
}

// The control for requireNothingHarvested's replay: an assertion of the
// mount's, had the attacker got one, buys a live token at the real server.
func TestAttackConfigWriter_ControlAHarvestedAssertionWouldBuyAToken(t *testing.T) {
	e, _ := configWriterTarget(t)
	key, err := e.b.keys.SigningKey(t.Context())
	require.NoError(t, err)
	assertion, err := upstream.NewAssertion(key, e.fake.Credentials().ClientID, e.fake.JWTTokenURL(), time.Now())
	require.NoError(t, err)
	live, err := e.fake.ReplayAssertion(t.Context(), e.fake.Credentials().ClientID, assertion)
	require.NoError(t, err)
	require.True(t, live)
}

func TestAttackConfigWriter_PrivateKeyJWTDestinationCannotBeMoved(t *testing.T) {
	cases := []struct {
		name string
		// write is the attacker's config write, given the attacker's host.
		write func(e *testEnv, attacker *fakeupstream.Recorder) map[string]any
		// names is the field the refusal names.
		names string
	}{
		{"token_url to the attacker, aud kept at the real server (SECREVIEW A)", func(e *testEnv, a *fakeupstream.Recorder) map[string]any {
			return map[string]any{"token_url": a.URL() + "/token", "ca_cert": a.CACertPEM(), "assertion_audience": e.fake.JWTTokenURL()}
		}, "token_url"},
		{"token_url to the attacker", func(_ *testEnv, a *fakeupstream.Recorder) map[string]any {
			return map[string]any{"token_url": a.URL() + "/token", "ca_cert": a.CACertPEM()}
		}, "token_url"},
		{"revocation_url alone to the attacker (SECREVIEW A2)", func(e *testEnv, a *fakeupstream.Recorder) map[string]any {
			return map[string]any{"revocation_url": a.URL() + "/revoke", "ca_cert": e.fake.CACertPEM() + a.CACertPEM()}
		}, "revocation_url"},
		{"assertion_audience to another server", func(_ *testEnv, a *fakeupstream.Recorder) map[string]any {
			return map[string]any{"assertion_audience": a.URL() + "/token"}
		}, "assertion_audience"},
		{"ca_cert to the attacker's CA (a network attacker's certificate)", func(_ *testEnv, a *fakeupstream.Recorder) map[string]any {
			return map[string]any{"ca_cert": a.CACertPEM()}
		}, "ca_cert"},
		{"provider, whose default URLs go elsewhere", func(_ *testEnv, _ *fakeupstream.Recorder) map[string]any {
			return map[string]any{"provider": "mapsindoors", "token_url": ""}
		}, "provider"},
		{"plain http on loopback", func(_ *testEnv, a *fakeupstream.Recorder) map[string]any {
			return map[string]any{"allow_loopback_http": true, "token_url": strings.Replace(a.URL(), "https://", "http://", 1) + "/token"}
		}, "allow_loopback_http"},
		{"rotation_url", func(_ *testEnv, a *fakeupstream.Recorder) map[string]any {
			return map[string]any{"rotation_url": a.URL() + "/clientcredentials"}
		}, "rotation_url"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, attacker := configWriterTarget(t)
			before := e.storedConfig(t)
			keysBefore := e.storedKeys(t)

			resp, err := e.write(t, "config", tc.write(e, attacker))
			requireBadRequest(t, resp, err, tc.names)
			requireBadRequest(t, resp, err, "delete the config")
			require.True(t, reflect.DeepEqual(before, e.storedConfig(t)), "nothing was stored")
			require.True(t, reflect.DeepEqual(keysBefore, e.storedKeys(t)), "the keys are as they were")
			requireNothingHarvested(t, e, attacker)
			e.read(t, "creds/api") // the mount still works
		})
	}
}

// The attacker switches the mount away from private_key_jwt (accepted: it
// carries a secret of theirs, and retires the keys) and back to it with a
// destination of theirs, counting on a fresh key that the real server
// trusts through the JWKS URL.
func TestAttackConfigWriter_SwitchingAwayAndBackCannotMintAKeyForANewDestination(t *testing.T) {
	e, attacker := configWriterTarget(t)
	oldKid := e.storedKeys(t).find(keyCurrent).KeyID

	resp, err := e.write(t, "config", map[string]any{
		"token_auth_method": "client_secret_post", "client_secret": "the-attackers-own-junk",
		"token_url": attacker.URL() + "/token", "ca_cert": attacker.CACertPEM(), "verify_connection": false,
	})
	require.NoError(t, err)
	require.False(t, resp.IsError(), "%v", resp.Error())
	require.Contains(t, strings.Join(resp.Warnings, "\n"), "retired", "the response says the keys were retired")
	require.Contains(t, strings.Join(resp.Warnings, "\n"), oldKid)
	require.Zero(t, len(e.storedKeys(t).Keys), "the keys left with the config they belonged to")
	_, published := e.jwks(t)
	require.Empty(t, published.Keys, "the JWKS the real server trusts publishes no key")

	resp, err = e.write(t, "config", map[string]any{
		"token_auth_method": "private_key_jwt", "client_secret": "", "assertion_audience": e.fake.JWTTokenURL(),
	})
	requireBadRequest(t, resp, err, "delete the config")
	require.Zero(t, len(e.storedKeys(t).Keys), "no key was made for the attacker's destination")
	_, published = e.jwks(t)
	require.Empty(t, published.Keys)
	// The only credential that went anywhere is the attacker's own junk,
	// and only by a read they cannot make.
	requireNothingHarvested(t, e, attacker)
}

// Nothing the attacker can write sends a request anywhere before the write
// is checked: the verify_connection login comes after every trust rule.
func TestAttackConfigWriter_ClientSecretMountMovesSendNoStoredSecret(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	e.verifyConfigWrites = true
	attacker := fakeupstream.StartRecorder(http.StatusBadRequest)
	t.Cleanup(attacker.Close)
	stored := e.fake.Credentials().ClientSecret

	for _, move := range []map[string]any{
		{"token_url": attacker.URL() + "/token", "ca_cert": attacker.CACertPEM()},
		{"rotation_url": attacker.URL() + "/clientcredentials", "ca_cert": attacker.CACertPEM()},
		{"ca_cert": attacker.CACertPEM()},
		{"allow_loopback_http": true},
	} {
		resp, err := e.write(t, "config", move)
		requireBadRequest(t, resp, err, "write client_secret")
	}
	require.Zero(t, len(attacker.Received()), "a refused move made no request")

	// With a secret of their own the move is theirs to make, and their own
	// secret is all the host sees.
	resp, err := e.write(t, "config", map[string]any{
		"token_url": attacker.URL() + "/token", "ca_cert": attacker.CACertPEM(), "client_secret": "the-attackers-own",
	})
	requireBadRequest(t, resp, err, "verify_connection")
	for _, c := range attacker.Credentials() {
		requireNoSecretIn(t, c, stored, "the stored secret reached the attacker's host")
	}
	require.NotEmpty(t, attacker.Received(), "the check above looked at a request")
}

// client_secret_id names the secret the next rotation deletes: pointed at
// another integration's secret, it would delete that one.
func TestAttackConfigWriter_RepointingClientSecretIDNeedsTheSecret(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	before := e.storedConfig(t)

	resp, err := e.write(t, "config", map[string]any{"client_secret_id": "another-integrations-secret-id"})
	requireBadRequest(t, resp, err, "client_secret_id")
	requireBadRequest(t, resp, err, "write client_secret")
	require.True(t, reflect.DeepEqual(before, e.storedConfig(t)), "nothing was stored")

	// The rotation deletes what it replaced, and only that.
	_, err = e.rotate(t)
	require.NoError(t, err)
	require.False(t, e.fake.SecretWorks(e.fake.Credentials().ClientSecret), "the mount's own replaced secret was deleted")

	// The one who holds the secret may name its id.
	e.writeConfig(t, map[string]any{"client_secret": e.storedConfig(t).ClientSecret, "client_secret_id": e.storedConfig(t).ClientSecretID})
}

// The verify login checks the trust rules itself, so that no order of a
// config write's steps sends it where the write may not move the config.
func TestAttackConfigWriter_VerifyLoginRefusesADestinationTheWriteCouldNotMoveTo(t *testing.T) {
	e, attacker := configWriterTarget(t)
	stored := e.storedConfig(t)
	next := stored.clone()
	next.TokenURL, next.CACert, next.AssertionAudience = attacker.URL()+"/token", attacker.CACertPEM(), e.fake.JWTTokenURL()
	raw := map[string]any{"token_url": next.TokenURL, "ca_cert": next.CACert, "assertion_audience": next.AssertionAudience, verifyConnectionField: true}
	d := &framework.FieldData{Raw: raw, Schema: pathConfig(e.b)[0].Fields}

	resp, err := e.b.verifyNewConfig(t.Context(), d, stored, next)
	requireBadRequest(t, resp, err, "delete the config")
	requireNothingHarvested(t, e, attacker)
}
