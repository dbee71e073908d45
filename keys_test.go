package mapsindoors

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// newJWTEnv is a mount configured with private_key_jwt against the fake's
// strict endpoint (extra fields on top), with a check at the end that no
// private key the mount ever stored reached a response or the log.
func newJWTEnv(t *testing.T, extra map[string]any) *testEnv {
	t.Helper()
	return newJWTEnvWith(t, func(*fakeupstream.Server) map[string]any { return extra })
}

// newJWTEnvWith is newJWTEnv with extra fields that name the fake (its
// revocation URL, say): where a private_key_jwt config's requests go is
// fixed when it is written.
func newJWTEnvWith(t *testing.T, extra func(*fakeupstream.Server) map[string]any) *testEnv {
	t.Helper()
	// Tokens outlive the hours a test moves its clock on.
	e := newTestEnv(t, fakeupstream.Options{TokenLifetime: 10 * 24 * time.Hour})
	rec := &keyRecordingStorage{Storage: e.storage, keys: map[string][]byte{}}
	e.storage = rec
	t.Cleanup(func() { e.assertNoPrivateKeys(t, rec) })
	data := e.fake.JWTPluginConfig("private_key_jwt")
	for k, v := range extra(e.fake) {
		data[k] = v
	}
	e.writeConfig(t, data)
	return e
}

// keyRecordingStorage remembers every signing key written, including the
// ones a rollover later drops, for the leak check.
type keyRecordingStorage struct {
	logical.Storage
	mu   sync.Mutex
	keys map[string][]byte
}

func (s *keyRecordingStorage) Put(ctx context.Context, entry *logical.StorageEntry) error {
	if entry.Key == keysStoragePath {
		var set keySet
		if err := entry.DecodeJSON(&set); err == nil {
			s.mu.Lock()
			for _, k := range set.Keys {
				s.keys[k.KeyID] = k.PrivateKey
			}
			s.mu.Unlock()
		}
	}
	return s.Storage.Put(ctx, entry)
}

// storedKeys is the key set as stored.
func (e *testEnv) storedKeys(t testing.TB) *keySet {
	t.Helper()
	set, err := getKeySet(context.Background(), e.storage)
	require.NoError(t, err)
	return set
}

// jwks reads the mount's JWKS as a server would get it: the raw body.
func (e *testEnv) jwks(t testing.TB) ([]byte, jose.JSONWebKeySet) {
	t.Helper()
	resp := e.read(t, "jwks")
	require.Equal(t, http.StatusOK, resp.Data[logical.HTTPStatusCode])
	require.Equal(t, "application/json", resp.Data[logical.HTTPContentType])
	body, ok := resp.Data[logical.HTTPRawBody].([]byte)
	require.True(t, ok, "the JWKS is a raw body, not Vault's data envelope")
	var set jose.JSONWebKeySet
	require.NoError(t, json.Unmarshal(body, &set))
	return body, set
}

func kidsOf(set jose.JSONWebKeySet) []string {
	out := []string{}
	for _, k := range set.Keys {
		out = append(out, k.KeyID)
	}
	return out
}

// register gives the fake the mount's current JWKS inline, for alg.
func (e *testEnv) register(t testing.TB, alg string) {
	t.Helper()
	body, _ := e.jwks(t)
	require.NoError(t, e.fake.RegisterJWKS(body, alg))
}

// assertNoPrivateKeys checks that no private key the mount stored, in any
// encoding, is in a response or the log.
func (e *testEnv) assertNoPrivateKeys(t testing.TB, rec *keyRecordingStorage) {
	t.Helper()
	var blobs []string
	for _, r := range e.responses {
		b, err := json.Marshal(r)
		require.NoError(t, err)
		blobs = append(blobs, string(b))
	}
	blobs = append(blobs, e.logs.String())
	rec.mu.Lock()
	defer rec.mu.Unlock()
	require.NotEmpty(t, rec.keys, "the leak check saw the keys")
	for kid, der := range rec.keys {
		parsed, err := x509.ParsePKCS8PrivateKey(der)
		require.NoError(t, err)
		jwk, err := json.Marshal(jose.JSONWebKey{Key: parsed})
		require.NoError(t, err)
		var members map[string]any
		require.NoError(t, json.Unmarshal(jwk, &members))
		forms := []string{
			base64.StdEncoding.EncodeToString(der),
			string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
			members["d"].(string),
		}
		for _, blob := range blobs {
			for _, f := range forms {
				if strings.Contains(blob, f) {
					t.Errorf("private material of key %s reached a response or the log", kid)
				}
			}
		}
	}
}

