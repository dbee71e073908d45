package mapsindoors

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// Every path of every provider, succeeding and failing, while the harness
// collects every response, error, log line and storage entry; its leak
// check (assertNoLeaks, run here and again when the test ends) finds no
// secret, password, refresh token or stray access token in any of them,
// in any encoding.
func TestLeakSweep_EveryPathOfEveryProvider(t *testing.T) {
	for _, provider := range fakeupstream.Providers() {
		t.Run(provider, func(t *testing.T) {
			e := newTestEnv(t, fakeupstream.Options{})
			clock := &fixedClock{t: time.Now()}
			e.b.now = clock.Now
			creds := e.fake.Credentials()
			secret := map[string]string{
				"mapsindoors": creds.ClientSecret, "oauth2": creds.ClientSecret,
				"metapack": creds.MetapackKeySecret, "cameramanager": creds.CameraManagerKeySecret,
			}[provider]
			ep := tokenEndpoint(provider)
			// each runs a request and ignores its outcome: what matters is
			// what it leaves behind.
			each := func(op logical.Operation, path string, data map[string]any) *logical.Response {
				resp, _ := e.do(t, op, path, data)
				return resp
			}
			write := func(path string, data map[string]any) { _, _ = e.write(t, path, data) }
			readCreds := func() *logical.Response { return each(logical.ReadOperation, "creds/app", nil) }
			forget := func() { clock.Add(outageMemoryMax + passwordBackoffMax) }

			// config: create, read, the refusals, a misspelled field
			write("config", e.fake.PluginConfig(provider))
			each(logical.ReadOperation, "config", nil)
			write("config", map[string]any{"rotaton_period": "1h"})
			write("config", map[string]any{"token_url": "https://elsewhere.example.com/token"})
			write("config", map[string]any{"client_secret": []any{secret}})
			write("config", map[string]any{"password": map[string]any{"p": creds.Password}})
			write("config", map[string]any{"client_secret": secret + "\x00"})
			write("config", map[string]any{"api_key_properties": "apiKey.id = x\napiKey.secret = " + secret + "\x01\n"})

			// roles
			write("roles/app", map[string]any{"scopes": "read", "ttl": "5m", "audience": "api", "token_params": "tenant=t1"})
			each(logical.ReadOperation, "roles/app", nil)
			each(logical.ListOperation, "roles/", nil)
			write("roles/other", map[string]any{"tll": "1m"})
			write("roles/bad", map[string]any{"token_params": "client_secret=" + secret})

			// creds, and the revocation of the lease
			if resp := readCreds(); resp != nil && resp.Secret != nil {
				e.recordErr(e.revokeErr(t, resp.Secret))
				e.recordErr(e.revokeErr(t, asStored(t, resp.Secret)))
			}
			readCreds()

			// creds while the upstream fails in every way, the last one
			// echoing the secret back in its error description
			e.b.tokens.reset()
			e.fake.ForgetRefreshTokens()
			faults := []fakeupstream.Fault{
				{Status: 401, Code: "invalid_client"},
				{Status: 503, Code: "temporarily_unavailable"},
				{Status: 429, Code: "slow_down"},
				{Malformed: true},
				{Body: `{"token_type":"Bearer","expires_in":3600}`},
				{Status: 400, Body: `{"error":"invalid_request","error_description":"bad client_secret ` + secret + `"}`},
			}
			if _, ok := e.fake.PluginConfig(provider)["password"]; ok {
				// An echo of what the mount sends: its password.
				faults = append(faults, fakeupstream.Fault{Status: 400,
					Body: `{"error":"invalid_grant","error_description":"bad password ` + creds.Password + `"}`})
			}
			for _, f := range faults {
				forget()
				e.fake.InjectFault(ep, f)
				readCreds()
				readCreds() // answered from the failure memory
				e.b.tokens.reset()
			}
			e.fake.ClearFaults()
			forget()
			readCreds()

			// rotation and the client-secrets list (a 400 where the provider
			// has no client-secret API)
			each(logical.UpdateOperation, "rotate-root", nil)
			each(logical.ListOperation, "client-secrets/", nil)
			e.fake.InjectFault(fakeupstream.EndpointCreateSecret, fakeupstream.Fault{Status: 500})
			each(logical.UpdateOperation, "rotate-root", nil)
			e.fake.InjectFault(fakeupstream.EndpointListSecrets, fakeupstream.Fault{Status: 403, Code: "access_denied"})
			each(logical.ListOperation, "client-secrets/", nil)
			e.fake.ClearFaults()
			require.NoError(t, e.b.periodic(context.Background(), &logical.Request{Storage: e.storage, MountPoint: "mapsindoors/"}))

			// a wrong secret, then the right config again
			wrong := e.fake.PluginConfig(provider)
			for _, field := range []string{"client_secret", "password", "api_key_properties"} {
				if _, ok := wrong[field]; ok {
					wrong[field] = "wrong-" + field
				}
			}
			if provider == "metapack" {
				wrong["api_key_properties"] = "apiKey.id = " + creds.MetapackKeyID + "\napiKey.secret = wrong\n"
			}
			write("config", wrong)
			readCreds()
			forget()
			write("config", e.fake.PluginConfig(provider))
			readCreds()
			e.b.invalidate(context.Background(), configStoragePath)
			readCreds()

			// deletes, and reads after them
			each(logical.DeleteOperation, "roles/other", nil)
			each(logical.DeleteOperation, "config", nil)
			readCreds()
			each(logical.ReadOperation, "config", nil)

			require.NotEmpty(t, e.responses)
			e.assertNoLeaks(t)
		})
	}
}

