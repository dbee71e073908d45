package mapsindoors

import "github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"

// MapsIndoors (MapsPeople): an IdentityServer /connect/token with the
// client credentials in the form body, and a clientcredentials API through
// which the client secret is rotated. The older password grant logs in as
// the fixed client "client" with scope "integration".
func init() {
	//nolint:gosec // G101: the vendor's public token endpoint URLs, not credentials.
	registerProvider(&provider{
		name:             "mapsindoors",
		title:            "MapsIndoors (MapsPeople)",
		isDefault:        true,
		tokenURL:         "https://auth.mapsindoors.com/connect/token",
		rotationURL:      "https://auth.mapsindoors.com/api/clientcredentials",
		grantType:        upstream.GrantClientCredentials,
		authMethod:       upstream.AuthClientSecretPost,
		passwordClientID: "client",
		passwordScopes:   []string{"integration"},
		canRotate:        true,
	})
}
