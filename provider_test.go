package mapsindoors

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestProviders_RegistryNamesEveryProviderOnce(t *testing.T) {
	require.Equal(t, []string{"mapsindoors", "cameramanager", "metapack", "oauth2"}, providerNames())
	require.Equal(t, "mapsindoors", defaultProvider().name)
	require.Panics(t, func() { registerProvider(&provider{name: "metapack"}) })

	_, err := lookupProvider("nope")
	require.ErrorContains(t, err, `provider "nope" is not known; use one of mapsindoors, cameramanager, metapack, oauth2`)
}

func TestProviders_DefaultsReachTheFieldDescriptions(t *testing.T) {
	schema := configSchema()
	for _, name := range providerNames() {
		p := providers[name]
		for field, def := range map[string]string{
			"token_url": p.tokenURL, "rotation_url": p.rotationURL, "revocation_url": p.revocationURL,
			"grant_type": string(p.grantType), "token_auth_method": string(p.authMethod),
		} {
			if def == "" {
				continue
			}
			require.Contains(t, schema[field].Description, fmt.Sprintf("%s (%s)", def, name), "field %s", field)
		}
		for field := range p.inputFields {
			require.Contains(t, schema, field, "provider %s's input field", name)
		}
	}
	require.Contains(t, schema["provider"].Description, strings.Join(providerNames(), ", "))
}

// The README's table of provider defaults is made from the registry, so it
// cannot drift from what the engine does.
func TestProviders_READMETableMatchesTheRegistry(t *testing.T) {
	var b strings.Builder
	b.WriteString("| provider | service | `grant_type` | `token_auth_method` | `token_url` | `rotation_url` | `revocation_url` | rotate-root | token per lease |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	orNone := func(s string) string {
		if s == "" {
			return "(none)"
		}
		return "`" + s + "`"
	}
	yesNo := map[bool]string{true: "yes", false: "no"}
	for _, name := range providerNames() {
		p := providers[name]
		fmt.Fprintf(&b, "| `%s` | %s | `%s` | `%s` | %s | %s | %s | %s | %s |\n", name, p.title, p.grantType, p.authMethod,
			orNone(p.tokenURL), orNone(p.rotationURL), orNone(p.revocationURL), yesNo[p.canRotate], yesNo[p.tokenPerLease])
	}
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	require.True(t, strings.Contains(string(readme), b.String()), "README.md's provider table is out of date; it should read:\n%s", b.String())
}
