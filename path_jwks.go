package mapsindoors

import (
	"context"
	"net/http"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const (
	jwksPath = "jwks"

	pathJWKSHelpSyn  = "The public keys of the mount's private_key_jwt client assertions, as a JWKS."
	pathJWKSHelpDesc = `
With token_auth_method=private_key_jwt the mount signs a client assertion for
every token request and revocation with a key it made itself and never
returns. This path returns the public halves as a bare JWKS document
({"keys": [...]}, not inside Vault's data envelope), each with kty, kid,
use=sig and alg: register it at the authorization server, or give the server
this path's URL as the client's jwks_uri. It is readable without a Vault
token. During a rollover it lists the next key before that key signs, and
the previous one until previous_secret_grace has passed.
`
)

func pathJWKS(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern: jwksPath,
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationVerb:   "read",
			OperationSuffix: "jwks",
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback: b.pathJWKSRead,
				Summary:  "The public signing keys as a bare JWKS document; no Vault token needed.",
			},
		},
		HelpSynopsis:    pathJWKSHelpSyn,
		HelpDescription: strings.TrimSpace(pathJWKSHelpDesc),
	}}
}

// pathJWKSRead answers from memory: a server fetches this while a token
// request of the mount's waits for its answer, so it must take no lock a
// token request or a rotation holds. Only the first read after a start or
// an invalidation reads storage.
func (b *backend) pathJWKSRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	snap, err := b.keys.load(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]any{
		logical.HTTPStatusCode:  http.StatusOK,
		logical.HTTPContentType: "application/json",
		logical.HTTPRawBody:     snap.jwks,
	}}, nil
}
