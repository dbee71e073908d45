package mapsindoors

import "github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"

// The providers a mount can be configured for.
const (
	providerMapsIndoors   = "mapsindoors"
	providerMetapack      = "metapack"
	providerCameraManager = "cameramanager"
	providerOAuth2        = "oauth2"
)

// provider is a preset of defaults: a config stores only what the operator
// wrote, and the preset fills in the rest when it is used or read.
type provider struct {
	tokenURL      string
	rotationURL   string
	revocationURL string
	grantType     upstream.GrantType
	authMethod    upstream.AuthMethod
	// passwordClientID and passwordScopes apply to the password grant.
	passwordClientID string
	passwordScopes   []string
	// canRotate says whether the provider has a client-secret API.
	canRotate bool
	// tokenPerLease gives every creds read its own upstream token, made
	// with the refresh token while it works, and logs it out when the
	// lease ends.
	tokenPerLease bool
}

var providers = map[string]provider{
	providerMapsIndoors: {
		tokenURL:         "https://auth.mapsindoors.com/connect/token",
		rotationURL:      "https://auth.mapsindoors.com/api/clientcredentials",
		grantType:        upstream.GrantClientCredentials,
		authMethod:       upstream.AuthClientSecretPost,
		passwordClientID: "client",
		passwordScopes:   []string{"integration"},
		canRotate:        true,
	},
	// Metapack: https://<environment host>/oauth, one per customer, so no
	// default token URL; the API key goes as raw HTTP Basic, as its page
	// shows.
	providerMetapack: {
		grantType:  upstream.GrantClientCredentials,
		authMethod: upstream.AuthClientSecretBasicRaw,
	},
	providerCameraManager: {
		tokenURL:       "https://rest.cameramanager.com/oauth/token",
		revocationURL:  "https://rest.cameramanager.com/rest/v2.0/users/self/tokens/current",
		grantType:      upstream.GrantPassword,
		authMethod:     upstream.AuthClientSecretBasicRaw,
		passwordScopes: []string{"write"},
		tokenPerLease:  true,
	},
	providerOAuth2: {
		grantType:  upstream.GrantClientCredentials,
		authMethod: upstream.AuthClientSecretBasic,
	},
}

func providerNames() []string {
	return []string{providerMapsIndoors, providerMetapack, providerCameraManager, providerOAuth2}
}
