package mapsindoors

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

//nolint:gosec // G101: help texts, not credentials.
const (
	pathStaticCredsHelpSyn  = "Get the role's shared bearer token without a lease."
	pathStaticCredsHelpDesc = `
Reading static-creds/<role> returns the token every reader of the role
shares, without a Vault lease: nothing is written to Vault's storage per
read. Beside the fields of creds it returns ttl (whole seconds until this
token is replaced: a read after that gets a newer one), rotation_period
(seconds from this token's fetch to its replacement) and last_vault_rotation
(when it was fetched), which Vault Agent templates and the Vault Secrets
Operator (allowStaticCreds: true) re-read by. A token handed out still lives
at least the safety margin (a tenth of its lifetime, 2 s to a minute) after
a reader that comes back at ttl + 2 s, and usually far longer.

Roles that give each lease a token of its own (token_per_lease, or a provider
that logs tokens out when their lease ends) have no shared token: read
creds/<role> for them.
`
	pathRotateRoleHelpSyn  = "Replace a role's shared token now."
	pathRotateRoleHelpDesc = `
Writing rotate-role/<role> drops the role's shared token on the active node
(and the next one if it was fetched ahead), and revokes them at the config's
revocation_url by RFC 7009 where there is one; the next read of creds or
static-creds gets a new token. Use it when a token leaked. Performance
standbys keep the tokens they fetched themselves until those are replaced;
without a revocation_url the dropped token stays valid upstream until it
expires. Leases already issued keep their token.
`
)

func pathStaticCreds(b *backend) []*framework.Path {
	return []*framework.Path{
		rolePath("static-creds/", "request", "static-token", logical.ReadOperation, &framework.PathOperation{
			Callback: b.pathStaticCredsRead,
			Summary:  "Get the role's shared bearer token, without a lease, with when it is replaced.",
		}, pathStaticCredsHelpSyn, pathStaticCredsHelpDesc),
		rolePath("rotate-role/", "rotate", "role-token", logical.UpdateOperation, &framework.PathOperation{
			Callback: b.pathRotateRoleUpdate,
			Summary:  "Drop the role's shared token (revoking it where the config can), so the next read gets a new one.",
			// The active node holds the tokens that fetch ahead.
			ForwardPerformanceStandby: true,
		}, pathRotateRoleHelpSyn, pathRotateRoleHelpDesc),
	}
}

// errNoSharedToken is the answer of static-creds and rotate-role for a
// role whose leases each get a token of their own.
func errNoSharedToken(r *roleRead, advice string) *logical.Response {
	why := fmt.Sprintf("the role has token_per_lease set: read %screds/%s instead", r.mount, r.name)
	if !r.role.TokenPerLease {
		why = fmt.Sprintf("the %s provider logs each token out when its lease ends: read %screds/%s instead", r.st.cfg.Provider, r.mount, r.name)
	}
	return logical.ErrorResponse("role %q gives each lease a token of its own, so it has no shared token to hand out without a lease or to replace; %s%s", r.name, why, advice)
}

func (b *backend) pathStaticCredsRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	b.metrics.read(pathKindStaticCreds)
	r, resp, err := b.beginRead(ctx, req, d)
	if r == nil {
		return resp, err
	}
	if r.perLease {
		return errNoSharedToken(r, ""), nil
	}
	tok, err := b.roleToken(ctx, r)
	if err != nil {
		return b.readFailed(r, err)
	}
	now := b.now()
	period := tok.switchAt.Sub(tok.IssuedAt)
	if !tok.leasable || period < time.Second {
		return nil, logical.CodedError(http.StatusBadGateway, fmt.Sprintf(
			"the upstream issued a token that lives %s, too short to share without a lease with a %s safety margin; read %screds/%s",
			tok.Lifetime(), safetyMargin(tok.Lifetime()), r.mount, r.name))
	}
	data := tokenFields(r.name, tok.Token, now)
	data["ttl"] = wholeSecondsUntil(now, tok.switchAt)
	data["rotation_period"] = int64(period.Round(time.Second) / time.Second)
	data["last_vault_rotation"] = tok.IssuedAt.UTC().Format(time.RFC3339Nano)
	return &logical.Response{Data: data}, nil
}

// wholeSecondsUntil is the time from now to t in whole seconds, rounded
// up (a read after now plus that many seconds is at or after t), and 0
// once t has come.
func wholeSecondsUntil(now, t time.Time) int64 {
	d := t.Sub(now)
	if d <= 0 {
		return 0
	}
	return int64(math.Ceil(d.Seconds()))
}

func (b *backend) pathRotateRoleUpdate(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	r, resp, err := b.beginRead(ctx, req, d)
	if r == nil {
		return resp, err
	}
	if r.perLease {
		return errNoSharedToken(r, fmt.Sprintf("; to end those tokens, revoke their leases: vault lease revoke -prefix %screds/%s", r.mount, r.name)), nil
	}
	dropped := b.tokens.take(r.name)
	log := b.Logger().With("mount", r.mount, "role", r.name)
	out := &logical.Response{Data: map[string]any{"role": r.name, "dropped": len(dropped), "revoked": 0}}
	now := b.now()
	canRevoke := r.st.cfg.RevocationURL != "" && r.st.cfg.provider().revocation() == upstream.RevocationRFC7009
	revoked := 0
	for _, tok := range dropped {
		if !now.Before(tok.ExpiresAt) {
			continue
		}
		if !canRevoke {
			out.AddWarning(fmt.Sprintf("a dropped token stays valid upstream until it expires at %s: the config has no RFC 7009 revocation_url",
				tok.ExpiresAt.UTC().Format(time.RFC3339)))
			continue
		}
		err := withTimeoutErr(ctx, r.st.cfg.RequestTimeout, func(ctx context.Context) error { return r.st.client.Logout(ctx, tok.AccessToken) })
		if err != nil {
			log.Warn("a dropped token could not be revoked upstream; it expires by itself", "expires_at", tok.ExpiresAt.UTC().Format(time.RFC3339), "error", err)
			out.AddWarning(fmt.Sprintf("a dropped token could not be revoked upstream (%s); it stays valid until %s",
				err, tok.ExpiresAt.UTC().Format(time.RFC3339)))
			continue
		}
		revoked++
	}
	out.Data["revoked"] = revoked
	log.Info("the role's shared token was dropped; the next read gets a new one", "dropped", len(dropped), "revoked", revoked)
	return out, nil
}
