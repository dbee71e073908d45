package mapsindoors

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

const (
	configStoragePath = "config"

	// maxRequestTimeout bounds request_timeout: a creds read waits for the
	// token request, and Vault's own request timeout is 90 s by default.
	maxRequestTimeout = 5 * time.Minute
)

// config is the stored config. It keeps only what the operator wrote: an
// empty field means "the provider's default", which resolved fills in. The
// fields an operator writes are described once, in configFields.
type config struct {
	Provider               string        `json:"provider"`
	ClientID               string        `json:"client_id,omitempty"`
	ClientSecret           string        `json:"client_secret,omitempty"`
	ClientSecretID         string        `json:"client_secret_id,omitempty"`
	PreviousClientSecretID string        `json:"previous_client_secret_id,omitempty"`
	CustomerID             string        `json:"customer_id,omitempty"`
	GrantType              string        `json:"grant_type,omitempty"`
	Username               string        `json:"username,omitempty"`
	Password               string        `json:"password,omitempty"`
	TokenURL               string        `json:"token_url,omitempty"`
	RotationURL            string        `json:"rotation_url,omitempty"`
	RevocationURL          string        `json:"revocation_url,omitempty"`
	TokenAuthMethod        string        `json:"token_auth_method,omitempty"`
	Scopes                 []string      `json:"scopes,omitempty"`
	CACert                 string        `json:"ca_cert,omitempty"`
	RequestTimeout         time.Duration `json:"request_timeout,omitempty"`
	DefaultTokenLifetime   time.Duration `json:"default_token_lifetime,omitempty"`
	AllowLoopbackHTTP      bool          `json:"allow_loopback_http,omitempty"`
	// signingConfig is what private_key_jwt adds (keys.go).
	signingConfig

	// RotationPeriod > 0 or a RotationSchedule (cron, UTC) rotates the
	// secret automatically, counted from the later of LastRotated and
	// ScheduleStart (when the schedule was last changed). A RotationWindow
	// limits a scheduled rotation to that long after its time.
	RotationPeriod           time.Duration `json:"rotation_period,omitempty"`
	RotationSchedule         string        `json:"rotation_schedule,omitempty"`
	RotationWindow           time.Duration `json:"rotation_window,omitempty"`
	DisableAutomatedRotation bool          `json:"disable_automated_rotation,omitempty"`
	ScheduleStart            time.Time     `json:"schedule_start,omitempty"`
	LastRotated              time.Time     `json:"last_rotated,omitempty"`

	// PreviousSecretGrace keeps a replaced secret live that long before
	// it is deleted.
	PreviousSecretGrace time.Duration `json:"previous_secret_grace,omitempty"`
	// PendingDeletions are upstream secrets this mount replaced and still
	// has to delete. A rotation records the one it replaces in the same
	// write that stores the new secret, so no crash or fail-over can
	// forget it; the periodic function deletes them when due.
	PendingDeletions []pendingDeletion `json:"pending_deletions,omitempty"`
	// SecretSetAt is when the stored secret was written or rotated in.
	SecretSetAt time.Time `json:"secret_set_at,omitempty"`
	// Rotation is how the last rotations went.
	Rotation rotationStatus `json:"rotation_status"`
}

