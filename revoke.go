package mapsindoors

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// Keys of a lease's internal data. It is kept in Vault's encrypted lease
// storage and handed back on revocation; it never reaches a client or the
// audit log.
const (
	leaseRole      = "role"
	leaseExpiresAt = "expires_at"
	// leaseAccessToken is the lease's own token, kept only where the
	// provider logs tokens out when their lease ends.
	leaseAccessToken = "access_token"
	// leaseRevocationURL, leaseCACert and leaseRequestTimeout are what the
	// logout needs, kept at issue so that the revocation works whatever
	// became of the config, and sends the token only to where it was
	// issued. None of them is a secret.
	leaseRevocationURL  = "revocation_url"
	leaseCACert         = "ca_cert"
	leaseRequestTimeout = "request_timeout"
	// leaseRevocationStyle is how the token is revoked there: a logout,
	// or RFC 7009, which needs the config's client authentication.
	leaseRevocationStyle = "revocation_style"
)

// revocation is how the provider's servers revoke a token at
// revocation_url: RFC 7009 unless the provider logs tokens out otherwise.
func (p *provider) revocation() upstream.RevocationStyle {
	if p == nil || p.revocationStyle == "" {
		return upstream.RevocationRFC7009
	}
	return p.revocationStyle
}

// revocationData is what a lease whose token is logged out keeps of the
// config it was issued under. Values are strings: internal data goes
// through JSON in Vault's lease storage and over the plugin's gRPC hop.
func revocationData(cfg *config) map[string]any {
	return map[string]any{
		leaseRevocationURL:   cfg.RevocationURL,
		leaseCACert:          cfg.CACert,
		leaseRequestTimeout:  cfg.RequestTimeout.String(),
		leaseRevocationStyle: string(cfg.provider().revocation()),
	}
}

// tokenRevoke ends a lease. Where the lease kept its token (a token of its
// own: the provider's or token_per_lease), it revokes the token at the
// revocation URL recorded when the lease was issued: a logout, or RFC 7009
// with the token request's client authentication (a fresh assertion with
// private_key_jwt). Only a failure that may pass (the network, a 5xx, a
// 429) is an error, which makes Vault retry: a token that has expired, or
// that the upstream says is gone, needs nothing more, and retrying it would
// only end with Vault marking the lease irrevocable. Nor does an RFC 7009
// refusal (invalid_client, unsupported_token_type) pass by itself. Other
// tokens cannot be revoked upstream: they expire by themselves, never
// later than their lease plus the safety margin.
func (b *backend) tokenRevoke(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	in := req.Secret.InternalData
	role, _ := in[leaseRole].(string)
	token, _ := in[leaseAccessToken].(string)
	expiresAt, _ := in[leaseExpiresAt].(string)
	log := b.Logger().With("mount", req.MountPoint, "role", role)
	if token == "" {
		log.Debug("lease revoked; the token expires upstream by itself")
		b.tokenRevoked(outcomeExpires)
		return nil, nil
	}
	if exp, err := time.Parse(time.RFC3339, expiresAt); err == nil && !b.now().Before(exp) {
		log.Debug("lease revoked; its token had already expired", "expires_at", expiresAt)
		b.tokenRevoked(outcomeExpires)
		return nil, nil
	}

	if style, _ := in[leaseRevocationStyle].(string); style == string(upstream.RevocationRFC7009) {
		return b.revokeRFC7009(ctx, req, log)
	}
	client, timeout, done, err := b.revocationClient(ctx, req)
	if err != nil {
		return nil, err
	}
	if client == nil {
		// A lease from before leases kept their revocation URL, on a mount
		// whose config no longer logs tokens out. Retrying cannot help.
		log.Warn("lease revoked, but its token could not be logged out: the mount's config has no revocation_url; the token expires by itself", "expires_at", expiresAt)
		b.tokenRevoked(outcomeExpires)
		return nil, nil
	}
	defer done()
	err = withTimeoutErr(ctx, timeout, func(ctx context.Context) error { return client.Logout(ctx, token) })
	switch {
	case err == nil:
		log.Debug("lease revoked and its token logged out")
		b.tokenRevoked(outcomeLoggedOut)
	case tokenAlreadyGone(err):
		log.Debug("lease revoked; the upstream says its token is already gone", "error", err)
		b.tokenRevoked(outcomeLoggedOut)
	default:
		log.Warn("logging the lease's token out failed; Vault retries the revocation", "error", err)
		b.logoutFailed(role, err)
		return nil, fmt.Errorf("log the token out: %w", err)
	}
	return nil, nil
}

