package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Through a real Vault, against the fosite-based server of ./oauthserver:
// every client authentication the oauth2 provider offers, private_key_jwt
// with the keys registered by hand and fetched from Vault's JWKS URL, key
// rollovers with reads going on, and RFC 7009 revocation checked by
// introspection.

// oauth2Mount is a dev server with the plugin enabled at each mount.
func oauth2Mount(t *testing.T, mounts ...string) *vaultServer {
	t.Helper()
	v := startDevVault(t)
	v.registerPlugin(pluginV1)
	for _, m := range mounts {
		v.enable(m, pluginV1)
	}
	return v
}

// readToken reads creds with the CLI and checks that the server holds the
// token active, for the client.
func readToken(t *testing.T, v *vaultServer, as *oauthServer, mount, role, clientID string) (token, leaseID string) {
	t.Helper()
	resp := v.cliJSON("read", mount+"/creds/"+role)
	data := dataOf(t, resp)
	token, _ = data["access_token"].(string)
	require.NotEmpty(t, token)
	noteSensitive(func() []string { return []string{token} })
	in := as.introspect(token)
	require.Equal(t, true, in["active"], "the server holds the token Vault handed out active")
	require.Equal(t, clientID, in["client_id"])
	require.Equal(t, false, resp["renewable"])
	leaseID, _ = resp["lease_id"].(string)
	return token, leaseID
}

func TestOAuth2Server_ClientSecretMethods(t *testing.T) {
	requireVault(t)
	t.Parallel()
	as := startOAuthServer(t)
	v := oauth2Mount(t, "basic", "post")
	for _, c := range []struct{ mount, client, method string }{
		{"basic", "basic", "client_secret_basic"},
		{"post", "post", "client_secret_post"},
	} {
		v.writeFile(c.mount+"/config", as.pluginConfig(c.client, c.method))
		v.mustCLI("write", c.mount+"/roles/app", "ttl=1m")
		readToken(t, v, as, c.mount, "app", c.client)
		// fosite holds a client to its registered method: the other one is
		// refused, which shows the plugin sent the one configured.
		other := map[string]string{"client_secret_basic": "client_secret_post", "client_secret_post": "client_secret_basic"}[c.method]
		_, err := v.cli("write", c.mount+"/config", "token_auth_method="+other)
		require.ErrorContains(t, err, "verify_connection: a login with the new config failed")
		require.ErrorContains(t, err, "invalid_client")
		v.mustCLI("write", c.mount+"/config", "token_auth_method="+other, "verify_connection=false")
		_, err = v.cli("read", c.mount+"/creds/app")
		require.ErrorContains(t, err, "invalid_client")
		require.ErrorContains(t, err, "check client_id and client_secret")
	}
}

func TestOAuth2Server_PrivateKeyJWTRegisteredByHand(t *testing.T) {
	requireVault(t)
	t.Parallel()
	as := startOAuthServer(t)
	v := oauth2Mount(t, "jwt")
	auditLog := filepath.Join(t.TempDir(), "audit.log")
	v.mustCLI("audit", "enable", "file", "file_path="+auditLog)

	// Where a private_key_jwt config's requests go is fixed when it is
	// written: revocation_url too.
	jwtCfg := as.pluginConfig("jwt-inline", "private_key_jwt")
	jwtCfg["revocation_url"] = as.info.RevocationEndpoint
	v.writeFile("jwt/config", jwtCfg)
	cfg := v.readConfig("jwt")
	require.Equal(t, false, cfg["client_secret_set"])
	keys := cfg["signing_keys"].([]any)
	require.Len(t, keys, 1)
	first := keys[0].(map[string]any)["kid"].(string)

	// `vault read -format=raw` prints the bare JWKS; so does an
	// unauthenticated GET of the same path.
	raw := v.mustCLI("read", "-format=raw", "jwt/jwks")
	var doc struct {
		Keys []map[string]any `json:"keys"`
	}
	require.NoError(t, json.Unmarshal([]byte(raw), &doc), "a bare JWKS document")
	require.Len(t, doc.Keys, 1)
	k := doc.Keys[0]
	require.Equal(t, first, k["kid"])
	require.Equal(t, "RSA", k["kty"])
	require.Equal(t, "sig", k["use"])
	require.Equal(t, "RS256", k["alg"])
	_, private := k["d"]
	require.False(t, private, "the JWKS carries a private member")
	code, contentType, body := v.jwksUnauthenticated("jwt")
	require.Equal(t, 200, code)
	require.Equal(t, "application/json", contentType)
	require.JSONEq(t, raw, string(body))

	// The operator registers the client with that JWKS (the server refuses
	// one with private members, so this also shows there are none).
	as.registerJWTClient("jwt-inline", "RS256", json.RawMessage(raw), "")
	v.mustCLI("write", "jwt/roles/app", "ttl=1m")
	readToken(t, v, as, "jwt", "app", "jwt-inline")

	// A lease revoked, or run out, revokes its own token at the server:
	// RFC 7009 with a fresh assertion whose aud is the token endpoint.
	v.mustCLI("write", "jwt/roles/own", "ttl=1m", "token_per_lease=true")
	kept, _ := readToken(t, v, as, "jwt", "own", "jwt-inline")
	revoked, lease := readToken(t, v, as, "jwt", "own", "jwt-inline")
	require.True(t, kept != revoked, "every lease has a token of its own") // not NotEqual: it would print them
	v.mustCLI("lease", "revoke", lease)
	eventually(t, 30*time.Second, "the revoked lease's token to be inactive at the server", func() bool { return !as.active(revoked) })
	require.True(t, as.active(kept), "another lease's token stays active")
	v.mustCLI("write", "jwt/roles/short", "ttl=3s", "token_per_lease=true")
	short, _ := readToken(t, v, as, "jwt", "short", "jwt-inline")
	eventually(t, 45*time.Second, "the expired lease's token to be inactive at the server", func() bool { return !as.active(short) })

	// A rollover by hand: the new key is published but the server does not
	// know it, so the current key goes on signing and no read fails.
	out := dataOf(t, v.cliJSON("write", "-f", "jwt/rotate-root"))
	next := out["kid"].(string)
	require.Equal(t, "next", out["state"])
	require.Equal(t, first, out["signing_kid"])
	readToken(t, v, as, "jwt", "app", "jwt-inline")
	raw = v.mustCLI("read", "-format=raw", "jwt/jwks")
	require.Contains(t, raw, first)
	require.Contains(t, raw, next)
	// The operator uploads the new JWKS; the next rotate-root promotes.
	as.admin("/jwt-inline/jwks", []byte(raw))
	out = dataOf(t, v.cliJSON("write", "-f", "jwt/rotate-root"))
	require.Equal(t, next, out["kid"])
	require.Equal(t, "current", out["state"])
	readToken(t, v, as, "jwt", "app", "jwt-inline")
	// Signing moved: the server, given the new key alone, still accepts.
	as.admin("/jwt-inline/jwks", []byte(v.mustCLI("read", "-format=raw", "jwt/jwks")))
	require.NotContains(t, v.mustCLI("read", "-format=raw", "jwt/jwks"), first, "no grace: the old key left the JWKS")
	readToken(t, v, as, "jwt", "app", "jwt-inline")

	// Nothing secret is in Vault's log or, in clear, in the audit log.
	checkNoSecrets(t, v, auditLog, kept, revoked, short)
}

