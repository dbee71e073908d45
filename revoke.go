package mapsindoors

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
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
	// leaseRevocationURL, leaseCAHash and leaseRequestTimeout are what the
	// logout needs, kept at issue so that the token is sent only to where
	// it was issued, trusting the CAs it was issued under. None of them is
	// a secret. The CA bundle itself (up to 256 KiB) is not copied into
	// every lease: its hash says whether the config's bundle is still the
	// one, which survives restarts as the config does.
	leaseRevocationURL  = "revocation_url"
	leaseCAHash         = "ca_cert_sha256"
	leaseRequestTimeout = "request_timeout"
	// leaseCACert is the bundle itself, as leases issued before
	// leaseCAHash kept it; such leases are still revoked with it.
	leaseCACert = "ca_cert"
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
		leaseCAHash:          caHash(cfg.CACert),
		leaseRequestTimeout:  cfg.RequestTimeout.String(),
		leaseRevocationStyle: string(cfg.provider().revocation()),
	}
}

// caHash identifies a CA bundle: the hex SHA-256 of its text, or "" for
// none (the system roots).
func caHash(caPEM string) string {
	if caPEM == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(caPEM))
	return hex.EncodeToString(sum[:])
}

// leaseTrusts says whether cfg trusts the CAs the lease's token was issued
// under: the same bundle, by hash or (older leases) as kept in the lease.
func leaseTrusts(in map[string]any, cfg *config) bool {
	if ca, old := in[leaseCACert].(string); old {
		return cfg.CACert == ca
	}
	hash, _ := in[leaseCAHash].(string)
	return caHash(cfg.CACert) == hash
}

// Config CA bundles are kept under their hash, so that a lease issued under
// one is logged out trusting it after the config changed or was deleted.
// At most maxRevocationCAs are kept (each at most 256 KiB, under the half of
// Raft's 1 MiB entry limit); the oldest goes first.
const (
	revocationCAPrefix = "revocation_ca/"
	maxRevocationCAs   = 8
)

type revocationCA struct {
	PEM      string    `json:"pem"`
	StoredAt time.Time `json:"stored_at"`
}

// keepRevocationCAs stores the CA bundle of each config (nil ones skipped)
// that is not kept yet, before a config write or delete takes it away.
func (b *backend) keepRevocationCAs(ctx context.Context, s logical.Storage, cfgs ...*config) error {
	keep := map[string]string{}
	for _, c := range cfgs {
		if c != nil && c.CACert != "" {
			keep[caHash(c.CACert)] = c.CACert
		}
	}
	if len(keep) == 0 {
		return nil
	}
	kept, err := s.List(ctx, revocationCAPrefix)
	if err != nil {
		return fmt.Errorf("list kept CA bundles: %w", err)
	}
	var add []string
	for hash := range keep {
		if !slices.Contains(kept, hash) {
			add = append(add, hash)
		}
	}
	if len(add) == 0 {
		return nil
	}
	if err := b.dropOldestRevocationCAs(ctx, s, kept, len(kept)+len(add)-maxRevocationCAs, keep); err != nil {
		return err
	}
	for _, hash := range add {
		entry, err := logical.StorageEntryJSON(revocationCAPrefix+hash, revocationCA{PEM: keep[hash], StoredAt: b.now().UTC()})
		if err == nil {
			err = s.Put(ctx, entry)
		}
		if err != nil {
			return fmt.Errorf("keep the CA bundle for revocations: %w", err)
		}
	}
	return nil
}

// dropOldestRevocationCAs deletes the n oldest kept bundles not in spare.
func (b *backend) dropOldestRevocationCAs(ctx context.Context, s logical.Storage, kept []string, n int, spare map[string]string) error {
	if n <= 0 {
		return nil
	}
	type aged struct {
		hash string
		at   time.Time
	}
	var all []aged
	for _, hash := range kept {
		if _, ok := spare[hash]; ok {
			continue
		}
		var ca revocationCA
		if entry, err := s.Get(ctx, revocationCAPrefix+hash); err == nil && entry != nil {
			_ = entry.DecodeJSON(&ca)
		}
		all = append(all, aged{hash, ca.StoredAt})
	}
	slices.SortFunc(all, func(x, y aged) int { return x.at.Compare(y.at) })
	for _, a := range all[:min(n, len(all))] {
		if err := s.Delete(ctx, revocationCAPrefix+a.hash); err != nil {
			return fmt.Errorf("drop an old CA bundle: %w", err)
		}
	}
	return nil
}

// leaseCA is the CA bundle a lease's token was issued under: kept in the
// lease (older leases), none (the system roots), or the kept bundle its
// hash names. ok is false when that bundle is kept nowhere any more.
func (b *backend) leaseCA(ctx context.Context, s logical.Storage, in map[string]any) (ca string, ok bool, err error) {
	if ca, old := in[leaseCACert].(string); old {
		return ca, true, nil
	}
	hash, _ := in[leaseCAHash].(string)
	if hash == "" {
		return "", true, nil
	}
	entry, err := s.Get(ctx, revocationCAPrefix+hash)
	if err != nil || entry == nil {
		return "", false, err
	}
	var kept revocationCA
	if err := entry.DecodeJSON(&kept); err != nil || caHash(kept.PEM) != hash {
		return "", false, nil //nolint:nilerr // a damaged entry trusts nothing
	}
	return kept.PEM, true, nil
}