// pendingDeletion is an upstream secret to delete once DueAt has passed,
// at the account it belongs to (rotation_account.go), logged in as that
// account. There is at most one per id; one whose id is the stored
// secret's is suspended (never deleted) until the stored id moves on. A
// failed attempt is kept with its reason and waits until
// NextAttempt; it never holds back the others.
type pendingDeletion struct {
	ID         string    `json:"id"`
	ReplacedAt time.Time `json:"replaced_at"`
	DueAt      time.Time `json:"due_at"`
	// Account is the fingerprint of the account the secret belongs to;
	// empty for entries kept before accounts were recorded.
	Account string `json:"account,omitempty"`
	// Attempts counts failed deletes; LastError is the last one's reason
	// (an upstream error, which carries no secret), bounded in length.
	Attempts    int       `json:"attempts,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	LastAttempt time.Time `json:"last_attempt,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitempty"`
}

// rotationStatus is kept across restarts and fail-overs, so a failing
// scheduled rotation keeps backing off on whichever node runs it.
type rotationStatus struct {
	LastError           string    `json:"last_error,omitempty"`
	LastErrorAt         time.Time `json:"last_error_at,omitempty"`
	ConsecutiveFailures int       `json:"consecutive_failures,omitempty"`
	NextRetry           time.Time `json:"next_retry,omitempty"`
}

// clone is a copy that shares no slice with c.
func (c *config) clone() *config {
	cp := *c
	cp.Scopes = slices.Clone(c.Scopes)
	cp.PendingDeletions = slices.Clone(c.PendingDeletions)
	return &cp
}

// provider is the config's provider, or nil for an unknown one (which
// validate refuses).
func (c *config) provider() *provider {
	if c.Provider == "" {
		return defaultProvider()
	}
	return providers[c.Provider]
}

// resolved is a copy with the provider's defaults filled in.
func (c *config) resolved() *config {
	r := c.clone()
	p := r.provider()
	if p == nil {
		return r
	}
	r.Provider = p.name
	for _, f := range configFields {
		if f.def != nil && *f.text(r) == "" {
			*f.text(r) = f.def(p)
		}
	}
	if r.GrantType == string(upstream.GrantPassword) {
		if r.ClientID == "" {
			r.ClientID = p.passwordClientID
		}
		if r.Scopes == nil {
			r.Scopes = slices.Clone(p.passwordScopes)
		}
	}
	if r.RequestTimeout == 0 {
		r.RequestTimeout = upstream.DefaultTimeout
	}
	return r
}

// validate checks a resolved config. Each message names the field and
// what to write instead, and never repeats a secret.
func (c *config) validate() error {
	if _, err := lookupProvider(c.Provider); err != nil {
		return err
	}
	switch upstream.GrantType(c.GrantType) {
	case upstream.GrantClientCredentials:
		if c.ClientID == "" {
			return userErrorf("client_id is required for the client_credentials grant")
		}
		if c.ClientSecret == "" && !c.usesSigningKeys() {
			return userErrorf("client_secret is required for the client_credentials grant, unless token_auth_method is private_key_jwt")
		}
	case upstream.GrantPassword:
		if c.ClientID == "" {
			return userErrorf("client_id is required for the password grant with this provider")
		}
		if c.Username == "" || c.Password == "" {
			return userErrorf("username and password are required for the password grant")
		}
	default:
		return userErrorf("grant_type %q is not supported; use client_credentials or password", c.GrantType)
	}
	switch upstream.AuthMethod(c.TokenAuthMethod) {
	case upstream.AuthClientSecretPost:
	case upstream.AuthPrivateKeyJWT:
		if err := c.validateSigning(); err != nil {
			return err
		}
	case upstream.AuthClientSecretBasic, upstream.AuthClientSecretBasicRaw:
		if c.ClientSecret == "" {
			return userErrorf("client_secret is required with token_auth_method %s", c.TokenAuthMethod)
		}
	default:
		return userErrorf("token_auth_method %q is not supported; use one of %s", c.TokenAuthMethod, joinAuthMethods())
	}
	if c.TokenURL == "" {
		return userErrorf("token_url is required for provider %s", c.Provider)
	}
	for _, f := range configFields {
		if f.check == nil {
			continue
		}
		if err := f.check(c); err != nil {
			return err
		}
	}
	if err := c.validateSchedule(); err != nil {
		return err
	}
	return c.checkPendingBound()
}

// clientConfig is what the upstream client needs of the config.
func (c *config) clientConfig() upstream.Config {
	// A 429 or 5xx is retried a few times within the caller's deadline.
	u := upstream.Config{MaxAttempts: upstream.MaxAttemptsLimit}
	for _, f := range configFields {
		if f.client != nil {
			f.client(c, &u)
		}
	}
	return u
}

// validateEndpointURL insists on https, except plain http to a loopback
// address when the operator opted in (a local test server).
func validateEndpointURL(field, raw string, allowLoopbackHTTP bool) error {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return userErrorf("%s is not an absolute URL; write one like https://auth.example.com/connect/token", field)
	}
	if u.User != nil {
		return userErrorf("%s must not carry user info; put credentials in client_id and client_secret", field)
	}
	if u.Fragment != "" {
		return userErrorf("%s must not have a #fragment", field)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if !isLoopback(u.Hostname()) {
			return userErrorf("%s must use https; plain http is allowed only to a loopback address", field)
		}
		if !allowLoopbackHTTP {
			return userErrorf("%s uses plain http; set allow_loopback_http=true to allow that for a loopback address", field)
		}
		return nil
	default:
		return userErrorf("%s must be an https URL, not %q", field, u.Scheme)
	}
}

func joinAuthMethods() string {
	names := make([]string, len(upstream.AuthMethods))
	for i, m := range upstream.AuthMethods {
		names[i] = string(m)
	}
	return strings.Join(names, ", ")
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// cleanScopes trims the scopes written to a config or a role and drops
// empty ones; none at all is nil, which means "the default".
func cleanScopes(in []string) []string {
	var out []string
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// validateScopes applies RFC 6749 §3.3: a scope is one or more of
// %x21 / %x23-5B / %x5D-7E.
func validateScopes(field string, scopes []string) error {
	for _, s := range scopes {
		if s == "" {
			return userErrorf("%s has an empty scope", field)
		}
		for _, r := range s {
			if r < 0x21 || r == 0x22 || r == 0x5c || r > 0x7e {
				return userErrorf("%s: scope %q has a character OAuth2 does not allow in a scope", field, s)
			}
		}
	}
	return nil
}

// getConfig reads the stored config from storage, nil when there is none.
func getConfig(ctx context.Context, s logical.Storage) (*config, error) {
	entry, err := s.Get(ctx, configStoragePath)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if entry == nil {
		return nil, nil
	}
	cfg := &config{}
	if err := entry.DecodeJSON(cfg); err != nil {
		return nil, fmt.Errorf("decode config: %w", err)
	}
	return cfg, nil
}

// putConfig stores the config. An entry over maxStorageEntryBytes is
// refused before it reaches storage, so it never fails there (Raft's
// max_entry_size) after a partial apply: config writes check the bound
// with room to spare first (checkConfigSize), so this is the last guard.
func putConfig(ctx context.Context, s logical.Storage, cfg *config) error {
	entry, err := logical.StorageEntryJSON(configStoragePath, cfg)
	if err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	if len(entry.Value) > maxStorageEntryBytes {
		return fmt.Errorf("store config: the config would take %d bytes, over the %d one storage entry may hold; nothing was written",
			len(entry.Value), maxStorageEntryBytes)
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("store config: %w", err)
	}
	return nil
}