func TestOAuth2Server_PrivateKeyJWTFromVaultsJWKSURL(t *testing.T) {
	requireVault(t)
	t.Parallel()
	as := startOAuthServer(t)
	v := oauth2Mount(t, "jwtes")
	cfg := as.pluginConfig("jwt-uri", "private_key_jwt")
	cfg["key_type"] = "ec-p256"
	cfg["revocation_url"] = as.info.RevocationEndpoint
	v.writeFile("jwtes/config", cfg)
	// The server fetches the JWKS from Vault's unauthenticated URL, plain
	// http on loopback, while the token request that needs it waits.
	as.registerJWTClient("jwt-uri", "ES256", nil, v.addr+"/v1/jwtes/jwks")
	v.mustCLI("write", "jwtes/roles/each", "ttl=1m", "token_per_lease=true")
	token, lease := readToken(t, v, as, "jwtes", "each", "jwt-uri")
	require.Contains(t, as.log(), "jwks fetch "+v.addr+"/v1/jwtes/jwks: 200")

	// Reads go on, each one a token request with a fresh assertion, while
	// rotate-root rolls the key over twice.
	var reads, failures atomic.Int64
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, _, err := v.credsToken("jwtes", "each"); err != nil {
					failures.Add(1)
					firstFailure.CompareAndSwap(nil, err.Error())
				}
				reads.Add(1)
			}
		}()
	}
	kids := map[string]bool{}
	var took []time.Duration
	for range 2 {
		time.Sleep(time.Second)
		start := time.Now()
		out := dataOf(t, v.cliJSON("write", "-f", "jwtes/rotate-root"))
		took = append(took, time.Since(start).Round(time.Millisecond))
		require.Equal(t, "current", out["state"], "the server fetched the JWKS for the unknown kid: promoted at once")
		kids[out["kid"].(string)] = true
	}
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	require.Zero(t, failures.Load(), "no creds read failed during the rollovers (first failure: %v)", firstFailure.Load())
	require.Greater(t, reads.Load(), int64(10))
	t.Logf("%d creds reads (each a token request) during two rollovers, none failed; rotate-root took %v", reads.Load(), took)
	require.Len(t, kids, 2)
	// previous_secret_grace is 0: only the signing key is published now.
	_, _, body := v.jwksUnauthenticated("jwtes")
	var doc struct {
		Keys []map[string]any `json:"keys"`
	}
	require.NoError(t, json.Unmarshal(body, &doc))
	require.Len(t, doc.Keys, 1)
	require.True(t, kids[doc.Keys[0]["kid"].(string)])
	require.Equal(t, "EC", doc.Keys[0]["kty"])
	require.Equal(t, "ES256", doc.Keys[0]["alg"])
	// Signing moved to the last key: the server, given it alone, accepts.
	as.admin("/jwt-uri/jwks", body)
	readToken(t, v, as, "jwtes", "each", "jwt-uri")

	// A lease issued before the rollovers is revoked with the new key.
	v.mustCLI("lease", "revoke", lease)
	eventually(t, 30*time.Second, "the revoked lease's token to be inactive", func() bool { return !as.active(token) })
}

// checkNoSecrets checks that no token, assertion or private key is in the
// Vault server's log, nor in clear in the audit log.
func checkNoSecrets(t *testing.T, v *vaultServer, auditLog string, tokens ...string) {
	t.Helper()
	serverLog, err := os.ReadFile(v.logPath)
	require.NoError(t, err)
	audit, err := os.ReadFile(auditLog)
	require.NoError(t, err)
	for name, text := range map[string]string{"server log": string(serverLog), "audit log": string(audit)} {
		for _, tok := range tokens {
			require.False(t, strings.Contains(text, tok), "a token in the %s", name) // not NotContains: it would print it
		}
		require.False(t, strings.Contains(text, "PRIVATE KEY"), "a private key in the %s", name)
		require.False(t, strings.Contains(text, "client_assertion="), "a client assertion in the %s", name)
		require.False(t, strings.Contains(text, "eyJhbGci"), "an assertion in the %s", name)
	}
}
