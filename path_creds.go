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

//nolint:gosec // G101: the lease type's name and help text, not a credential.
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

func (b *backend) pathCredsRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	role, err := b.role(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if role == nil {
		return logical.ErrorResponse("role %q does not exist; create it with: vault write %sroles/%s ttl=5m", name, req.MountPoint, name), nil
	}
	cfg, client, err := b.upstreamClient(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return errorResponse(errNoConfig(req.MountPoint))
	}

	scopes := role.Scopes
	if len(scopes) == 0 {
		scopes = cfg.Scopes
	}
	treq := upstream.TokenRequest{Scopes: scopes, Params: role.tokenParams()}
	perLease := cfg.provider().tokenPerLease || role.TokenPerLease
	var tok *upstream.Token
	if perLease {
		tok, err = b.leaseToken(ctx, req.MountPoint, name, cfg, client, treq)
	} else {
		tok, err = b.roleToken(ctx, req.MountPoint, name, role, cfg, client, treq)
	}
	if err != nil {
		b.Logger().Warn("token request failed", "mount", req.MountPoint, "role", name, "error", err)
		return errorResponse(err)
	}

	now := b.now()
	lease := leaseDuration(tok, role.TTL, now)
	if lease < time.Second {
		return nil, logical.CodedError(http.StatusBadGateway, fmt.Sprintf(
			"the upstream issued a token that lives %s, too short to lease with a %s safety margin",
			tok.Lifetime(), safetyMargin(tok.Lifetime())))
	}
	internal := map[string]any{
		"role":       name,
		"expires_at": tok.ExpiresAt.UTC().Format(time.RFC3339),
	}
	if perLease {
		// Kept with the lease (in Vault's encrypted storage, not in the
		// response or the audit log) so the revocation can revoke it
		// (lease_revoke.go).
		keepForRevocation(internal, cfg, tok.AccessToken)
	}
	resp := b.Secret(secretTypeToken).Response(map[string]any{
		"access_token": tok.AccessToken,
		"token_type":   tok.TokenType,
		"expires_in":   int64(tok.ExpiresAt.Sub(now) / time.Second),
		"expires_at":   tok.ExpiresAt.UTC().Format(time.RFC3339),
		"scope":        tok.Scope,
		"role":         name,
	}, internal)
	resp.Secret.TTL = lease
	resp.Secret.MaxTTL = lease
	return resp, nil
}

// roleToken returns the role's cached token while it is reusable, and
// otherwise fetches one; concurrent callers for the same role and request
// share a single upstream call.
func (b *backend) roleToken(ctx context.Context, mount, name string, role *roleEntry, cfg *config, client upstream.Client, treq upstream.TokenRequest) (*upstream.Token, error) {
	request := strings.Join(treq.Scopes, " ") + "\x00" + treq.Params.Encode()
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
		b.Logger().Debug("fetched upstream token", "mount", mount, "role", name, "lifetime", tok.Lifetime().String())
		return tok, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*upstream.Token), nil
}

// leaseToken gets a token of its own for one lease: with the refresh
// token while it works, else with the password, keeping the new refresh
// token in memory only (never in storage, so no read writes storage).
func (b *backend) leaseToken(ctx context.Context, mount, name string, cfg *config, client upstream.Client, treq upstream.TokenRequest) (*upstream.Token, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
	defer cancel()
	gen, refresh := b.refreshToken()
	if refresh != "" {
		tok, err := client.Refresh(ctx, refresh, treq)
		if err == nil {
			b.setRefreshToken(gen, tok.RefreshToken)
			return tok, nil
		}
		var ue *upstream.Error
		if !errors.As(err, &ue) || ue.StatusCode < 400 || ue.StatusCode > 499 {
			return nil, err
		}
		// Refused (logged out, expired): log in again with the password.
		b.Logger().Debug("the refresh token was refused; logging in with the password", "mount", mount, "role", name, "error", err)
	}
	tok, err := client.Token(ctx, treq)
	if err != nil {
		return nil, err
	}
	b.setRefreshToken(gen, tok.RefreshToken)
	return tok, nil
}