// revokeErr revokes a lease as Vault does when it ends.
func (e *testEnv) revokeErr(t *testing.T, secret *logical.Secret) error {
	t.Helper()
	resp, err := e.revoke(t, secret)
	e.record(resp)
	return err
}

// recordingTB is a testing.TB whose failures are recorded, not acted on,
// so a test can read what an assertion helper would print.
type recordingTB struct {
	testing.TB
	printed []string
}

func (r *recordingTB) Helper()                   {}
func (r *recordingTB) FailNow()                  {}
func (r *recordingTB) Errorf(f string, a ...any) { r.printed = append(r.printed, fmt.Sprintf(f, a...)) }
func (r *recordingTB) Fatalf(f string, a ...any) { r.printed = append(r.printed, fmt.Sprintf(f, a...)) }

// The helpers the tests compare secrets with fail without printing them:
// a failing test's output is no place for a secret either.
func TestQuietAssertions_FailWithoutPrintingTheSecret(t *testing.T) {
	const secret, other = "s3cr3t-client-secret-value", "0ther-client-secret-value"
	before := &config{Provider: "mapsindoors", ClientID: "id", ClientSecret: secret}
	after := before.clone()
	after.ClientSecret = other

	for name, fail := range map[string]func(testing.TB){
		"a changed config": func(tb testing.TB) { requireQuietlyEqual(tb, before, after, "config changed") },
		"a changed storage dump": func(tb testing.TB) {
			requireQuietlyEqual(tb, map[string]string{"config": secret}, map[string]string{"config": other}, "storage changed")
		},
		"a secret in a text": func(tb testing.TB) { requireNoSecretIn(tb, "error: "+secret, secret, "the error holds a secret") },
		"another token":      func(tb testing.TB) { requireSameToken(tb, secret, other, "not the same token") },
		"the same token":     func(tb testing.TB) { requireNewToken(tb, secret, secret, "the token did not change") },
	} {
		t.Run(name, func(t *testing.T) {
			rec := &recordingTB{TB: t}
			fail(rec)
			require.NotEmpty(t, rec.printed, "the helper did not fail")
			out := strings.Join(rec.printed, "\n")
			require.False(t, strings.Contains(out, secret) || strings.Contains(out, other), "the failure printed a secret")
		})
	}

	rec := &recordingTB{TB: t}
	requireQuietlyEqual(rec, before, after, "config changed")
	require.Len(t, rec.printed, 1)
	require.Contains(t, rec.printed[0], "client_secret", "it names the field that changed")

	rec = &recordingTB{TB: t}
	requireQuietlyEqual(rec, before, before.clone(), "config changed")
	requireNoSecretIn(rec, "error: nothing", secret, "the error holds a secret")
	require.Empty(t, rec.printed, "equal values and a clean text pass")
}
