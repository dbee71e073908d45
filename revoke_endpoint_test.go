package mapsindoors

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// Defect 4 of issue 16: a logout endpoint that answers with a permanent
// redirect (a moved API), 405 or 501 fails every attempt the same way, so
// Vault retried until it marked the lease irrevocable, the token still
// live. A permanent answer ends the lease with a warning; a transient one
// is retried. Before the fix: "HTTP 301: revocation error on every
// attempt: log the token out: logout to https://.../tokens/current failed:
// HTTP 301" (and 308, 405, 501 alike).
func TestRevoke_PermanentLogoutAnswersEndTheLease(t *testing.T) {
	for _, tc := range []struct {
		fault fakeupstream.Fault
		retry bool
	}{
		{fault: fakeupstream.Fault{Redirect: "https://rest.example.com/v3/logout", Status: http.StatusMovedPermanently}},
		{fault: fakeupstream.Fault{Redirect: "https://rest.example.com/v3/logout", Status: http.StatusPermanentRedirect}},
		{fault: fakeupstream.Fault{Redirect: "https://rest.example.com/v3/logout", Status: http.StatusFound}},
		{fault: fakeupstream.Fault{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed"}},
		{fault: fakeupstream.Fault{Status: http.StatusNotImplemented, Code: "not_implemented"}},
		{fault: fakeupstream.Fault{Status: http.StatusHTTPVersionNotSupported}},
		{fault: fakeupstream.Fault{Status: http.StatusRequestTimeout}, retry: true},
		{fault: fakeupstream.Fault{Status: http.StatusInternalServerError}, retry: true},
		{fault: fakeupstream.Fault{Status: http.StatusBadGateway}, retry: true},
		{fault: fakeupstream.Fault{Status: http.StatusGatewayTimeout}, retry: true},
	} {
		t.Run(fmt.Sprint(tc.fault.Status), func(t *testing.T) {
			e := newTestEnv(t, fakeupstream.Options{})
			e.writeConfig(t, e.fake.PluginConfig("cameramanager"))
			e.role(t, "cam", nil)
			secret := asStored(t, e.read(t, "creds/cam").Secret)
			tc.fault.Times = -1
			e.fake.InjectFault(fakeupstream.EndpointCameraManagerLogout, tc.fault)
			_, err := e.revoke(t, secret)
			if tc.retry {
				require.ErrorContains(t, err, fmt.Sprintf("HTTP %d", tc.fault.Status), "a transient answer makes Vault retry")
				return
			}
			require.NoError(t, err, "a permanent answer ends the lease")
			require.Contains(t, e.logs.String(), "a retry would get again", "with a warning in the log")
			require.Contains(t, e.logs.String(), fmt.Sprintf("HTTP %d", tc.fault.Status))
		})
	}
}

// Defect 4, RFC 7009: a redirect (or a 501) from the revocation endpoint
// was retried forever, as only 4xx was final. Before the fix: "revoke the
// token: token revocation to https://.../oauth2/revoke failed: HTTP 308".
func TestRevoke_RFC7009PermanentAnswersEndTheLease(t *testing.T) {
	for _, tc := range []struct {
		fault fakeupstream.Fault
		retry bool
	}{
		{fault: fakeupstream.Fault{Redirect: "https://auth.example.com/v2/revoke", Status: http.StatusPermanentRedirect}},
		{fault: fakeupstream.Fault{Redirect: "https://auth.example.com/v2/revoke", Status: http.StatusMovedPermanently}},
		{fault: fakeupstream.Fault{Status: http.StatusNotImplemented}},
		{fault: fakeupstream.Fault{Status: http.StatusServiceUnavailable}, retry: true},
		{fault: fakeupstream.Fault{Status: http.StatusTooManyRequests, Code: "slow_down"}, retry: true},
	} {
		t.Run(fmt.Sprint(tc.fault.Status), func(t *testing.T) {
			e, secret := rfc7009Lease(t)
			tc.fault.Times = -1
			e.fake.InjectFault(fakeupstream.EndpointJWTRevoke, tc.fault)
			_, err := e.revoke(t, secret)
			if tc.retry {
				require.ErrorContains(t, err, fmt.Sprintf("HTTP %d", tc.fault.Status))
				return
			}
			require.NoError(t, err, "a permanent answer ends the lease like a 4xx refusal")
			require.Contains(t, e.logs.String(), "refused to revoke its token")
		})
	}
}

// rfc7009Lease is an env whose role token_per_lease issues leases revoked
// by RFC 7009, and one such lease as Vault stores it.
func rfc7009Lease(t *testing.T) (*testEnv, *logical.Secret) {
	t.Helper()
	e := newTestEnv(t, fakeupstream.Options{})
	cfg := e.fake.JWTPluginConfig("client_secret_basic")
	cfg["revocation_url"] = e.fake.JWTRevocationURL()
	e.writeConfig(t, cfg)
	e.role(t, "own", map[string]any{"token_per_lease": true})
	return e, asStored(t, e.read(t, "creds/own").Secret)
}

// Defect 8 of issue 16: a lease that logs its token out copied ca_cert (up
// to 256 KiB) into its internal data, so lease storage grew by the bundle
// with every read. A lease carries the bundle's hash; the bundle is kept
// once, under that hash, when a config write or delete takes it away.
// Before the fix the lease's internal data held the whole PEM bundle.
func TestLease_CarriesTheCAHashNotTheBundle(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.writeConfig(t, e.fake.PluginConfig("cameramanager"))
	e.role(t, "cam", nil)
	resp := e.read(t, "creds/cam")
	in := asStored(t, resp.Secret).InternalData
	require.NotContains(t, in, "ca_cert")
	require.Equal(t, caHash(e.fake.CACertPEM()), in["ca_cert_sha256"])
	blob, err := json.Marshal(in)
	require.NoError(t, err)
	require.Less(t, len(blob), 1024, "a lease's internal data is a few hundred bytes, whatever the bundle")
	require.NotContains(t, string(blob), "CERTIFICATE")
}

// What a lease records identifies its endpoint well enough that it is
// logged out after a restart, after the config is deleted, and after only
// ca_cert changed: then the config's client, which trusts other CAs now,
// is not the one that gets the token; the kept bundle is used.
func TestRevoke_LogoutTrustsTheBundleTheTokenWasIssuedUnder(t *testing.T) {
	for name, change := range map[string]func(t *testing.T, e *testEnv){
		"after a restart": func(t *testing.T, e *testEnv) { e.b = e.newBackend(t) },
		"after the config is deleted": func(t *testing.T, e *testEnv) {
			_, err := e.do(t, logical.DeleteOperation, "config", nil)
			require.NoError(t, err)
		},
		"after only ca_cert changed": func(t *testing.T, e *testEnv) {
			// Another CA, which does not sign the logout endpoint's
			// certificate: a logout through the config's client fails.
			e.writeConfig(t, map[string]any{"ca_cert": startOtherFake(t).CACertPEM(), "password": e.fake.Credentials().Password, "client_secret": e.fake.Credentials().ClientSecret})
		},
		"after a restart and a ca_cert change": func(t *testing.T, e *testEnv) {
			e.writeConfig(t, map[string]any{"ca_cert": startOtherFake(t).CACertPEM(), "password": e.fake.Credentials().Password, "client_secret": e.fake.Credentials().ClientSecret})
			e.b = e.newBackend(t)
		},
	} {
		t.Run(name, func(t *testing.T) {
			e := newTestEnv(t, fakeupstream.Options{})
			e.writeConfig(t, e.fake.PluginConfig("cameramanager"))
			e.role(t, "cam", nil)
			resp := e.read(t, "creds/cam")
			token := resp.Data["access_token"].(string)
			change(t, e)
			_, err := e.revoke(t, asStored(t, resp.Secret))
			require.NoError(t, err)
			require.Equal(t, 1, e.fake.Hits(fakeupstream.EndpointCameraManagerLogout))
			require.False(t, e.fake.TokenLive(token), "the lease's token is logged out")
		})
	}
}

// RFC 7009 needs the config's client authentication, so only the config's
// client revokes, and only while it trusts the bundle the token was issued
// under. After only ca_cert changed, the token goes nowhere: the lease ends
// with a warning. (A revocation through the config's client would fail on
// the other CA and be retried.)
func TestRevoke_RFC7009SendsNoTokenAfterOnlyTheCAChanged(t *testing.T) {
	e, secret := rfc7009Lease(t)
	e.writeConfig(t, map[string]any{"ca_cert": startOtherFake(t).CACertPEM(), "client_secret": e.fake.Credentials().ClientSecret})
	_, err := e.revoke(t, secret)
	require.NoError(t, err)
	require.Zero(t, e.fake.Hits(fakeupstream.EndpointJWTRevoke))
	require.True(t, strings.Contains(e.logs.String(), "(or ca_cert) is not the one the token was issued under"))
}

// At most a handful of bundles are kept, the oldest dropped first, and the
// one in use never.
func TestRevoke_KeptBundlesAreBounded(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.writeConfig(t, e.fake.PluginConfig("cameramanager"))
	first := caHash(e.fake.CACertPEM())
	for range 12 {
		e.writeConfig(t, map[string]any{"ca_cert": startOtherFake(t).CACertPEM(), "password": e.fake.Credentials().Password, "client_secret": e.fake.Credentials().ClientSecret})
	}
	kept, err := e.storage.List(t.Context(), "revocation_ca/")
	require.NoError(t, err)
	require.Len(t, kept, 8)
	require.NotContains(t, kept, first, "the oldest goes first")
	cfg, err := getConfig(t.Context(), e.storage)
	require.NoError(t, err)
	require.Contains(t, kept, caHash(cfg.CACert))
}
