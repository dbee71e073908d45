package mapsindoors

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
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
	return []*framework.Path{rolePath("creds/", "request", "token", logical.ReadOperation, &framework.PathOperation{
		Callback: b.pathCredsRead,
		Summary:  "Get a bearer token for the role, leased for no longer than it lives.",
	}, pathCredsHelpSyn, pathCredsHelpDesc)}
}

// rolePath is a path that names a role after prefix, with one operation.
func rolePath(prefix, verb, suffix string, op logical.Operation, handler *framework.PathOperation, syn, desc string) *framework.Path {
	return &framework.Path{
		Pattern: prefix + roleNameCapture,
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationVerb:   verb,
			OperationSuffix: suffix,
		},
		Fields: map[string]*framework.FieldSchema{
			"name": roleNameField(),
		},
		Operations:      map[logical.Operation]framework.OperationHandler{op: handler},
		HelpSynopsis:    syn,
		HelpDescription: strings.TrimSpace(desc),
	}
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

// roleRead is what a read of a role's token found: the role, the config
// state and the token request they make.
type roleRead struct {
	mount, name string
	// path is the read's path (creds/<role> or static-creds/<role>), which
	// the events it causes name.
	path string
	role *roleEntry
	st   upstreamState
	// cacheGen is the token cache's generation from before the role and
	// config were looked up.
	cacheGen uint64
	treq     upstream.TokenRequest
	// perLease says each lease gets a token of its own (token_per_lease,
	// or a provider that logs tokens out when their lease ends).
	perLease bool
}

// request fingerprints the token request, as the cache keeps it.
func (r *roleRead) request() string {
	return strings.Join(r.treq.Scopes, " ") + "\x00" + r.treq.Params.Encode()
}

// beginRead looks up what a read of the role's token needs; a nil
// roleRead comes with the response or error to answer with.
func (b *backend) beginRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*roleRead, *logical.Response, error) {
	name := d.Get("name").(string)
	if err := checkRoleName(name); err != nil {
		resp, err := errorResponse(err)
		return nil, resp, err
	}
	// Taken before the role and the config are looked up: a token fetched
	// with what this read found is cached only if neither changed since.
	cacheGen := b.tokens.generation()
	role, err := b.role(ctx, req.Storage, name)
	if err != nil {
		return nil, nil, err
	}
	if role == nil {
		return nil, logical.ErrorResponse("role %q does not exist; create it with: vault write %sroles/%s ttl=5m", name, req.MountPoint, name), nil
	}
	st, err := b.upstreamState(ctx, req.Storage)
	if err != nil {
		return nil, nil, err
	}
	if st.cfg == nil {
		resp, err := errorResponse(errNoConfig(req.MountPoint))
		return nil, resp, err
	}
	scopes := role.Scopes
	if len(scopes) == 0 {
		scopes = st.cfg.Scopes
	}
	return &roleRead{
		mount: req.MountPoint, name: name, path: req.Path, role: role, st: st, cacheGen: cacheGen,
		treq:     upstream.TokenRequest{Scopes: scopes, Params: role.tokenParams()},
		perLease: st.cfg.provider().tokenPerLease || role.TokenPerLease,
	}, nil, nil
}

// readFailed answers a read whose token request failed, and logs it once
// per upstream request (a remembered failure is logged at debug).
func (b *backend) readFailed(r *roleRead, err error) (*logical.Response, error) {
	var remembered *backedOffError
	if errors.As(err, &remembered) && remembered.replay {
		b.Logger().Debug("token request not tried: a recent failure is remembered", "mount", r.mount, "role", r.name, "error", err)
	} else {
		b.Logger().Warn("token request failed", "mount", r.mount, "role", r.name, "error", err)
		b.tokenRequestFailed(r, err)
	}
	return errorResponse(err)
}

// errTooShortToLease is the answer while the role's token lives too short
// to back a lease (remembered for its life: see tokenTimes.leasable).
func errTooShortToLease(tok *upstream.Token) error {
	return logical.CodedError(http.StatusBadGateway, fmt.Sprintf(
		"the upstream issued a token that lives %s, too short to lease with a %s safety margin",
		tok.Lifetime(), safetyMargin(tok.Lifetime())))
}