func TestKeys_FirstKeyIsMadePublishedAndSignsTokenRequests(t *testing.T) {
	for _, tc := range []struct {
		keyType, alg, kty, crv string
	}{
		{"", "RS256", "RSA", ""},
		{"rsa-2048", "RS256", "RSA", ""},
		{"ec-p256", "ES256", "EC", "P-256"},
		{"ed25519", "EdDSA", "OKP", "Ed25519"},
	} {
		t.Run(tc.alg+"/"+tc.keyType, func(t *testing.T) {
			extra := map[string]any{}
			if tc.keyType != "" {
				extra["key_type"] = tc.keyType
			}
			e := newJWTEnv(t, extra)

			cfg := e.read(t, "config").Data
			require.Equal(t, "private_key_jwt", cfg["token_auth_method"])
			require.Equal(t, false, cfg["client_secret_set"])
			wantType := tc.keyType
			if wantType == "" {
				wantType = "rsa-2048"
			}
			require.Equal(t, wantType, cfg["key_type"])
			keys := cfg["signing_keys"].([]map[string]any)
			require.Len(t, keys, 1)
			require.Equal(t, "current", keys[0]["state"])
			require.Equal(t, tc.alg, keys[0]["alg"])
			require.Equal(t, wantType, keys[0]["key_type"])
			kid := keys[0]["kid"].(string)

			body, set := e.jwks(t)
			require.Equal(t, []string{kid}, kidsOf(set))
			var raw struct {
				Keys []map[string]any `json:"keys"`
			}
			require.NoError(t, json.Unmarshal(body, &raw))
			k := raw.Keys[0]
			require.Equal(t, tc.kty, k["kty"])
			require.Equal(t, "sig", k["use"])
			require.Equal(t, tc.alg, k["alg"])
			require.Equal(t, kid, k["kid"])
			if tc.crv != "" {
				require.Equal(t, tc.crv, k["crv"])
			}
			for _, private := range []string{"d", "p", "q", "dp", "dq", "qi", "k"} {
				requireNoKey(t, k, private, "public members only")
			}
			require.True(t, set.Keys[0].IsPublic())
			// The kid is the key's RFC 7638 thumbprint.
			thumb, err := set.Keys[0].Thumbprint(crypto.SHA256)
			require.NoError(t, err)
			require.Equal(t, base64.RawURLEncoding.EncodeToString(thumb), kid)

			e.register(t, tc.alg)
			e.role(t, "api", nil)
			creds := e.read(t, "creds/api")
			require.True(t, e.fake.TokenActive(creds.Data["access_token"].(string)))
			seen, ok := e.fake.LastAssertion()
			require.True(t, ok)
			require.True(t, seen.Accepted)
			require.Equal(t, kid, seen.Header.KeyID)
			require.Equal(t, tc.alg, seen.Header.Algorithm)
			require.Equal(t, e.fake.Credentials().ClientID, seen.Claims["iss"])
			require.Equal(t, e.fake.Credentials().ClientID, seen.Claims["sub"])
			require.Equal(t, e.fake.JWTTokenURL(), seen.Claims["aud"])
			require.Equal(t, e.fake.Credentials().ClientID, seen.ClientID)
			require.True(t, seen.ClientSecret == "", "no client secret beside the assertion")
			require.False(t, seen.Basic)
		})
	}
}

func TestKeys_ConfigRewritesKeepTheKeyAndSecretsAreNotStored(t *testing.T) {
	e := newJWTEnv(t, nil)
	first := e.storedKeys(t).Keys[0].KeyID
	// Changing fields that do not move the config, the key type included,
	// keeps the key the server has registered.
	e.writeConfig(t, map[string]any{"scopes": "read", "key_type": "ec-p256", "client_id": e.fake.Credentials().ClientID})
	set := e.storedKeys(t)
	require.Equal(t, 1, len(set.Keys))
	require.Equal(t, first, set.Keys[0].KeyID)
	require.Equal(t, "RS256", set.Keys[0].Algorithm, "a new key_type applies from the next rollover")
	require.True(t, e.storedConfig(t).ClientSecret == "", "a private_key_jwt config stores no client secret")
}

