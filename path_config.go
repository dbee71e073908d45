package mapsindoors

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

const (
	configStoragePath = "config"

	// maxRequestTimeout bounds request_timeout: a creds read waits for the
	// token request, and Vault's own request timeout is 90 s by default.
	maxRequestTimeout = 5 * time.Minute

	pathConfigHelpSyn  = "Configure the root client credentials the engine gets tokens with."
	pathConfigHelpDesc = `
The config holds the root OAuth2 client credential (client_id and the
write-only client_secret, or username and write-only password for the
password grant), where to get tokens (token_url) and, for MapsIndoors, the
clientcredentials API used to rotate the secret (rotation_url, customer_id,
client_secret_id). Fields not written keep their stored values; fields never
written take the provider's defaults, and a read shows the effective values.
Secrets and passwords are never returned: a read says whether they are set.
`
)

// mapsConfig is the stored config. It keeps only what the operator wrote:
// an empty field means "the provider's default", which resolved fills in.
type mapsConfig struct {
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
	AllowLoopbackHTTP      bool          `json:"allow_loopback_http,omitempty"`

	// RotationPeriod > 0 rotates the secret on a schedule, counted from
	// the later of LastRotated and ScheduleStart (when the period was set).
	RotationPeriod time.Duration `json:"rotation_period,omitempty"`
	ScheduleStart  time.Time     `json:"schedule_start,omitempty"`
	LastRotated    time.Time     `json:"last_rotated,omitempty"`
}

// resolved is a copy with the provider's defaults filled in.
func (c *mapsConfig) resolved() *mapsConfig {
	r := *c
	r.Scopes = slices.Clone(c.Scopes)
	if r.Provider == "" {
		r.Provider = providerMapsIndoors
	}
	p := providers[r.Provider]
	if r.GrantType == "" {
		r.GrantType = string(p.grantType)
	}
	if r.TokenAuthMethod == "" {
		r.TokenAuthMethod = string(p.authMethod)
	}
	if r.TokenURL == "" {
		r.TokenURL = p.tokenURL
	}
	if r.RotationURL == "" {
		r.RotationURL = p.rotationURL
	}
	if r.RevocationURL == "" {
		r.RevocationURL = p.revocationURL
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
	return &r
}

// validate checks a resolved config. Each message names the field and
// what to write instead, and never repeats a secret.
func (c *mapsConfig) validate() error {
	if _, ok := providers[c.Provider]; !ok {
		return fmt.Errorf("provider %q is not known; use one of %s", c.Provider, strings.Join(providerNames(), ", "))
	}
	switch upstream.GrantType(c.GrantType) {
	case upstream.GrantClientCredentials:
		if c.ClientID == "" {
			return errors.New("client_id is required for the client_credentials grant")
		}
		if c.ClientSecret == "" {
			return errors.New("client_secret is required for the client_credentials grant")
		}
	case upstream.GrantPassword:
		if c.ClientID == "" {
			return errors.New("client_id is required for the password grant with this provider")
		}
		if c.Username == "" || c.Password == "" {
			return errors.New("username and password are required for the password grant")
		}
	default:
		return fmt.Errorf("grant_type %q is not supported; use client_credentials or password", c.GrantType)
	}
	switch upstream.AuthMethod(c.TokenAuthMethod) {
	case upstream.AuthClientSecretPost:
	case upstream.AuthClientSecretBasic, upstream.AuthClientSecretBasicRaw:
		if c.ClientSecret == "" {
			return fmt.Errorf("client_secret is required with token_auth_method %s", c.TokenAuthMethod)
		}
	default:
		return fmt.Errorf("token_auth_method %q is not supported; use one of %s", c.TokenAuthMethod, joinAuthMethods())
	}
	if c.TokenURL == "" {
		return fmt.Errorf("token_url is required for provider %s", c.Provider)
	}
	if err := validateEndpointURL("token_url", c.TokenURL, c.AllowLoopbackHTTP); err != nil {
		return err
	}
	for field, u := range map[string]string{"rotation_url": c.RotationURL, "revocation_url": c.RevocationURL} {
		if u == "" {
			continue
		}
		if err := validateEndpointURL(field, u, c.AllowLoopbackHTTP); err != nil {
			return err
		}
	}
	if err := validateScopes("scopes", c.Scopes); err != nil {
		return err
	}
	if c.CACert != "" {
		if _, err := upstream.CertPool(c.CACert); err != nil {
			return fmt.Errorf("ca_cert is not a PEM bundle of certificates: %v", err)
		}
	}
	if c.RequestTimeout < 0 || c.RequestTimeout > maxRequestTimeout {
		return fmt.Errorf("request_timeout must be between 1s and %s (0 for the default %s)", maxRequestTimeout, upstream.DefaultTimeout)
	}
	if c.RotationPeriod != 0 {
		if c.RotationPeriod < minRotationPeriod {
			return fmt.Errorf("rotation_period must be 0 (off) or at least %s", minRotationPeriod)
		}
		if err := canRotate(c); err != nil {
			return fmt.Errorf("rotation_period cannot be set: %v", err)
		}
	}
	return nil
}

// validateEndpointURL insists on https, except plain http to a loopback
// address when the operator opted in (a local test server).
func validateEndpointURL(field, raw string, allowLoopbackHTTP bool) error {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return fmt.Errorf("%s is not an absolute URL; write one like https://auth.example.com/connect/token", field)
	}
	if u.User != nil {
		return fmt.Errorf("%s must not carry user info; put credentials in client_id and client_secret", field)
	}
	if u.Fragment != "" {
		return fmt.Errorf("%s must not have a #fragment", field)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if !isLoopback(u.Hostname()) {
			return fmt.Errorf("%s must use https; plain http is allowed only to a loopback address", field)
		}
		if !allowLoopbackHTTP {
			return fmt.Errorf("%s uses plain http; set allow_loopback_http=true to allow that for a loopback address", field)
		}
		return nil
	default:
		return fmt.Errorf("%s must be an https URL, not %q", field, u.Scheme)
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
			return fmt.Errorf("%s has an empty scope", field)
		}
		for _, r := range s {
			if r < 0x21 || r == 0x22 || r == 0x5c || r > 0x7e {
				return fmt.Errorf("%s: scope %q has a character OAuth2 does not allow in a scope", field, s)
			}
		}
	}
	return nil
}

