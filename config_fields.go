package mapsindoors

import (
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// configField is one field an operator writes to config: its schema, where
// it is stored, what a read shows of it, its provider default, its check and
// what the upstream client gets of it. Adding a config field is adding one
// entry to configFields.
type configField struct {
	name        string
	description string
	// describe, when set, makes the description from the registered
	// providers, which are known only after package initialization.
	describe  func() string
	fieldType framework.FieldType
	// writeOnly fields are secrets: a read shows only "<name>_set".
	writeOnly bool

	// set stores a written value.
	set func(c *config, v any)
	// read is what a config read shows.
	read func(c *config) any
	// text is the field of a text entry; def, when set, is the provider's
	// default for it, filled in by resolved and named in the description.
	text func(c *config) *string
	def  func(p *provider) string
	// check validates the field of a resolved config.
	check func(c *config) error
	// client copies the field into the upstream client's config.
	client func(c *config, u *upstream.Config)
}

// configFields are the fields of the config path, in the order the docs
// list them.
var configFields = []configField{
	{
		name: "provider",
		describe: func() string {
			return "Which token API this mount talks to: " + strings.Join(providerNames(), ", ") + ". Default " + defaultProvider().name + "."
		},
		fieldType: framework.TypeString,
		set:       func(c *config, v any) { c.Provider = strings.ToLower(strings.TrimSpace(v.(string))) },
		read:      func(c *config) any { return c.Provider },
	},
	textField("client_id", "OAuth2 client id.", func(c *config) *string { return &c.ClientID }).
		sentAs(func(c *config, u *upstream.Config) { u.ClientID = c.ClientID }),
	secretField("client_secret", "OAuth2 client secret. Write-only.", func(c *config) *string { return &c.ClientSecret }).
		sentAs(func(c *config, u *upstream.Config) { u.ClientSecret = c.ClientSecret }),
	textField("client_secret_id", "Id of client_secret in the clientcredentials API, so rotation can delete it once replaced.",
		func(c *config) *string { return &c.ClientSecretID }),
	textField("customer_id", "MapsIndoors customerId, needed by the clientcredentials API.",
		func(c *config) *string { return &c.CustomerID }).
		sentAs(func(c *config, u *upstream.Config) { u.CustomerID = c.CustomerID }),
	textField("grant_type", "client_credentials or password.", func(c *config) *string { return &c.GrantType }).
		defaultFrom(func(p *provider) string { return string(p.grantType) }).
		sentAs(func(c *config, u *upstream.Config) { u.GrantType = upstream.GrantType(c.GrantType) }),
	textField("username", "User for the password grant.", func(c *config) *string { return &c.Username }).
		sentAs(func(c *config, u *upstream.Config) { u.Username = c.Username }),
	secretField("password", "Password for the password grant. Write-only.", func(c *config) *string { return &c.Password }).
		sentAs(func(c *config, u *upstream.Config) { u.Password = c.Password }),
	urlField("token_url", "Token endpoint.", func(c *config) *string { return &c.TokenURL }).
		defaultFrom(func(p *provider) string { return p.tokenURL }).
		sentAs(func(c *config, u *upstream.Config) { u.TokenURL = c.TokenURL }),
	urlField("rotation_url", "clientcredentials API that rotate-root rotates the client secret through.",
		func(c *config) *string { return &c.RotationURL }).
		defaultFrom(func(p *provider) string { return p.rotationURL }).
		sentAs(func(c *config, u *upstream.Config) { u.RotationURL = c.RotationURL }),
	urlField("revocation_url", "Where a lease's own token is revoked when the lease ends: RFC 7009 with the client authentication of the token request, or a DELETE with the token as bearer where the provider logs out that way (cameramanager).",
		func(c *config) *string { return &c.RevocationURL }).
		defaultFrom(func(p *provider) string { return p.revocationURL }).
		sentAs(func(c *config, u *upstream.Config) {
			u.RevocationURL, u.RevocationStyle = c.RevocationURL, c.provider().revocation()
		}),
	textField("token_auth_method", "client_secret_post (in the form body), client_secret_basic (HTTP Basic, RFC 6749 encoding), client_secret_basic_raw (HTTP Basic as is) or private_key_jwt (a client assertion signed with a key this mount makes; see jwks).",
		func(c *config) *string { return &c.TokenAuthMethod }).
		defaultFrom(func(p *provider) string { return string(p.authMethod) }).
		sentAs(func(c *config, u *upstream.Config) { u.AuthMethod = upstream.AuthMethod(c.TokenAuthMethod) }),
	keyTypeField(),
	keyRolloverDelayField(),
	assertionAudienceField(),
	{
		name:        "scopes",
		description: "Scopes requested for roles that name none.",
		fieldType:   framework.TypeCommaStringSlice,
		set:         func(c *config, v any) { c.Scopes = cleanScopes(v.([]string)) },
		read: func(c *config) any {
			if c.Scopes == nil {
				return []string{}
			}
			return c.Scopes
		},
		check: func(c *config) error { return validateScopes("scopes", c.Scopes) },
	},
	{
		name:        "ca_cert",
		description: "PEM bundle of the only CAs trusted for the upstream's TLS; the system roots when empty.",
		fieldType:   framework.TypeString,
		// PEM keeps its line ends.
		set:  func(c *config, v any) { c.CACert = v.(string) },
		read: func(c *config) any { return c.CACert },
		check: func(c *config) error {
			if c.CACert == "" {
				return nil
			}
			if _, err := upstream.CertPool(c.CACert); err != nil {
				return userErrorf("ca_cert is not a PEM bundle of certificates: %v", err)
			}
			return nil
		},
		client: func(c *config, u *upstream.Config) { u.CACertPEM = c.CACert },
	},
	durationField("request_timeout", "Bound on one upstream HTTP exchange. Default 30s.",
		func(c *config) *time.Duration { return &c.RequestTimeout }).
		checkedBy(func(c *config) error {
			if c.RequestTimeout < 0 || c.RequestTimeout > maxRequestTimeout {
				return userErrorf("request_timeout must be between 1s and %s (0 for the default %s)", maxRequestTimeout, upstream.DefaultTimeout)
			}
			return nil
		}).
		sentAs(func(c *config, u *upstream.Config) { u.Timeout = c.RequestTimeout }),
	durationField("default_token_lifetime", "How long a token lives when the token endpoint's answer has no expires_in, which RFC 6749 makes optional: set it to the lifetime the server documents (10s to 24h). 0, the default, refuses such answers.",
		func(c *config) *time.Duration { return &c.DefaultTokenLifetime }).
		checkedBy(func(c *config) error {
			if c.DefaultTokenLifetime != 0 && (c.DefaultTokenLifetime < 10*time.Second || c.DefaultTokenLifetime > 24*time.Hour) {
				return userErrorf("default_token_lifetime must be between 10s and 24h, the lifetime the token server documents (0 refuses answers without expires_in)")
			}
			return nil
		}).
		sentAs(func(c *config, u *upstream.Config) { u.DefaultTokenLifetime = c.DefaultTokenLifetime }),
	boolField("allow_loopback_http", "Allow plain http URLs to a loopback address, for local test servers.",
		func(c *config) *bool { return &c.AllowLoopbackHTTP }),
	durationField("rotation_period", "Rotate the client secret this often (at least 1m); 0 turns it off. Excludes rotation_schedule.",
		func(c *config) *time.Duration { return &c.RotationPeriod }),
	textField("rotation_schedule", "Rotate the client secret on this standard 5-field cron schedule, in UTC (\"0 3 * * 1\": Mondays at 03:00); empty turns it off. Excludes rotation_period.",
		func(c *config) *string { return &c.RotationSchedule }),
	durationField("rotation_window", "With rotation_schedule: rotate only within this long (at least 1h) after the scheduled time, else wait for the next one; 0 for no limit.",
		func(c *config) *time.Duration { return &c.RotationWindow }),
	boolField("disable_automated_rotation", "Keep rotation_period or rotation_schedule stored but do not rotate automatically.",
		func(c *config) *bool { return &c.DisableAutomatedRotation }),
	durationField("previous_secret_grace", "Keep a replaced client secret live this long (at most 30 days) before deleting it; 0 deletes it at once.",
		func(c *config) *time.Duration { return &c.PreviousSecretGrace }).
		checkedBy(func(c *config) error {
			if c.PreviousSecretGrace < 0 || c.PreviousSecretGrace > maxPreviousSecretGrace {
				return userErrorf("previous_secret_grace must be between 0 and %s", maxPreviousSecretGrace)
			}
			return nil
		}),
}

// textField is trimmed text.
func textField(name, description string, at func(*config) *string) configField {
	return configField{
		name:        name,
		description: description,
		fieldType:   framework.TypeString,
		set:         func(c *config, v any) { *at(c) = strings.TrimSpace(v.(string)) },
		read:        func(c *config) any { return *at(c) },
		text:        at,
	}
}

// secretField is write-only text. It keeps its spaces, but not the line end
// that `echo "$SECRET" | vault write ... field=-` adds.
func secretField(name, description string, at func(*config) *string) configField {
	return configField{
		name:        name,
		description: description,
		fieldType:   framework.TypeString,
		writeOnly:   true,
		set:         func(c *config, v any) { *at(c) = strings.TrimRight(v.(string), "\r\n") },
		read:        func(c *config) any { return *at(c) != "" },
		text:        at,
	}
}

// urlField is an endpoint URL: https, or http to loopback when allowed.
func urlField(name, description string, at func(*config) *string) configField {
	return textField(name, description, at).checkedBy(func(c *config) error {
		if *at(c) == "" {
			return nil
		}
		return validateEndpointURL(name, *at(c), c.AllowLoopbackHTTP)
	})
}

// boolField is true or false.
func boolField(name, description string, at func(*config) *bool) configField {
	return configField{
		name:        name,
		description: description,
		fieldType:   framework.TypeBool,
		set:         func(c *config, v any) { *at(c) = v.(bool) },
		read:        func(c *config) any { return *at(c) },
	}
}

// durationField is written in seconds or as a Go duration, and read as
// whole seconds.
func durationField(name, description string, at func(*config) *time.Duration) configField {
	return configField{
		name:        name,
		description: description,
		fieldType:   framework.TypeDurationSecond,
		set:         func(c *config, v any) { *at(c) = time.Duration(v.(int)) * time.Second },
		read:        func(c *config) any { return int64(*at(c) / time.Second) },
	}
}

func (f configField) defaultFrom(def func(p *provider) string) configField {
	f.def = def
	return f
}

func (f configField) checkedBy(check func(c *config) error) configField {
	f.check = check
	return f
}

func (f configField) sentAs(client func(c *config, u *upstream.Config)) configField {
	f.client = client
	return f
}

// readKey is the key a config read shows the field under.
func (f configField) readKey() string {
	if f.writeOnly {
		return f.name + "_set"
	}
	return f.name
}

// schema is the field's schema; descriptions name the providers' defaults,
// which are known only once every provider has registered.
func (f configField) schema() *framework.FieldSchema {
	s := &framework.FieldSchema{Type: f.fieldType, Description: f.description}
	if f.describe != nil {
		s.Description = f.describe()
	}
	if f.def != nil {
		s.Description += providerDefaults(f.def)
	}
	if f.writeOnly {
		s.DisplayAttrs = &framework.DisplayAttributes{Sensitive: true}
	}
	return s
}

// configSchema is the config path's fields: the table's and the
// providers' own credential inputs.
func configSchema() map[string]*framework.FieldSchema {
	fields := providerInputFields()
	for _, f := range configFields {
		fields[f.name] = f.schema()
	}
	fields[verifyConnectionField] = verifyConnectionSchema() // request-only: path_verify.go
	return fields
}
