package mapsindoors

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

func TestConfigFields_EachFieldOnceInSchemaAndRead(t *testing.T) {
	seen := map[string]bool{}
	for _, f := range configFields {
		require.False(t, seen[f.name], "field %s is listed twice", f.name)
		seen[f.name] = true
		require.NotNil(t, f.set, f.name)
		require.NotNil(t, f.read, f.name)
		require.NotEmpty(t, f.schema().Description, f.name)
		require.Equal(t, f.writeOnly, f.schema().DisplayAttrs != nil && f.schema().DisplayAttrs.Sensitive, f.name)
	}

	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	read := e.read(t, "config").Data
	for _, f := range configFields {
		require.Contains(t, read, f.readKey())
		if f.writeOnly {
			require.NotContains(t, read, f.name, "a write-only field is never read back")
		}
	}
	for _, state := range append(rotationStateKeys, signingKeysStateKeys...) {
		require.Contains(t, read, state)
	}
	require.Len(t, read, len(configFields)+len(rotationStateKeys)+len(signingKeysStateKeys),
		"a read shows the table's fields, the rotation state and the signing keys, nothing else")
}

// What the upstream client is given comes from the table: every field it
// needs reaches it.
func TestConfigFields_ClientConfigCarriesTheFields(t *testing.T) {
	c := (&config{
		Provider: "oauth2", ClientID: "id", ClientSecret: "s", CustomerID: "cust", Username: "u", Password: "p",
		TokenURL: "https://t.example/token", RotationURL: "https://t.example/rot", RevocationURL: "https://t.example/rev",
		CACert: "pem", RequestTimeout: 7e9, signingConfig: signingConfig{AssertionAudience: "https://t.example"},
	}).resolved()
	require.Equal(t, upstream.Config{
		TokenURL: "https://t.example/token", RotationURL: "https://t.example/rot", RevocationURL: "https://t.example/rev",
		ClientID: "id", ClientSecret: "s", CustomerID: "cust",
		GrantType: upstream.GrantClientCredentials, Username: "u", Password: "p", AuthMethod: upstream.AuthClientSecretBasic,
		CACertPEM: "pem", Timeout: 7e9, MaxAttempts: upstream.MaxAttemptsLimit,
		RevocationStyle: upstream.RevocationRFC7009, AssertionAudience: "https://t.example",
	}, c.clientConfig())
}