func (c *mapsConfig) upstreamConfig() upstream.Config {
	return upstream.Config{
		TokenURL:      c.TokenURL,
		RotationURL:   c.RotationURL,
		RevocationURL: c.RevocationURL,
		ClientID:      c.ClientID,
		ClientSecret:  c.ClientSecret,
		CustomerID:    c.CustomerID,
		GrantType:     upstream.GrantType(c.GrantType),
		Username:      c.Username,
		Password:      c.Password,
		AuthMethod:    upstream.AuthMethod(c.TokenAuthMethod),
		CACertPEM:     c.CACert,
		Timeout:       c.RequestTimeout,
	}
}

func pathConfig(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern: "config",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
		},
		Fields: map[string]*framework.FieldSchema{
			"provider": {
				Type:        framework.TypeString,
				Description: "Which token API this mount talks to: " + strings.Join(providerNames(), ", ") + ". Default mapsindoors.",
			},
			"client_id": {
				Type:        framework.TypeString,
				Description: "OAuth2 client id.",
			},
			"client_secret": {
				Type:         framework.TypeString,
				Description:  "OAuth2 client secret. Write-only.",
				DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
			},
			"client_secret_id": {
				Type:        framework.TypeString,
				Description: "Id of client_secret in the clientcredentials API, so rotation can delete it once replaced.",
			},
			"customer_id": {
				Type:        framework.TypeString,
				Description: "MapsIndoors customerId, needed by the clientcredentials API.",
			},
			"grant_type": {
				Type:        framework.TypeString,
				Description: "client_credentials (default) or password.",
			},
			"username": {
				Type:        framework.TypeString,
				Description: "User for the password grant.",
			},
			"password": {
				Type:         framework.TypeString,
				Description:  "Password for the password grant. Write-only.",
				DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
			},
			"token_url": {
				Type:        framework.TypeString,
				Description: "Token endpoint. Default https://auth.mapsindoors.com/connect/token for mapsindoors.",
			},
			"rotation_url": {
				Type:        framework.TypeString,
				Description: "clientcredentials API. Default https://auth.mapsindoors.com/api/clientcredentials for mapsindoors.",
			},
			"revocation_url": {
				Type:        framework.TypeString,
				Description: "Where a token is logged out when its lease ends (DELETE with the token as bearer). Default for cameramanager.",
			},
			"api_key_properties": {
				Type:         framework.TypeString,
				Description:  "Contents of a Metapack apiKey.properties file; sets client_id and client_secret from apiKey.id and apiKey.secret. Write-only.",
				DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
			},
			"token_auth_method": {
				Type:        framework.TypeString,
				Description: "client_secret_post (in the form body), client_secret_basic (HTTP Basic, RFC 6749 encoding) or client_secret_basic_raw (HTTP Basic as is).",
			},
			"scopes": {
				Type:        framework.TypeCommaStringSlice,
				Description: "Scopes requested for roles that name none.",
			},
			"ca_cert": {
				Type:        framework.TypeString,
				Description: "PEM bundle of the only CAs trusted for the upstream's TLS; the system roots when empty.",
			},
			"request_timeout": {
				Type:        framework.TypeDurationSecond,
				Description: "Bound on one upstream HTTP exchange. Default 30s.",
			},
			"allow_loopback_http": {
				Type:        framework.TypeBool,
				Description: "Allow plain http URLs to a loopback address, for local test servers.",
			},
			"rotation_period": {
				Type:        framework.TypeDurationSecond,
				Description: "Rotate the client secret this often (at least 1m); 0 turns scheduled rotation off.",
			},
		},
		ExistenceCheck: b.pathConfigExistenceCheck,
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback:     b.pathConfigRead,
				Summary:      "Read the config; secrets are never returned.",
				DisplayAttrs: &framework.DisplayAttributes{OperationSuffix: "configuration"},
			},
			logical.CreateOperation: &framework.PathOperation{
				Callback:     b.pathConfigWrite,
				Summary:      "Store the root credentials and upstream settings.",
				DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "configure"},
			},
			logical.UpdateOperation: &framework.PathOperation{
				Callback:     b.pathConfigWrite,
				Summary:      "Change some config fields; the others keep their values.",
				DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "configure"},
			},
			logical.DeleteOperation: &framework.PathOperation{
				Callback:     b.pathConfigDelete,
				Summary:      "Delete the config and drop cached tokens.",
				DisplayAttrs: &framework.DisplayAttributes{OperationSuffix: "configuration"},
			},
		},
		HelpSynopsis:    pathConfigHelpSyn,
		HelpDescription: strings.TrimSpace(pathConfigHelpDesc),
	}}
}