// revocationClient is a client that logs out at the lease's recorded
// revocation URL, and a func to call when done with it. Leases issued
// before leases recorded it go through the config, if it still logs tokens
// out; nil when nothing can log the token out.
func (b *backend) revocationClient(ctx context.Context, req *logical.Request) (upstream.Client, time.Duration, func(), error) {
	in := req.Secret.InternalData
	url, _ := in[leaseRevocationURL].(string)
	st, err := b.upstreamState(ctx, req.Storage)
	if err != nil {
		return nil, 0, nil, err
	}
	cfg := st.cfg
	if url == "" {
		if cfg == nil || cfg.RevocationURL == "" {
			return nil, 0, nil, nil
		}
		return st.client, cfg.RequestTimeout, func() {}, nil
	}

	ca, _ := in[leaseCACert].(string)
	timeout, err := time.ParseDuration(fmt.Sprint(in[leaseRequestTimeout]))
	if err != nil || timeout <= 0 || timeout > maxRequestTimeout {
		timeout = upstream.DefaultTimeout
	}
	if cfg != nil && cfg.RevocationURL == url && cfg.CACert == ca {
		// The config still logs out where the lease was issued, trusting
		// the same CAs: its client has the connections to reuse.
		return st.client, timeout, func() {}, nil
	}
	// A client for the logout only: it carries no credential, and its
	// token URL is never used (Logout goes to RevocationURL alone).
	client, err := b.newClient(upstream.Config{
		TokenURL:      url,
		RevocationURL: url,
		CACertPEM:     ca,
		Timeout:       timeout,
		GrantType:     upstream.GrantClientCredentials,
		AuthMethod:    upstream.AuthClientSecretPost,
	})
	if err != nil {
		return nil, 0, nil, fmt.Errorf("build the logout client: %w", err)
	}
	return client, timeout, client.Close, nil
}

// tokenAlreadyGone says whether a logout failed because the upstream no
// longer knows the token: it expired, was logged out, or was never valid
// there. That is what a logout wants. 429 is not among them: it says to
// come back later.
func tokenAlreadyGone(err error) bool {
	var ue *upstream.Error
	if !errors.As(err, &ue) {
		return false
	}
	switch ue.StatusCode {
	case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusGone:
		return true
	}
	return false
}

// revokeRFC7009 revokes a lease's token by RFC 7009. That takes the client
// authentication of the token request, which only the config has: the
// config's client is used when its revocation_url is the one the lease
// recorded, and trusts the same CAs. Otherwise (no config any more, or one
// that revokes elsewhere) the token cannot be revoked, and goes nowhere
// else: the lease ends with a warning, as the token expires by itself. An
// RFC 7009 answer other than a 5xx or a 429 is final: 200 is all a server
// says of a token it does not know, and a refusal will not pass by itself.
func (b *backend) revokeRFC7009(ctx context.Context, req *logical.Request, log hclog.Logger) (*logical.Response, error) {
	in := req.Secret.InternalData
	role, _ := in[leaseRole].(string)
	token, _ := in[leaseAccessToken].(string)
	expiresAt, _ := in[leaseExpiresAt].(string)
	url, _ := in[leaseRevocationURL].(string)
	ca, _ := in[leaseCACert].(string)
	st, err := b.upstreamState(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	switch cfg := st.cfg; {
	case cfg == nil:
		log.Warn("lease revoked, but its token could not be revoked upstream: the mount has no config to authenticate with; "+
			"the token expires by itself", "expires_at", expiresAt)
		b.tokenRevoked(outcomeExpires)
		return nil, nil
	case cfg.RevocationURL != url || cfg.CACert != ca:
		log.Warn("lease revoked, but its token was not revoked upstream: the config's revocation_url (or ca_cert) is not the one "+
			"the token was issued under, and the token goes nowhere else; it expires by itself", "expires_at", expiresAt)
		b.tokenRevoked(outcomeExpires)
		return nil, nil
	}
	err = withTimeoutErr(ctx, st.cfg.RequestTimeout, func(ctx context.Context) error { return st.client.Logout(ctx, token) })
	var ue *upstream.Error
	switch {
	case err == nil:
		log.Debug("lease revoked and its token revoked upstream")
		b.tokenRevoked(outcomeLoggedOut)
	case errors.As(err, &ue) && ue.StatusCode >= 400 && ue.StatusCode < 500 && ue.StatusCode != http.StatusTooManyRequests:
		log.Warn("lease revoked, but the server refused to revoke its token; the token expires by itself",
			"expires_at", expiresAt, "error", err)
		b.tokenRevoked(outcomeExpires)
	default:
		log.Warn("revoking the lease's token failed; Vault retries the revocation", "error", err)
		b.logoutFailed(role, err)
		return nil, fmt.Errorf("revoke the token: %w", err)
	}
	return nil, nil
}