func (b *backend) pathCredsRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	b.metrics.read(pathKindCreds)
	r, resp, err := b.beginRead(ctx, req, d)
	if r == nil {
		return resp, err
	}
	var tok *upstream.Token
	if r.perLease {
		tok, err = b.leaseToken(ctx, r.mount, r.name, r.st, r.treq)
	} else {
		var shared *sharedToken
		if shared, err = b.roleToken(ctx, r); err == nil {
			if !shared.leasable {
				return nil, errTooShortToLease(shared.Token)
			}
			tok = shared.Token
		}
	}
	if err != nil {
		return b.readFailed(r, err)
	}

	now := b.now()
	lease := leaseDuration(tok, r.role.TTL, now)
	if lease < time.Second {
		return nil, errTooShortToLease(tok)
	}
	internal := map[string]any{
		leaseRole:      r.name,
		leaseExpiresAt: tok.ExpiresAt.UTC().Format(time.RFC3339),
	}
	if r.perLease && r.st.cfg.RevocationURL != "" {
		// Kept with the lease so the revocation can log the token out,
		// where it was issued, whatever becomes of the config.
		internal[leaseAccessToken] = tok.AccessToken
		maps.Copy(internal, revocationData(r.st.cfg))
	}
	resp = b.Secret(secretTypeToken).Response(tokenFields(r.name, tok, now), internal)
	resp.Secret.TTL = lease
	resp.Secret.MaxTTL = lease
	b.leaseIssued(r, tok)
	return resp, nil
}

// tokenFields are the fields of a token that creds and static-creds share.
func tokenFields(role string, tok *upstream.Token, now time.Time) map[string]any {
	return map[string]any{
		"access_token": tok.AccessToken,
		"token_type":   tok.TokenType,
		"expires_in":   int64(tok.ExpiresAt.Sub(now) / time.Second),
		"expires_at":   tok.ExpiresAt.UTC().Format(time.RFC3339),
		"scope":        tok.Scope,
		"role":         role,
	}
}

// roleToken returns the role's shared token on this node while it is safe
// to serve, and otherwise fetches one, which the read waits for; the next
// token is fetched ahead of the switch (fetch_ahead.go), so that a read of
// a warm role never waits.
func (b *backend) roleToken(ctx context.Context, r *roleRead) (*sharedToken, error) {
	request := r.request()
	tok, step, warm := b.tokens.lookup(r.name, request, b.now(), true, r.st.gen)
	if tok != nil {
		b.metrics.cacheHit()
		b.stepAhead(r, request, tok, step)
		return tok, nil
	}
	b.metrics.cacheMiss()
	b.metrics.readWaited(warm)
	tok, err := b.fetchShared(ctx, r, request, false)
	if err != nil {
		return nil, err
	}
	// The first read of the new token's window may arm its fetch ahead.
	if cur, step, _ := b.tokens.lookup(r.name, request, b.now(), true, r.st.gen); cur == tok {
		b.stepAhead(r, request, cur, step)
	}
	return tok, nil
}