func (b *backend) pathConfigExistenceCheck(ctx context.Context, req *logical.Request, _ *framework.FieldData) (bool, error) {
	cfg, err := getConfig(ctx, req.Storage)
	return cfg != nil, err
}

func (b *backend) pathConfigRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	stored, err := getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if stored == nil {
		return nil, nil
	}
	c := stored.resolved()
	scopes := c.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	lastRotated, nextRotation := "", ""
	if !c.LastRotated.IsZero() {
		lastRotated = c.LastRotated.UTC().Format(time.RFC3339)
	}
	if next := c.nextRotation(); !next.IsZero() {
		nextRotation = next.UTC().Format(time.RFC3339)
	}
	return &logical.Response{Data: map[string]any{
		"provider":                  c.Provider,
		"client_id":                 c.ClientID,
		"client_secret_set":         c.ClientSecret != "",
		"client_secret_id":          c.ClientSecretID,
		"previous_client_secret_id": c.PreviousClientSecretID,
		"customer_id":               c.CustomerID,
		"grant_type":                c.GrantType,
		"username":                  c.Username,
		"password_set":              c.Password != "",
		"token_url":                 c.TokenURL,
		"rotation_url":              c.RotationURL,
		"revocation_url":            c.RevocationURL,
		"token_auth_method":         c.TokenAuthMethod,
		"scopes":                    scopes,
		"ca_cert":                   c.CACert,
		"request_timeout":           int64(c.RequestTimeout / time.Second),
		"allow_loopback_http":       c.AllowLoopbackHTTP,
		"rotation_period":           int64(c.RotationPeriod / time.Second),
		"last_rotated":              lastRotated,
		"next_rotation":             nextRotation,
	}}, nil
}

// stringFields maps request fields to the stored config's string fields.
var stringFields = map[string]func(*mapsConfig) *string{
	"client_id":         func(c *mapsConfig) *string { return &c.ClientID },
	"client_secret":     func(c *mapsConfig) *string { return &c.ClientSecret },
	"client_secret_id":  func(c *mapsConfig) *string { return &c.ClientSecretID },
	"customer_id":       func(c *mapsConfig) *string { return &c.CustomerID },
	"grant_type":        func(c *mapsConfig) *string { return &c.GrantType },
	"username":          func(c *mapsConfig) *string { return &c.Username },
	"password":          func(c *mapsConfig) *string { return &c.Password },
	"token_url":         func(c *mapsConfig) *string { return &c.TokenURL },
	"rotation_url":      func(c *mapsConfig) *string { return &c.RotationURL },
	"revocation_url":    func(c *mapsConfig) *string { return &c.RevocationURL },
	"token_auth_method": func(c *mapsConfig) *string { return &c.TokenAuthMethod },
	"ca_cert":           func(c *mapsConfig) *string { return &c.CACert },
}

