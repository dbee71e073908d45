package mapsindoors

import (
	"strings"
	"time"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// The signing keys of private_key_jwt (RFC 7523) client authentication. The
// engine makes each key itself and keeps it seal-wrapped in one storage
// entry, apart from the config; only the public halves ever leave it, as the
// JWKS at <mount>/jwks. Whatever a node signs with and whatever it publishes
// come from one in-memory snapshot of that entry, so the key a request is
// signed with is always in the JWKS that node serves.
//
// This file is the config's side of it: the fields private_key_jwt adds and
// their checks. keys_material.go makes keys and the JWKS, keys_store.go
// keeps the key set and retires it with its config, keys_ring.go holds it in
// memory, key_rotation.go rolls it over, and config_trust.go fixes where a
// private_key_jwt config's requests go.

const (
	defaultKeyType = "rsa-2048"
	// maxKeyRolloverDelay bounds key_rollover_delay as
	// previous_secret_grace is bounded.
	maxKeyRolloverDelay = 30 * 24 * time.Hour
)

// signingConfig is the part of the config private_key_jwt adds. It is
// embedded in config, so its fields are stored beside the others.
type signingConfig struct {
	// KeyType is the type of the keys rotate-root makes from now on; the
	// keys already made keep theirs.
	KeyType string `json:"key_type,omitempty"`
	// KeyRolloverDelay is how long a new key is published before it may
	// sign.
	KeyRolloverDelay time.Duration `json:"key_rollover_delay,omitempty"`
	// AssertionAudience replaces the token URL as the assertions' aud.
	AssertionAudience string `json:"assertion_audience,omitempty"`
}

// usesSigningKeys says whether the (resolved) config authenticates the
// client with a key of this mount's.
func (c *config) usesSigningKeys() bool {
	return c.TokenAuthMethod == string(upstream.AuthPrivateKeyJWT)
}

func (c *config) keyType() string {
	if c.KeyType == "" {
		return defaultKeyType
	}
	return c.KeyType
}

// The config fields of private_key_jwt, each an entry of configFields.

func keyTypeField() configField {
	f := textField("key_type", "Type of the signing keys this mount makes for private_key_jwt: rsa-2048 (RS256), ec-p256 (ES256) or ed25519 (EdDSA, which several servers refuse). A change applies from the next rotate-root. Default "+defaultKeyType+".",
		func(c *config) *string { return &c.KeyType })
	f.set = func(c *config, v any) { c.KeyType = strings.ToLower(strings.TrimSpace(v.(string))) }
	f.read = func(c *config) any { return c.keyType() }
	return f.checkedBy(func(c *config) error {
		_, err := lookupKeyType(c.keyType())
		return err
	})
}

func keyRolloverDelayField() configField {
	return durationField("key_rollover_delay", "With private_key_jwt: how long rotate-root publishes a new key in the JWKS before it may sign (at most 30 days). Signing moves to it only once the server accepts it. Default 0: right away, for servers that fetch the JWKS for a kid they do not know.",
		func(c *config) *time.Duration { return &c.KeyRolloverDelay }).
		checkedBy(func(c *config) error {
			if c.KeyRolloverDelay < 0 || c.KeyRolloverDelay > maxKeyRolloverDelay {
				return userErrorf("key_rollover_delay must be between 0 and %s", maxKeyRolloverDelay)
			}
			return nil
		})
}

func assertionAudienceField() configField {
	return textField("assertion_audience", "With private_key_jwt: the aud of the client assertions, for servers that want something else than the token URL (their issuer, say). Default: token_url, exactly as written.",
		func(c *config) *string { return &c.AssertionAudience }).
		checkedBy(func(c *config) error {
			if strings.ContainsAny(c.AssertionAudience, " \t\r\n") {
				return userErrorf("assertion_audience must be one value without spaces, such as https://auth.example.com/oauth2/token")
			}
			return nil
		}).
		sentAs(func(c *config, u *upstream.Config) { u.AssertionAudience = c.AssertionAudience })
}

// validateSigning checks what private_key_jwt needs of a resolved config.
func (c *config) validateSigning() error {
	if !c.usesSigningKeys() {
		return nil
	}
	if c.ClientSecret != "" {
		return userErrorf("token_auth_method private_key_jwt sends no client secret, so none may be stored: write client_secret=\"\" with it")
	}
	return c.validateKeysKept()
}
