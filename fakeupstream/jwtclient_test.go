package fakeupstream_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// The fake refuses what fosite refuses, with fosite's status and code, so
// a unit test that passes against it says something about a real server.
func TestJWTClient_ChecksAnAssertionAsFositeDoes(t *testing.T) {
	fake := start(t, fakeupstream.Options{})
	c := client(t, fake)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	doc, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	require.NoError(t, err)
	require.NoError(t, fake.RegisterJWKS(doc, "ES256"))
	id := fake.Credentials().ClientID

	sign := func(kid string, alg jose.SignatureAlgorithm, claims jwt.Claims) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, nil)
		require.NoError(t, err)
		out, err := jwt.Signed(s).Claims(claims).Serialize()
		require.NoError(t, err)
		return out
	}
	now := time.Now()
	good := func() jwt.Claims {
		return jwt.Claims{Issuer: id, Subject: id, Audience: jwt.Audience{fake.JWTTokenURL()}, ID: randomJTI(t),
			IssuedAt: jwt.NewNumericDate(now.Add(-5 * time.Second)), Expiry: jwt.NewNumericDate(now.Add(time.Minute))}
	}
	form := func(assertion string) url.Values {
		return url.Values{"grant_type": {"client_credentials"}, "client_id": {id},
			"client_assertion_type": {fakeupstream.ClientAssertionType}, "client_assertion": {assertion}}
	}

	reused := sign("k1", jose.ES256, good())
	status, _ := post(t, c, fake.JWTTokenURL(), form(reused), "", "")
	require.Equal(t, http.StatusOK, status)

	for _, tc := range []struct {
		name   string
		form   url.Values
		basic  bool
		status int
		code   string
	}{
		{"a jti seen before", form(reused), false, 401, "invalid_client"},
		{"a secret beside it", func() url.Values {
			f := form(sign("k1", jose.ES256, good()))
			f.Set("client_secret", "x")
			return f
		}(), false, 400, "invalid_request"},
		{"HTTP Basic beside it", form(sign("k1", jose.ES256, good())), true, 400, "invalid_request"},
		{"another assertion type", func() url.Values {
			f := form(sign("k1", jose.ES256, good()))
			f.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:saml2-bearer")
			return f
		}(), false, 400, "invalid_request"},
		{"an unknown kid", form(sign("k2", jose.ES256, good())), false, 400, "invalid_request"},
		{"an aud with a trailing slash", form(sign("k1", jose.ES256, func() jwt.Claims {
			c := good()
			c.Audience = jwt.Audience{fake.JWTTokenURL() + "/"}
			return c
		}())), false, 401, "invalid_client"},
		{"another sub", form(sign("k1", jose.ES256, func() jwt.Claims { c := good(); c.Subject = "other"; return c }())), false, 401, "invalid_client"},
		{"no exp", form(sign("k1", jose.ES256, func() jwt.Claims { c := good(); c.Expiry = nil; return c }())), false, 401, "invalid_client"},
		{"expired", form(sign("k1", jose.ES256, func() jwt.Claims {
			c := good()
			c.Expiry = jwt.NewNumericDate(now.Add(-time.Second))
			return c
		}())), false, 500, "error"},
		{"issued in the future", form(sign("k1", jose.ES256, func() jwt.Claims {
			c := good()
			c.IssuedAt = jwt.NewNumericDate(now.Add(time.Minute))
			return c
		}())), false, 500, "error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			user, pass := "", ""
			if tc.basic {
				user, pass = id, "x"
			}
			status, body := post(t, c, fake.JWTTokenURL(), tc.form, user, pass)
			require.Equal(t, tc.status, status)
			require.Equal(t, tc.code, body["error"])
			seen, ok := fake.LastAssertion()
			require.True(t, ok)
			require.False(t, seen.Accepted)
		})
	}

	// RFC 7009: 200 for a token it does not know, the same authentication.
	status, _ = post(t, c, fake.JWTRevocationURL(), func() url.Values {
		f := form(sign("k1", jose.ES256, good()))
		f.Del("grant_type")
		f.Set("token", "unknown")
		return f
	}(), "", "")
	require.Equal(t, http.StatusOK, status)
	require.True(t, fake.TokenRevoked("unknown"))
	require.True(t, slices.Contains(fake.Sensitive(), reused), "assertions count as secrets for the leak checks")
}

func randomJTI(t *testing.T) string {
	t.Helper()
	b := make([]byte, 12)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}