// Keys belong to their config: a write that moves away from
// private_key_jwt retires them and says so, private_key_jwt cannot be
// turned on again in place, and a new config makes a new key rather than
// take over keys an earlier one left (here a delete that did not retire
// them).
func TestKeys_KeysAreRetiredWithTheirConfigAndNeverReused(t *testing.T) {
	e := newJWTEnv(t, nil)
	first := e.storedKeys(t).Keys[0].KeyID

	resp, err := e.write(t, "config", map[string]any{"token_auth_method": "client_secret_basic", "client_secret": e.fake.Credentials().ClientSecret})
	require.NoError(t, err)
	require.False(t, resp.IsError(), "%v", resp.Error())
	require.Len(t, resp.Warnings, 1)
	require.Contains(t, resp.Warnings[0], "retired this mount's private_key_jwt signing keys "+first)
	require.Zero(t, len(e.storedKeys(t).Keys))
	_, published := e.jwks(t)
	require.Empty(t, published.Keys)
	require.Contains(t, e.logs.String(), "retired the signing keys with their config")

	resp, err = e.write(t, "config", map[string]any{"token_auth_method": "private_key_jwt", "client_secret": ""})
	requireBadRequest(t, resp, err, "private_key_jwt can only be set on a new config")
	require.Zero(t, len(e.storedKeys(t).Keys), "no key was made")

	// Keys a config left behind (as a delete that did not retire them
	// leaves them) are not the next config's.
	resp, err = e.do(t, logical.DeleteOperation, "config", nil)
	require.NoError(t, err)
	require.False(t, resp != nil && resp.IsError())
	require.NoError(t, putKeySet(t.Context(), e.storage, &keySet{Keys: []signingKey{mustKey(t, keyCurrent)}}))
	left := e.storedKeys(t).Keys[0].KeyID
	resp, err = e.write(t, "config", e.fake.JWTPluginConfig("private_key_jwt"))
	require.NoError(t, err)
	require.False(t, resp.IsError(), "%v", resp.Error())
	require.Contains(t, strings.Join(resp.Warnings, "\n"), "retired this mount's private_key_jwt signing keys "+left)
	set := e.storedKeys(t)
	require.Equal(t, 1, len(set.Keys))
	require.NotEqual(t, left, set.Keys[0].KeyID, "a new config signs with a new key")
	require.NotEqual(t, first, set.Keys[0].KeyID)
}

func TestKeys_BadInputIsRefusedAndTheStoredConfigKept(t *testing.T) {
	e := newJWTEnv(t, nil)
	before := e.storedConfig(t)
	keysBefore := e.storedKeys(t)

	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keysBefore.Keys[0].PrivateKey}))
	rsaPEM := "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAK\n-----END RSA PRIVATE KEY-----\n"
	jwk := `{"kty":"EC","crv":"P-256","x":"a","y":"b","d":"c"}`
	jwks := `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"a","d":"c"}]}`
	for _, tc := range []struct {
		name     string
		path     string
		data     map[string]any
		mentions string
	}{
		{"unknown key type", "config", map[string]any{"key_type": "rsa-1024"}, `key_type "rsa-1024" is not known; use one of rsa-2048, ec-p256, ed25519`},
		{"a secret beside the assertion", "config", map[string]any{"client_secret": "s"}, `write client_secret="" with it`},
		{"a rollover delay too long", "config", map[string]any{"key_rollover_delay": "800h"}, "key_rollover_delay must be between 0 and 720h0m0s"},
		{"an audience with spaces", "config", map[string]any{"assertion_audience": "a b"}, "assertion_audience must be one value"},
		{"a PKCS #8 key as the secret", "config", map[string]any{"client_secret": pemKey}, "client_secret holds a private key"},
		{"a PKCS #1 key as the CA", "config", map[string]any{"ca_cert": rsaPEM}, "ca_cert holds a private key"},
		{"a private JWK in a text field", "config", map[string]any{"assertion_audience": jwk}, "assertion_audience holds a private key"},
		{"a private JWKS in a field of its own", "config", map[string]any{"private_key": jwks}, "private_key holds a private key"},
		{"a private key in a role's parameters", "roles/api", map[string]any{"token_params": []string{"key=" + rsaPEM}}, "token_params holds a private key"},
		{"a private key as a role's audience", "roles/api", map[string]any{"audience": jwk}, "audience holds a private key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := e.write(t, tc.path, tc.data)
			requireBadRequest(t, resp, err, tc.mentions)
			require.NotContains(t, resp.Error().Error(), "MII", "the message never repeats the value")
			require.NotContains(t, resp.Error().Error(), `"d"`)
		})
	}
	requireQuietlyEqual(t, before, e.storedConfig(t), "the config is as it was")
	require.True(t, reflect.DeepEqual(keysBefore, e.storedKeys(t)), "the keys are as they were")

	// Where the assertions go is fixed for the life of the config
	// (attack_config_writer_test.go tries every move).
	resp, err := e.write(t, "config", map[string]any{"token_url": e.fake.JWTTokenURL() + "?v=2", "assertion_audience": ""})
	requireBadRequest(t, resp, err, "changing token_url would send this mount's signed client assertions somewhere else")
	requireQuietlyEqual(t, before, e.storedConfig(t), "the config is as it was")
	r, err := getRole(context.Background(), e.storage, "api")
	require.NoError(t, err)
	require.Nil(t, r, "no role was stored")
}