// tokenRevoke ends a lease. Where the lease kept its token (a token of its
// own: the provider's or token_per_lease), it revokes the token at the
// revocation URL recorded when the lease was issued: a logout, or RFC 7009
// with the token request's client authentication (a fresh assertion with
// private_key_jwt). Only a failure that may pass (the network, a 408, 429,
// 500, 502, 503 or 504) is an error, which makes Vault retry: a token that
// has expired, or that the upstream says is gone, needs nothing more, and
// an answer every retry would get again (a redirect, 405, 501, an RFC 7009
// refusal such as invalid_client) would only end with Vault marking the
// lease irrevocable; such a lease ends with a warning in the log. Other
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
		// whose config no longer logs tokens out; or one whose CAs the
		// config no longer trusts. Retrying cannot help.
		log.Warn("lease revoked, but its token could not be logged out: the mount's config has no revocation_url, "+
			"or no longer trusts the CA bundle the token was issued under; the token expires by itself", "expires_at", expiresAt)
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
	case upstream.IsPermanent(err):
		// A redirect, 405 or 501 is what every retry would get too, until
		// Vault marks the lease irrevocable and a mount disable fails.
		log.Warn("lease revoked, but the upstream answers its logout with what a retry would get again; "+
			"the token expires by itself", "expires_at", expiresAt, "error", err)
		b.tokenRevoked(outcomeExpires)
	default:
		log.Warn("logging the lease's token out failed; Vault retries the revocation", "error", err)
		b.logoutFailed(role, err)
		return nil, fmt.Errorf("log the token out: %w", err)
	}
	return nil, nil
}

// revocationClient is a client that logs out at the lease's recorded
// revocation URL, and a func to call when done with it; nil when nothing
// can log the token out. A lease issued before leases recorded their URL
// is never logged out through the config as it is now: a config writer may
// have moved revocation_url since, and the token would go to that host.
// Such a lease ends, and its token expires by itself.
func (b *backend) revocationClient(ctx context.Context, req *logical.Request) (upstream.Client, time.Duration, func(), error) {
	in := req.Secret.InternalData
	url, _ := in[leaseRevocationURL].(string)
	st, err := b.upstreamState(ctx, req.Storage)
	if err != nil {
		return nil, 0, nil, err
	}
	cfg := st.cfg
	if url == "" {
		return nil, 0, nil, nil
	}

	timeout, err := time.ParseDuration(fmt.Sprint(in[leaseRequestTimeout]))
	if err != nil || timeout <= 0 || timeout > maxRequestTimeout {
		timeout = upstream.DefaultTimeout
	}
	if cfg != nil && cfg.RevocationURL == url && leaseTrusts(in, cfg) {
		// The config still logs out where the lease was issued, trusting
		// the same CAs: its client has the connections to reuse.
		return st.client, timeout, func() {}, nil
	}
	ca, ok, err := b.leaseCA(ctx, req.Storage, in)
	if err != nil {
		return nil, 0, nil, err
	}
	if !ok {
		// Issued under a bundle that is kept nowhere any more: no other
		// CAs are trusted with the token.
		return nil, 0, nil, nil
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
// else: the lease ends with a warning, as the token expires by itself. Only
// an answer that says "not now" is retried (upstream.IsPermanent): 200 is
// all a server says of a token it does not know, and a refusal or a
// redirect will not pass by itself.
func (b *backend) revokeRFC7009(ctx context.Context, req *logical.Request, log hclog.Logger) (*logical.Response, error) {
	in := req.Secret.InternalData
	role, _ := in[leaseRole].(string)
	token, _ := in[leaseAccessToken].(string)
	expiresAt, _ := in[leaseExpiresAt].(string)
	url, _ := in[leaseRevocationURL].(string)
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
	case cfg.RevocationURL != url || !leaseTrusts(in, cfg):
		log.Warn("lease revoked, but its token was not revoked upstream: the config's revocation_url (or ca_cert) is not the one "+
			"the token was issued under, and the token goes nowhere else; it expires by itself", "expires_at", expiresAt)
		b.tokenRevoked(outcomeExpires)
		return nil, nil
	}
	err = withTimeoutErr(ctx, st.cfg.RequestTimeout, func(ctx context.Context) error { return st.client.Logout(ctx, token) })
	switch {
	case err == nil:
		log.Debug("lease revoked and its token revoked upstream")
		b.tokenRevoked(outcomeLoggedOut)
	case upstream.IsPermanent(err):
		// A refusal (invalid_client, unsupported_token_type), a redirect
		// or a 501 will not pass by itself.
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
