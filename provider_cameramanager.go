package mapsindoors

import "github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"

// CameraManager (Eagle Eye Networks): a user's password login with the API
// key as raw HTTP Basic, a refresh token that works until logout, and a
// logout that deletes a token and its refresh token. Every lease gets a
// token of its own, logged out when the lease ends.
func init() {
	//nolint:gosec // G101: the vendor's public token endpoint URLs, not credentials.
	registerProvider(&provider{
		name:           "cameramanager",
		title:          "CameraManager (Eagle Eye Networks)",
		tokenURL:       "https://rest.cameramanager.com/oauth/token",
		revocationURL:  "https://rest.cameramanager.com/rest/v2.0/users/self/tokens/current",
		grantType:      upstream.GrantPassword,
		authMethod:     upstream.AuthClientSecretBasicRaw,
		passwordScopes: []string{"write"},
		tokenPerLease:  true,

		// Its logout is a DELETE with the token as bearer, not RFC 7009.
		revocationStyle: upstream.RevocationLogout,
	})
}
