package mapsindoors

import (
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// provider describes one token API a mount can talk to. Each provider lives
// in a provider_<name>.go file of its own and registers itself there; the
// rest of the engine asks the provider for what it needs and never branches
// on a provider's name.
type provider struct {
	name string
	// title names the service in field descriptions and the README.
	title string
	// isDefault marks the provider a config without one uses.
	isDefault bool

	// The defaults of what an operator did not write. A stored config keeps
	// only what was written, so a changed default reaches existing mounts.
	tokenURL      string
	rotationURL   string
	revocationURL string
	grantType     upstream.GrantType
	authMethod    upstream.AuthMethod
	// revocationStyle is how revocation_url revokes a lease's token; RFC
	// 7009 unless the provider says otherwise (see revocation).
	revocationStyle upstream.RevocationStyle
	// passwordClientID and passwordScopes apply to the password grant.
	passwordClientID string
	passwordScopes   []string

	// inputFields are write-only config fields that carry credentials in
	// the provider's own format; readInput sets the config from them.
	inputFields map[string]*framework.FieldSchema
	readInput   func(d *framework.FieldData, c *config) error

	// canRotate says whether the provider has a client-secret API that
	// rotate-root can rotate the stored secret through.
	canRotate bool
	// tokenPerLease gives every creds read its own upstream token, made
	// with the refresh token while it works, and logs it out when the
	// lease ends.
	tokenPerLease bool
}

// providers is the registry the provider files fill at init.
var providers = map[string]*provider{}

func registerProvider(p *provider) {
	if _, dup := providers[p.name]; dup {
		panic("provider " + p.name + " registered twice")
	}
	providers[p.name] = p
}

func lookupProvider(name string) (*provider, error) {
	if p, ok := providers[name]; ok {
		return p, nil
	}
	return nil, userErrorf("provider %q is not known; use one of %s", name, strings.Join(providerNames(), ", "))
}

// defaultProvider is the provider of a config that names none.
func defaultProvider() *provider {
	for _, p := range providers {
		if p.isDefault {
			return p
		}
	}
	panic("no default provider is registered")
}

// providerNames lists the providers, the default first, then by name.
func providerNames() []string {
	names := make([]string, 0, len(providers))
	for name := range providers {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int {
		switch {
		case providers[a].isDefault:
			return -1
		case providers[b].isDefault:
			return 1
		}
		return strings.Compare(a, b)
	})
	return names
}

// providerInputFields are the credential input fields every provider
// adds to the config path's schema.
func providerInputFields() map[string]*framework.FieldSchema {
	out := map[string]*framework.FieldSchema{}
	for _, p := range providers {
		for name, schema := range p.inputFields {
			out[name] = schema
		}
	}
	return out
}

// readProviderInput lets each provider whose input fields were written set
// the credentials from them.
func readProviderInput(d *framework.FieldData, c *config) error {
	for _, name := range providerNames() {
		p := providers[name]
		if p.readInput == nil {
			continue
		}
		for field := range p.inputFields {
			if _, ok := d.GetOk(field); ok {
				if err := p.readInput(d, c); err != nil {
					return err
				}
				break
			}
		}
	}
	return nil
}

// providerDefaults describes a per-provider default for a field
// description: "Default: X (mapsindoors), Y (cameramanager)."; empty when
// no provider has one.
func providerDefaults(def func(p *provider) string) string {
	var parts []string
	for _, name := range providerNames() {
		if v := def(providers[name]); v != "" {
			parts = append(parts, fmt.Sprintf("%s (%s)", v, name))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " Default: " + strings.Join(parts, ", ") + "."
}
