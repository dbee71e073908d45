package mapsindoors

import (
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"unicode"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// Bounds on what a write may store. Each is far above any real value of its
// field, and far below what would make storage, the upstream request or an
// error message unwieldy.
const (
	maxTextBytes     = 1 << 10   // ids, names, the provider, a schedule
	maxURLBytes      = 2 << 10   // an endpoint URL, an audience, a resource
	maxSecretBytes   = 8 << 10   // a client secret or a password
	maxCACertBytes   = 256 << 10 // a PEM bundle of CAs
	maxProviderInput = 64 << 10  // an apiKey.properties file
	maxScopes        = 64
	maxScopeBytes    = 256
	maxTokenParams   = 32
	maxTokenParamKey = 128
	maxRoleNameBytes = 128
)

// roleNamePattern is what a role name may be: lower case ASCII letters,
// digits and _, with - and . inside. It is framework.GenericNameRegex
// without upper case; the path patterns take any name so that one that
// does not fit gets a 400 that says why, rather than "unsupported path".
var roleNamePattern = regexp.MustCompile(`^[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?$`)

// urlFields are the config fields that hold endpoint URLs.
var urlFields = map[string]bool{"token_url": true, "rotation_url": true, "revocation_url": true}

// checkText refuses a written value that is too long or has control
// characters (other than line ends and tabs where multiline is set). Its
// messages never repeat the value: it may be a secret, or huge.
func checkText(field, value string, maxBytes int, multiline bool) error {
	if len(value) > maxBytes {
		return userErrorf("%s is %d bytes long; at most %d are accepted", field, len(value), maxBytes)
	}
	for _, r := range value {
		if multiline && (r == '\n' || r == '\r' || r == '\t') {
			continue
		}
		if unicode.IsControl(r) {
			allowed := ""
			if multiline {
				allowed = " (other than line ends and tabs)"
			}
			return userErrorf("%s has a control character (%U)%s; write it without", field, r, allowed)
		}
	}
	return nil
}

// checkConfigInput checks what a config write carries, field by field,
// before anything is merged or stored: length, control characters and the
// port of URLs. The config's own validation checks the rest.
func checkConfigInput(d *framework.FieldData) error {
	for _, f := range configFields {
		raw, ok := d.Raw[f.name]
		if !ok || raw == nil {
			continue
		}
		switch f.fieldType {
		case framework.TypeString:
			v := d.Get(f.name).(string)
			var err error
			switch {
			case f.writeOnly:
				// The line end of a value piped in on stdin is dropped when
				// stored, so it is not refused here.
				err = checkText(f.name, strings.TrimRight(v, "\r\n"), maxSecretBytes, false)
			case f.name == "ca_cert":
				err = checkText(f.name, v, maxCACertBytes, true)
			case f.name == "client_secret_id":
				// Kept in pending deletions, whose size is bounded.
				if v = strings.TrimSpace(v); v != "" {
					err = checkSecretID(f.name, v)
				}
			case urlFields[f.name]:
				v = strings.TrimSpace(v)
				if err = checkText(f.name, v, maxURLBytes, false); err == nil {
					err = checkURLPort(f.name, v)
				}
			default:
				err = checkText(f.name, strings.TrimSpace(v), maxTextBytes, false)
			}
			if err != nil {
				return err
			}
		case framework.TypeCommaStringSlice:
			if err := checkScopes(f.name, d.Get(f.name).([]string)); err != nil {
				return err
			}
		}
	}
	for name := range providerInputFields() {
		if v, ok := d.GetOk(name); ok {
			if err := checkText(name, v.(string), maxProviderInput, true); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkURLPort refuses a port outside 1–65535, which url.Parse lets pass.
// (A URL that does not parse is left to the config's validation, which
// says so.) It belongs with validateEndpointURL.
func checkURLPort(field, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Port() == "" {
		return nil
	}
	if n, err := strconv.Atoi(u.Port()); err != nil || n < 1 || n > 65535 {
		return userErrorf("%s has port %s; a port is a number from 1 to 65535", field, u.Port())
	}
	return nil
}

func checkScopes(field string, scopes []string) error {
	if len(scopes) > maxScopes {
		return userErrorf("%s has %d scopes; at most %d are accepted", field, len(scopes), maxScopes)
	}
	for _, s := range scopes {
		if len(s) > maxScopeBytes {
			return userErrorf("%s has a scope of %d bytes; at most %d are accepted", field, len(s), maxScopeBytes)
		}
	}
	return nil
}

// checkRoleInput checks what a role write carries before it is merged.
func checkRoleInput(d *framework.FieldData) error {
	if v, ok := d.GetOk("scopes"); ok {
		if err := checkScopes("scopes", v.([]string)); err != nil {
			return err
		}
	}
	for _, field := range []string{"audience", "resource"} {
		if v, ok := d.GetOk(field); ok {
			if err := checkText(field, strings.TrimSpace(v.(string)), maxURLBytes, false); err != nil {
				return err
			}
		}
	}
	if v, ok := d.GetOk("token_params"); ok {
		params := v.(map[string]string)
		if len(params) > maxTokenParams {
			return userErrorf("token_params has %d parameters; at most %d are accepted", len(params), maxTokenParams)
		}
		for k, val := range params {
			if err := checkText("token_params (a key)", k, maxTokenParamKey, false); err != nil {
				return err
			}
			if err := checkText("token_params (the value of "+strconv.Quote(k)+")", val, maxURLBytes, false); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkRoleName refuses a role name that is not lower case, or does not fit
// roleNamePattern, on every path that names a role, so that one role has
// exactly one path: nothing is folded.
func checkRoleName(name string) error {
	if len(name) > maxRoleNameBytes {
		return userErrorf("role name is %d bytes long; at most %d are accepted", len(name), maxRoleNameBytes)
	}
	if strings.ToLower(name) != name {
		return userErrorf("role name %q is not lower case; role names are lower case only and are never folded", name)
	}
	if !roleNamePattern.MatchString(name) {
		return userErrorf("role name %q is not valid: use lower case letters, digits and _, with - and . only inside the name", name)
	}
	return nil
}

// secretFieldNames are the config fields that carry secrets: the
// write-only fields and the providers' credential inputs.
func secretFieldNames() []string {
	var names []string
	for _, f := range configFields {
		if f.writeOnly {
			names = append(names, f.name)
		}
	}
	for name := range providerInputFields() {
		names = append(names, name)
	}
	return names
}

// mistypedSecret refuses a config write whose secret field holds a list or
// a map. The framework would refuse it too, but its message quotes the
// value, which is the secret.
func mistypedSecret(req *logical.Request) error {
	if req.Path != configStoragePath || (req.Operation != logical.CreateOperation && req.Operation != logical.UpdateOperation) {
		return nil
	}
	for _, name := range secretFieldNames() {
		switch req.Data[name].(type) {
		case nil, string, json.Number, bool, int, int64, float64:
		default:
			return userErrorf("%s must be a string, not a %s; the value is not repeated here", name, kindOf(req.Data[name]))
		}
	}
	return nil
}

func kindOf(v any) string {
	switch v.(type) {
	case []any, []string:
		return "list"
	case map[string]any, map[string]string:
		return "map"
	}
	return fmt.Sprintf("%T", v)
}