func TestKeys_InvalidClientNamesKeyAudAndAlgNotTheSecret(t *testing.T) {
	for _, tc := range []struct {
		name     string
		extra    map[string]any
		setup    func(e *testEnv)
		status   string
		mentions []string
	}{
		{"the server has another key", nil, func(e *testEnv) {
			other := newJWTEnv(t, nil)
			other.register(t, "RS256") // registers the other mount's key at other's fake
			body, _ := other.jwks(t)
			require.NoError(t, e.fake.RegisterJWKS(body, "RS256"))
		}, "HTTP 400", []string{`OAuth2 error "invalid_request"`, "kid"}},
		{"the client is registered for another alg", nil, func(e *testEnv) { e.register(t, "ES256") },
			"HTTP 401", []string{`OAuth2 error "invalid_client"`, "registered for that alg"}},
		{"the server wants another aud", map[string]any{"assertion_audience": "https://issuer.example"}, func(e *testEnv) {
			e.register(t, "RS256")
		}, "HTTP 401", []string{`OAuth2 error "invalid_client"`, `aud "https://issuer.example"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newJWTEnv(t, tc.extra)
			tc.setup(e)
			e.role(t, "api", nil)
			_, err := e.do(t, logical.ReadOperation, "creds/api", nil)
			requireCoded(t, err, http.StatusBadGateway, tc.status)
			for _, m := range tc.mentions {
				require.Contains(t, err.Error(), m)
			}
			kid := e.storedKeys(t).Keys[0].KeyID
			require.Contains(t, err.Error(), `kid "`+kid+`" (alg RS256)`)
			require.NotContains(t, err.Error(), "client_secret", "no secret is involved")
		})
	}
}

func TestJWKS_ServedWithoutTokenAndWithoutWaitingForRotations(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	// Declared unauthenticated, and raw: a server gets {"keys": [...]}.
	require.Contains(t, e.b.SpecialPaths().Unauthenticated, "jwks")
	require.Contains(t, e.b.SpecialPaths().SealWrapStorage, keysStoragePath)
	body, set := e.jwks(t)
	require.JSONEq(t, `{"keys":[]}`, string(body), "a mount without keys publishes an empty set")
	require.Empty(t, set.Keys)

	e.writeConfig(t, e.fake.JWTPluginConfig("private_key_jwt"))
	_, set = e.jwks(t)
	require.Equal(t, 1, len(set.Keys))

	// A rotation holds the write lock while it waits for the server, which
	// is fetching the JWKS meanwhile: the JWKS must not wait for it. After a
	// restart (nothing in memory) it reads storage, still without the lock.
	unlock, err := e.b.lockWrites(context.Background())
	require.NoError(t, err)
	defer unlock()
	for _, fresh := range []bool{false, true} {
		if fresh {
			e.b = e.newBackend(t)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, got := e.jwks(t)
			require.Equal(t, 1, len(got.Keys))
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("the JWKS read waited for the write lock")
		}
	}
}

// A config write checks the connection by default, but a key made by that
// very write cannot be known to any server yet: the write says what to do
// instead. Later writes check with the key the server has.
func TestKeys_VerifyConnectionWaitsForTheServerToKnowTheKey(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.verifyConfigWrites = true
	resp, err := e.write(t, "config", e.fake.JWTPluginConfig("private_key_jwt"))
	require.NoError(t, err)
	require.False(t, resp.IsError(), "%v", resp.Error())
	require.Len(t, resp.Warnings, 1)
	require.Contains(t, resp.Warnings[0], `register the public keys from "vault read -format=raw mapsindoors/jwks"`)
	require.Zero(t, e.fake.Hits(fakeupstream.EndpointJWTToken), "no login with a key no server can know")

	e.register(t, "RS256")
	e.writeConfig(t, map[string]any{"request_timeout": "20s"})
	require.Equal(t, 1, e.fake.Hits(fakeupstream.EndpointJWTToken), "the next write logs in, and the server takes the key")

	other := newTestEnv(t, fakeupstream.Options{})
	other.writeConfig(t, other.fake.JWTPluginConfig("private_key_jwt"))
	body, _ := other.jwks(t)
	require.NoError(t, e.fake.RegisterJWKS(body, "RS256")) // the server now has another key
	resp, err = e.write(t, "config", map[string]any{"request_timeout": "25s"})
	requireBadRequest(t, resp, err, "verify_connection: a login with the new config failed")
	require.Contains(t, resp.Error().Error(), "kid")
	require.NotContains(t, resp.Error().Error(), "client id and secret")
}
