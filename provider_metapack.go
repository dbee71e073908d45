package mapsindoors

import (
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/magiconair/properties"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// Metapack: https://<environment host>/oauth, one host per customer, so
// there is no default token URL. The API key arrives as an apiKey.properties
// file and goes as raw HTTP Basic, as the vendor's worked example shows.
func init() {
	registerProvider(&provider{
		name:       "metapack",
		title:      "Metapack",
		grantType:  upstream.GrantClientCredentials,
		authMethod: upstream.AuthClientSecretBasicRaw,
		inputFields: map[string]*framework.FieldSchema{
			"api_key_properties": {
				Type:         framework.TypeString,
				Description:  "Contents of a Metapack apiKey.properties file; sets client_id and client_secret from apiKey.id and apiKey.secret. Write-only.",
				DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
			},
		},
		readInput: readAPIKeyProperties,
	})
}

// readAPIKeyProperties sets the client credentials from apiKey.properties.
func readAPIKeyProperties(d *framework.FieldData, c *config) error {
	_, idGiven := d.GetOk("client_id")
	_, secretGiven := d.GetOk("client_secret")
	if idGiven || secretGiven {
		return userErrorf("give either api_key_properties or client_id and client_secret, not both")
	}
	props, err := parseProperties(d.Get("api_key_properties").(string))
	if err != nil {
		return userErrorf("api_key_properties does not parse: %v", err)
	}
	if props["apiKey.id"] == "" || props["apiKey.secret"] == "" {
		return userErrorf("api_key_properties must set apiKey.id and apiKey.secret")
	}
	// The escapes of a properties file (\uXXXX) decode to anything: what
	// they set goes through the checks of the fields it sets, as if
	// written to them directly.
	if err := checkText("apiKey.id in api_key_properties", strings.TrimSpace(props["apiKey.id"]), maxTextBytes, false); err != nil {
		return err
	}
	if err := checkText("apiKey.secret in api_key_properties", props["apiKey.secret"], maxSecretBytes, false); err != nil {
		return err
	}
	c.ClientID, c.ClientSecret = props["apiKey.id"], props["apiKey.secret"]
	return nil
}

// parseProperties reads a Java .properties file. ${...} expansion stays
// off: a secret may hold a literal "$".
func parseProperties(text string) (map[string]string, error) {
	loader := properties.Loader{Encoding: properties.UTF8, DisableExpansion: true}
	p, err := loader.LoadBytes([]byte(text))
	if err != nil {
		// The library's message may quote the text it choked on, which can
		// be part of the secret: keep only the line number.
		var line int
		if _, scanErr := fmt.Sscanf(err.Error(), "properties: Line %d:", &line); scanErr == nil {
			return nil, fmt.Errorf("line %d is not a valid properties line (check its backslash escapes)", line)
		}
		return nil, errors.New("it is not a valid properties file")
	}
	return p.Map(), nil
}