func (b *backend) pathConfigWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()

	stored, err := getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	cfg := &mapsConfig{}
	if stored != nil {
		cp := *stored
		cfg = &cp
	}

	if v, ok := d.GetOk("provider"); ok {
		cfg.Provider = strings.ToLower(strings.TrimSpace(v.(string)))
	}
	for name, field := range stringFields {
		if v, ok := d.GetOk(name); ok {
			s := v.(string)
			switch name {
			case "client_secret", "password":
				// Secrets keep their spaces, but not the line end that
				// `echo "$SECRET" | vault write ... client_secret=-` adds.
				s = strings.TrimRight(s, "\r\n")
			case "ca_cert":
			default:
				s = strings.TrimSpace(s)
			}
			*field(cfg) = s
		}
	}
	if v, ok := d.GetOk("api_key_properties"); ok {
		if _, given := d.GetOk("client_id"); given {
			return logical.ErrorResponse("give either api_key_properties or client_id and client_secret, not both"), nil
		}
		if _, given := d.GetOk("client_secret"); given {
			return logical.ErrorResponse("give either api_key_properties or client_id and client_secret, not both"), nil
		}
		props, err := parseProperties(v.(string))
		if err != nil {
			return logical.ErrorResponse("api_key_properties does not parse: %v", err), nil
		}
		if props["apiKey.id"] == "" || props["apiKey.secret"] == "" {
			return logical.ErrorResponse("api_key_properties must set apiKey.id and apiKey.secret"), nil
		}
		cfg.ClientID, cfg.ClientSecret = props["apiKey.id"], props["apiKey.secret"]
	}
	if v, ok := d.GetOk("scopes"); ok {
		cfg.Scopes = cleanScopes(v.([]string))
	}
	if v, ok := d.GetOk("request_timeout"); ok {
		cfg.RequestTimeout = time.Duration(v.(int)) * time.Second
	}
	if v, ok := d.GetOk("allow_loopback_http"); ok {
		cfg.AllowLoopbackHTTP = v.(bool)
	}
	if v, ok := d.GetOk("rotation_period"); ok {
		period := time.Duration(v.(int)) * time.Second
		if period != cfg.RotationPeriod {
			cfg.ScheduleStart = b.now().UTC()
		}
		cfg.RotationPeriod = period
	}

	var warnings []string
	_, idGiven := d.GetOk("client_secret_id")
	if stored != nil && cfg.ClientSecret != stored.ClientSecret && !idGiven && stored.ClientSecretID != "" {
		// The stored id named the old secret. Keeping it would make the
		// next rotation delete a secret that may not be Vault's any more.
		cfg.ClientSecretID = ""
		cfg.PreviousClientSecretID = ""
		warnings = append(warnings, "client_secret changed without client_secret_id, so the stored client_secret_id was cleared; write the new secret's id so rotation can delete it when it is replaced")
	}

	if err := cfg.resolved().validate(); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	if err := putConfig(ctx, req.Storage, cfg); err != nil {
		return nil, err
	}
	b.reset()
	effective := cfg.resolved()
	b.Logger().Info("config written", "mount", req.MountPoint, "provider", effective.Provider, "client_id", effective.ClientID)

	if len(warnings) == 0 {
		return nil, nil
	}
	return &logical.Response{Warnings: warnings}, nil
}

func (b *backend) pathConfigDelete(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	if err := req.Storage.Delete(ctx, configStoragePath); err != nil {
		return nil, fmt.Errorf("delete config: %w", err)
	}
	b.reset()
	b.Logger().Info("config deleted", "mount", req.MountPoint)
	return nil, nil
}

// getConfig reads the stored config from storage, nil when there is none.
func getConfig(ctx context.Context, s logical.Storage) (*mapsConfig, error) {
	entry, err := s.Get(ctx, configStoragePath)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if entry == nil {
		return nil, nil
	}
	cfg := &mapsConfig{}
	if err := entry.DecodeJSON(cfg); err != nil {
		return nil, fmt.Errorf("decode config: %w", err)
	}
	return cfg, nil
}

func putConfig(ctx context.Context, s logical.Storage, cfg *mapsConfig) error {
	entry, err := logical.StorageEntryJSON(configStoragePath, cfg)
	if err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("store config: %w", err)
	}
	return nil
}

// clientConfig is the resolved config and its upstream client, built once
// and kept until the config changes.
func (b *backend) clientConfig(ctx context.Context, s logical.Storage) (*mapsConfig, upstream.Client, error) {
	b.mu.RLock()
	if b.loaded {
		cfg, client := b.config, b.client
		b.mu.RUnlock()
		if cfg == nil || client != nil {
			return cfg, client, nil
		}
	} else {
		b.mu.RUnlock()
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	// Another request may have loaded it while this one waited.
	if !b.loaded {
		stored, err := getConfig(ctx, s)
		if err != nil {
			return nil, nil, err
		}
		b.config, b.loaded = nil, true
		if stored != nil {
			b.config = stored.resolved()
		}
	}
	if b.config == nil {
		return nil, nil, nil
	}
	if b.client == nil {
		client, err := b.newClient(b.config.upstreamConfig())
		if err != nil {
			return nil, nil, fmt.Errorf("build upstream client: %w", err)
		}
		b.client = client
	}
	return b.config, b.client, nil
}
