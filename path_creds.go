package mapsindoors

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

const (
	secretTypeToken = "mapsindoors_token"

	pathCredsHelpSyn  = "Get a short-lived bearer token for a role."
	pathCredsHelpDesc = `
Reading creds/<role> returns an access token as a lease that is not
renewable and ends before the token does. Read it again when the lease ends
(Vault Agent templates do that by themselves). Tokens are shared between
reads while they have comfortably more life left than the lease they back.
`
)

func pathCreds(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern: "creds/" + framework.GenericNameRegex("name"),
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationVerb:   "request",
			OperationSuffix: "token",
		},
		Fields: map[string]*framework.FieldSchema{
			"name": {
				Type:        framework.TypeLowerCaseString,
				Description: "Name of the role.",
				Required:    true,
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback: b.pathCredsRead,
				Summary:  "Get a bearer token for the role, leased for no longer than it lives.",
			},
		},
		HelpSynopsis:    pathCredsHelpSyn,
		HelpDescription: strings.TrimSpace(pathCredsHelpDesc),
	}}
}

func secretToken(b *backend) *framework.Secret {
	return &framework.Secret{
		Type: secretTypeToken,
		Fields: map[string]*framework.FieldSchema{
			"access_token": {Type: framework.TypeString, Description: "The bearer token."},
		},
		// No Renew: a renewal could not make the token live longer, and a
		// non-renewable lease is what makes Vault Agent re-read in time.
		Revoke: b.tokenRevoke,
	}
}

// tokenRevoke ends a lease. An OAuth2 access token from a client
// credentials grant cannot be revoked at MapsIndoors; it simply expires,
// never later than its lease plus the safety margin.
func (b *backend) tokenRevoke(_ context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	role, _ := req.Secret.InternalData["role"].(string)
	b.Logger().Debug("lease revoked; the token expires upstream by itself", "mount", req.MountPoint, "role", role)
	return nil, nil
}

func (b *backend) pathCredsRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	role, err := b.role(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if role == nil {
		return logical.ErrorResponse("role %q does not exist; create it with: vault write %sroles/%s ttl=5m", name, req.MountPoint, name), nil
	}
	cfg, client, err := b.clientConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return logical.ErrorResponse("this mount has no config; write %sconfig with the client credentials first", req.MountPoint), nil
	}

	scopes := role.Scopes
	if len(scopes) == 0 {
		scopes = cfg.Scopes
	}
	tok, err := b.roleToken(ctx, name, role, cfg, client, upstream.TokenRequest{Scopes: scopes})
	if err != nil {
		b.Logger().Warn("token request failed", "mount", req.MountPoint, "role", name, "error", err)
		return nil, upstreamError(err)
	}

	now := b.now()
	lease := leaseDuration(tok, role.TTL, now)
	if lease < time.Second {
		return nil, logical.CodedError(http.StatusBadGateway, fmt.Sprintf(
			"the upstream issued a token that lives %s, too short to lease with a %s safety margin",
			tok.Lifetime(), safetyMargin(tok.Lifetime())))
	}
	resp := b.Secret(secretTypeToken).Response(map[string]any{
		"access_token": tok.AccessToken,
		"token_type":   tok.TokenType,
		"expires_in":   int64(tok.ExpiresAt.Sub(now) / time.Second),
		"expires_at":   tok.ExpiresAt.UTC().Format(time.RFC3339),
		"scope":        tok.Scope,
		"role":         name,
	}, map[string]any{
		"role":       name,
		"expires_at": tok.ExpiresAt.UTC().Format(time.RFC3339),
	})
	resp.Secret.TTL = lease
	resp.Secret.MaxTTL = lease
	return resp, nil
}

// roleToken returns the role's cached token while it is reusable, and
// otherwise fetches one; concurrent callers for the same role and request
// share a single upstream call.
func (b *backend) roleToken(ctx context.Context, name string, role *roleEntry, cfg *mapsConfig, client upstream.Client, treq upstream.TokenRequest) (*upstream.Token, error) {
	request := strings.Join(treq.Scopes, " ")
	if tok, _ := b.tokens.get(name, request); tok != nil && reusable(tok, role.TTL, b.now()) {
		return tok, nil
	}
	v, err, _ := b.flight.Do(name+"\x00"+request, func() (any, error) {
		// A flight that just landed may have filled the cache.
		tok, gen := b.tokens.get(name, request)
		if tok != nil && reusable(tok, role.TTL, b.now()) {
			return tok, nil
		}
		// The fetch serves every waiter, so the first caller's cancellation
		// must not fail the others; the config's timeout still bounds it.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.RequestTimeout)
		defer cancel()
		tok, err := client.Token(fctx, treq)
		if err != nil {
			return nil, err
		}
		b.tokens.put(name, request, tok, gen)
		b.Logger().Debug("fetched upstream token", "role", name, "lifetime", tok.Lifetime().String())
		return tok, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*upstream.Token), nil
}

// upstreamError is what a caller sees of a failed upstream exchange: a 502
// naming the upstream's status and OAuth2 error, never a credential.
func upstreamError(err error) error {
	var ue *upstream.Error
	if errors.As(err, &ue) {
		msg := err.Error()
		if upstream.IsInvalidClient(err) {
			msg += "; check client_id and client_secret in config"
		}
		return logical.CodedError(http.StatusBadGateway, msg)
	}
	return fmt.Errorf("upstream: %w", err)
}
