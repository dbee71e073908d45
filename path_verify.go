package mapsindoors

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

const (
	pathVerifyHelpSyn  = "Check that the stored credential still logs in, without handing out a token."
	pathVerifyHelpDesc = `
Reading verify makes one fresh token request with the stored credential (never
a cached token, and the token it gets is thrown away, or logged out where the
provider can) and reports: ok; on failure the upstream's HTTP status, OAuth2
error and the reason; the latency; the token lifetime the upstream grants; the
age of the stored secret; and how the last rotation went. A failed check is
an answer (ok=false), not an error, so monitoring can poll this path. It never
waits for a running rotation and never changes anything.
`

	// verifyConnectionField is a request-only field of config writes. It
	// says how to store this one write, not what the config is, so it is
	// neither stored nor read back.
	verifyConnectionField = "verify_connection"
)

func pathVerify(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern: "verify",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationVerb:   "verify",
			OperationSuffix: "connection",
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback: b.pathVerifyRead,
				Summary:  "Log in with the stored credential and report how it went; never returns a token.",
			},
		},
		HelpSynopsis:    pathVerifyHelpSyn,
		HelpDescription: strings.TrimSpace(pathVerifyHelpDesc),
	}}
}

// loginCheck is what one login with a config showed. It keeps nothing of
// the token but its lifetime, scope and type.
type loginCheck struct {
	err       error
	latency   time.Duration
	lifetime  time.Duration
	scope     string
	tokenType string
}

// checkLogin makes one token request with cfg through a client of its own:
// the cached client and tokens are left alone, and so is the config's write
// lock, so a running rotation neither waits for it nor is waited for. Where
// the provider logs tokens out, the token is logged out again at once. The
// error it returns is for a client that cannot be built; a failed login is
// in the loginCheck.
func (b *backend) checkLogin(ctx context.Context, cfg *config) (loginCheck, error) {
	client, err := b.newClient(cfg.clientConfig())
	if err != nil {
		return loginCheck{}, fmt.Errorf("build upstream client: %w", err)
	}
	defer client.Close()
	start := time.Now()
	tok, err := withTimeout(ctx, cfg.RequestTimeout, func(ctx context.Context) (*upstream.Token, error) {
		return client.Token(ctx, upstream.TokenRequest{Scopes: cfg.Scopes})
	})
	res := loginCheck{err: err, latency: time.Since(start)}
	if err != nil {
		return res, nil
	}
	res.lifetime, res.scope, res.tokenType = tok.Lifetime(), tok.Scope, tok.TokenType
	if cfg.RevocationURL != "" {
		// A check should leave no live session behind (CameraManager's
		// logout also ends the refresh token that came with it).
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.RequestTimeout)
		defer cancel()
		if err := client.Logout(lctx, tok.AccessToken); err != nil {
			b.Logger().Debug("logging out the token of a login check failed; it expires by itself", "error", err)
		}
	}
	return res, nil
}

func (b *backend) pathVerifyRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	stored, err := getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if stored == nil {
		return errorResponse(errNoConfig(req.MountPoint))
	}
	check, err := b.checkLogin(ctx, stored.resolved())
	if err != nil {
		return nil, err
	}
	if check.err != nil && upstream.IsInvalidClient(check.err) {
		// A rotation may have stored a new secret and deleted the one this
		// check read a moment ago: check once more with what is stored now.
		if now, err := getConfig(ctx, req.Storage); err == nil && now != nil &&
			(now.ClientSecret != stored.ClientSecret || now.Password != stored.Password) {
			stored = now
			if check, err = b.checkLogin(ctx, stored.resolved()); err != nil {
				return nil, err
			}
		}
	}

	cfg := stored.resolved()
	data := map[string]any{
		"ok":         check.err == nil,
		"provider":   cfg.Provider,
		"token_url":  cfg.TokenURL,
		"checked_at": formatTime(b.now()),
		"latency_ms": millis(check.latency),
	}
	for k, v := range lastRotation(cfg, b.now()) {
		data[k] = v
	}
	if check.err != nil {
		status, code := upstreamStatus(check.err)
		data["upstream_status"] = status
		data["oauth2_error"] = code
		data["error"] = check.err.Error()
		b.metrics.verification(outcomeFailed)
		b.emit(eventVerifyFailed, append([]string{
			logical.EventMetadataPath, "verify",
			logical.EventMetadataOperation, string(logical.ReadOperation),
		}, upstreamErrorMetadata(check.err)...)...)
		b.Logger().Warn("verify: logging in with the stored credential failed", "mount", req.MountPoint, "error", check.err)
		return &logical.Response{Data: data}, nil
	}
	b.metrics.verification(outcomeSucceeded)
	data["token_lifetime"] = int64(check.lifetime / time.Second)
	data["token_type"] = check.tokenType
	data["scope"] = check.scope
	return &logical.Response{Data: data}, nil
}

// lastRotation is what verify says of the stored secret: its age and how
// the last rotation went. Every value is a number or a time, never a secret.
func lastRotation(cfg *config, now time.Time) map[string]any {
	state := cfg.rotationState(now)
	outcome := "none"
	switch {
	case cfg.Rotation.LastError != "":
		outcome = outcomeFailed
	case !cfg.LastRotated.IsZero():
		outcome = outcomeSucceeded
	}
	return map[string]any{
		"client_secret_age":             state["client_secret_age"],
		"last_rotated":                  state["last_rotated"],
		"last_rotation_outcome":         outcome,
		"last_rotation_error":           state["last_rotation_error"],
		"last_rotation_error_at":        state["last_rotation_error_at"],
		"consecutive_rotation_failures": state["consecutive_rotation_failures"],
		"next_rotation":                 state["next_rotation"],
	}
}

// verifyConnectionSchema is the config path's verify_connection field.
func verifyConnectionSchema() *framework.FieldSchema {
	return &framework.FieldSchema{
		Type:    framework.TypeBool,
		Default: true,
		Description: "Log in with the new config before storing it, when the write changes credentials or endpoints, " +
			"and refuse the write if that fails. Set false to store it without a login (for example before the upstream exists). " +
			"Applies to this write only; it is not stored.",
	}
}

// verifyNewConfig is the login a config write makes before it stores a
// config whose credentials or endpoints changed (verify_connection, on by
// default as in Vault's database engine). A failed login is a 400 with the
// upstream's reason, and nothing is stored; a write that changes neither
// (a new role default, a schedule) is stored without one.
//
// The login never goes where the write could not move the config to: the
// trust rules (config_trust.go) run before it in the write, and are checked
// here again, so that no order of the write's steps can send a request,
// and with private_key_jwt a client assertion, to a destination the write
// is refused for.
func (b *backend) verifyNewConfig(ctx context.Context, d *framework.FieldData, stored, next *config) (*logical.Response, error) {
	if verify, ok := d.Get(verifyConnectionField).(bool); ok && !verify {
		return nil, nil
	}
	if err := checkCredentialsCarried(stored, next, d); err != nil {
		return errorResponse(err)
	}
	cfg := next.resolved()
	if stored != nil && reflect.DeepEqual(stored.resolved().clientConfig(), cfg.clientConfig()) {
		return nil, nil
	}
	check, err := b.checkLogin(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if check.err == nil {
		return nil, nil
	}
	hint := ""
	if upstream.IsInvalidClient(check.err) && !cfg.usesSigningKeys() {
		hint = "; check the client id and secret (or username and password)"
	}
	return logical.ErrorResponse("verify_connection: a login with the new config failed, so it was not stored: %v%s. "+
		"Fix the config and write it again, or write verify_connection=false with it to store it without a login",
		check.err, hint), nil
}