// fetchShared gets the role's token from the upstream: the one to serve
// now, or, ahead, the next one. Concurrent callers for the same role,
// request and config generation share a single upstream call.
func (b *backend) fetchShared(ctx context.Context, r *roleRead, request string, ahead bool) (*sharedToken, error) {
	// The generation in the key keeps a read that found a new config out of
	// a fetch made with the old one.
	key := strconv.FormatUint(r.st.gen, 10) + "\x00" + r.name + "\x00" + request
	v, err, _ := b.flight.Do(key, func() (any, error) {
		// A flight that just landed may have filled the cache.
		if !ahead {
			if tok, _, _ := b.tokens.lookup(r.name, request, b.now(), false, r.st.gen); tok != nil {
				return tok, nil
			}
		}
		// Checked in the flight, so that every reader that joins it shares
		// the answer of a remembered failure too.
		if err := b.outages.check(r.name, r.st.gen, b.now()); err != nil {
			return nil, err
		}
		if ahead {
			b.metrics.aheadRequested()
		}
		// The fetch serves every waiter, so the first caller's cancellation
		// must not fail the others; the config's timeout still bounds it.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.st.cfg.RequestTimeout)
		defer cancel()
		tok, err := r.st.client.Token(fctx, r.treq)
		if err != nil {
			return nil, b.outages.record(r.name, r.st.gen, err, b.now())
		}
		b.outages.succeeded(r.name, r.st.gen)
		shared := &sharedToken{Token: tok, tokenTimes: scheduleToken(tok, r.role.TTL), configGen: r.st.gen}
		b.tokens.install(r.name, request, shared, r.cacheGen, b.now())
		b.tokenIssued(r, tok, ahead)
		b.Logger().Debug("fetched upstream token", "mount", r.mount, "role", r.name, "lifetime", tok.Lifetime().String(), "ahead", ahead)
		return shared, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*sharedToken), nil
}

// leaseToken gets a token of its own for one lease: with the refresh
// token while it works, else with the password, keeping the new refresh
// token in memory only (never in storage, so no read writes storage).
//
// Only a refresh the upstream refuses (a 4xx other than 429) falls back to
// the password: a 429 or a 5xx would be answered no better by a login. One
// password login runs at a time, and a refused one backs off (see
// passwordBackoffMin), since a login per read is what locks accounts.
func (b *backend) leaseToken(ctx context.Context, mount, name string, st upstreamState, treq upstream.TokenRequest) (*upstream.Token, error) {
	ctx, cancel := context.WithTimeout(ctx, st.cfg.RequestTimeout)
	defer cancel()
	if err := b.outages.check(name, st.gen, b.now()); err != nil {
		return nil, err
	}
	log := b.Logger().With("mount", mount, "role", name)
	// done remembers a failure, or forgets the failures before a success.
	done := func(tok *upstream.Token, err error) (*upstream.Token, error) {
		if err != nil {
			return nil, b.outages.record(name, st.gen, err, b.now())
		}
		b.outages.succeeded(name, st.gen)
		return tok, nil
	}
	// The refresh memory belongs to the config this read looked up: after
	// a change, what this read logs in for is not kept for the new config.
	gen := st.gen
	refresh := b.refreshToken(gen)
	if refresh != "" {
		if tok, err := b.refreshLeaseToken(ctx, log, gen, refresh, st.client, treq); tok != nil || err != nil {
			return done(tok, err)
		}
	}

	select {
	case b.loginSem <- struct{}{}:
	case <-ctx.Done():
		// Not remembered: the failure, if any, is the other read's.
		return nil, &upstream.Error{Op: "token request", Description: "timed out waiting for another read's password login"}
	}
	// Released after the outcome is remembered, so that a read that waited
	// sees it.
	defer func() { <-b.loginSem }()
	// Another read may have logged in while this one waited: refresh with
	// the token its login brought. Or it failed, and that is remembered.
	if rt := b.refreshToken(gen); rt != "" && rt != refresh {
		if tok, err := b.refreshLeaseToken(ctx, log, gen, rt, st.client, treq); tok != nil || err != nil {
			return done(tok, err)
		}
	}
	if err := b.outages.check(name, st.gen, b.now()); err != nil {
		return nil, err
	}
	// The client's login memory holds back a login it must not make, and
	// remembers a refused one (guardedClient).
	tok, err := st.client.Token(ctx, treq)
	if err != nil {
		if refusedByUpstream(err) {
			// A refused password has a back-off of its own.
			return nil, err
		}
		return done(nil, err)
	}
	b.setRefreshToken(gen, tok.RefreshToken)
	return done(tok, nil)
}

// refreshLeaseToken gets a lease's token with a refresh token. A refresh
// token the upstream refuses is forgotten, and nil, nil says to log in
// with the password instead.
func (b *backend) refreshLeaseToken(ctx context.Context, log hclog.Logger, gen uint64, refresh string, client upstream.Client, treq upstream.TokenRequest) (*upstream.Token, error) {
	tok, err := client.Refresh(ctx, refresh, treq)
	if err == nil {
		b.setRefreshToken(gen, tok.RefreshToken)
		return tok, nil
	}
	if !refusedByUpstream(err) {
		return nil, err
	}
	// Refused (logged out, expired): log in again with the password.
	b.dropRefreshToken(gen, refresh)
	log.Debug("the refresh token was refused; logging in with the password", "error", err)
	return nil, nil
}
