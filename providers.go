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
	tokenURL    string
	rotationURL string
	grantType   upstream.GrantType
	authMethod  upstream.AuthMethod
	// passwordClientID and passwordScopes apply to the password grant.
	passwordClientID string
	passwordScopes   []string
	// canRotate says whether the provider has a client-secret API.
	canRotate bool
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
	providerMetapack: {
		grantType:  upstream.GrantClientCredentials,
		authMethod: upstream.AuthClientSecretBasic,
	},
	providerCameraManager: {
		tokenURL:       "https://rest.cameramanager.com/oauth/token",
		grantType:      upstream.GrantPassword,
		authMethod:     upstream.AuthClientSecretBasic,
		passwordScopes: []string{"write"},
	},
	providerOAuth2: {
		grantType:  upstream.GrantClientCredentials,
		authMethod: upstream.AuthClientSecretBasic,
	},
}

func providerNames() []string {
	return []string{providerMapsIndoors, providerMetapack, providerCameraManager, providerOAuth2}
}
