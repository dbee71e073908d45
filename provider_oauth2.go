package mapsindoors

import "github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"

// Any RFC 6749 token endpoint: the operator names it with token_url, and
// the client authenticates with HTTP Basic as the RFC prefers.
func init() {
	registerProvider(&provider{
		name:       "oauth2",
		title:      "any RFC 6749 server",
		grantType:  upstream.GrantClientCredentials,
		authMethod: upstream.AuthClientSecretBasic,
		// revocation_url, when the operator sets it, is RFC 7009's.
		revocationStyle: upstream.RevocationRFC7009,
	})
}
