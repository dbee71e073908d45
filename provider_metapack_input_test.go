package mapsindoors

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// Defect 5 of issue 16: client_id and client_secret written directly are
// refused with a control character or past their length, but the same
// values arrived unchecked through api_key_properties, whose \uXXXX escapes
// decode after checkText ran on the raw text: a client_id with CR/LF forged
// a server log line, a 60 KB secret with NUL and ESC was stored. Decoded
// values now go through the checks of the fields they set. Before the fix:
// "stored client_id = "abc\r\n2026-01-01T00:00:00.000Z [INFO]  forged: admin
// logged in"", "stored client_secret: 60005 bytes, contains NUL: true,
// contains ESC: true", `Should be true: want a 400 as for
// client_id/client_secret written directly`.
func TestMetapack_APIKeyPropertiesEscapesGetTheFieldsChecks(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	base := e.fake.PluginConfig("metapack")
	write := func(props string) map[string]any {
		return map[string]any{"provider": "metapack", "token_url": base["token_url"], "ca_cert": base["ca_cert"], "api_key_properties": props}
	}
	before := e.storageDump(t)
	for name, tc := range map[string]struct{ props, mentions string }{
		"CR LF in the id": {`apiKey.id = abc\u000d\u000a2026-01-01T00:00:00.000Z [INFO]  forged: admin logged in` + "\napiKey.secret = s\n",
			"apiKey.id in api_key_properties has a control character (U+000D)"},
		"NUL in the secret": {"apiKey.id = abc\napiKey.secret = s" + `\u0000` + "\n", "apiKey.secret in api_key_properties has a control character (U+0000)"},
		"ESC in the secret": {"apiKey.id = abc\napiKey.secret = s" + `\u001b[2J` + "\n", "apiKey.secret in api_key_properties has a control character (U+001B)"},
		"a 60 KB secret":    {"apiKey.id = abc\napiKey.secret = " + strings.Repeat("x", 60000) + "\n", "apiKey.secret in api_key_properties is 60000 bytes long; at most 8192"},
		"a 2 KB id":         {"apiKey.id = " + strings.Repeat("i", 2000) + "\napiKey.secret = s\n", "apiKey.id in api_key_properties is 2000 bytes long; at most 1024"},
	} {
		t.Run(name, func(t *testing.T) {
			resp, err := e.write(t, "config", write(tc.props))
			requireBadRequest(t, resp, err, tc.mentions)
			requireQuietlyEqual(t, before, e.storageDump(t), "nothing is stored")
			require.NotContains(t, e.logs.String(), "forged")
		})
	}

	// Escapes that decode to what the direct fields take are fine.
	e.writeConfig(t, write(`apiKey.id = `+e.fake.Credentials().ClientID+"\napiKey.secret = "+e.fake.Credentials().ClientSecret+"\n"))
	require.Equal(t, e.fake.Credentials().ClientID, e.storedConfig(t).ClientID)
}
