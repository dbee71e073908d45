package mapsindoors

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// Keys of a lease's internal data. It stays in Vault's encrypted lease
// storage and comes back on revocation; it never reaches a client or the
// audit log.
const (
	leaseInternalRole      = "role"
	leaseInternalExpiresAt = "expires_at"
	// leaseInternalToken is the lease's own token, kept only when the
	// lease has one (token_per_lease) and the config can revoke it.
	leaseInternalToken = "access_token"
	// leaseInternalRevocationURL is where the token was to be revoked when
	// it was issued: a token is never sent anywhere else, whatever the
	// config says by the time the lease ends.
	leaseInternalRevocationURL = "revocation_url"
)

// revocation is how the provider's servers revoke a token at
// revocation_url: RFC 7009 unless the provider logs tokens out otherwise.
func (p *provider) revocation() upstream.RevocationStyle {
	if p == nil || p.revocationStyle == "" {
		return upstream.RevocationRFC7009
	}
	return p.revocationStyle
}

// keepForRevocation puts a lease's own token in its internal data, with
// where to revoke it, when the config can revoke it at all.
func keepForRevocation(internal map[string]any, cfg *config, token string) {
	if cfg.RevocationURL == "" {
		return // nothing could revoke it: it expires by itself
	}
	internal[leaseInternalToken] = token
	internal[leaseInternalRevocationURL] = cfg.RevocationURL
}

// tokenRevoke ends a lease. Where the lease has a token of its own, it
// revokes it at the server, with the client authentication of the token
// request (a fresh assertion with private_key_jwt), or by logging it out
// as the provider does. No lease ever sticks: a token past its expiry needs
// nothing, a token the server says is gone is done, and a revocation that
// cannot be made (no config any more, a revocation URL that changed, a
// refusal of the client's authentication) is logged and ends the lease,
// since retrying could not help and the token expires by itself. Only a
// failure that may pass (the network, a 5xx, a 429) is an error, which makes
// Vault retry.
func (b *backend) tokenRevoke(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	in := req.Secret.InternalData
	role, _ := in[leaseInternalRole].(string)
	token, _ := in[leaseInternalToken].(string)
	expiresAt, _ := in[leaseInternalExpiresAt].(string)
	recordedURL, _ := in[leaseInternalRevocationURL].(string)
	log := b.Logger().With("mount", req.MountPoint, "role", role)
	if token == "" {
		log.Debug("lease revoked; the token expires upstream by itself")
		return nil, nil
	}
	if exp, err := time.Parse(time.RFC3339, expiresAt); err == nil && !b.now().Before(exp) {
		log.Debug("lease revoked; its token had expired already", "expires_at", expiresAt)
		return nil, nil
	}
	cfg, client, err := b.upstreamClient(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	switch {
	case cfg == nil:
		log.Warn("lease revoked, but its token could not be revoked upstream: the mount has no config to authenticate with; "+
			"the token expires by itself", "expires_at", expiresAt)
		return nil, nil
	case cfg.RevocationURL == "" || (recordedURL != "" && recordedURL != cfg.RevocationURL):
		// Sending the token to another place than the one it was to be
		// revoked at could hand it to another server.
		log.Warn("lease revoked, but its token was not revoked upstream: the config's revocation_url is not the one the token "+
			"was issued under; the token expires by itself", "expires_at", expiresAt)
		return nil, nil
	}
	err = withTimeoutErr(ctx, cfg.RequestTimeout, func(ctx context.Context) error { return client.Logout(ctx, token) })
	switch {
	case err == nil:
		log.Debug("lease revoked and its token revoked upstream")
	case revocationMayPass(err):
		log.Warn("revoking the lease's token failed; Vault retries the revocation", "error", err)
		return nil, fmt.Errorf("log the token out: %w", err)
	default:
		log.Warn("lease revoked, but the server refused to revoke its token; the token expires by itself",
			"expires_at", expiresAt, "error", err)
	}
	return nil, nil
}

// revocationMayPass says whether a failed revocation is worth retrying: no
// answer at all, a 5xx, or a 429. Any other answer is final: a 400/401/
// 403/404/410 to a logout says the token is gone already, and an RFC 7009
// refusal (invalid_client, unsupported_token_type) will not change by
// itself.
func revocationMayPass(err error) bool {
	var ue *upstream.Error
	if !errors.As(err, &ue) || ue.StatusCode == 0 {
		return true
	}
	return ue.StatusCode >= 500 || ue.StatusCode == http.StatusTooManyRequests
}
