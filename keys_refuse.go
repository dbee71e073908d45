package mapsindoors

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
)

// refusePrivateKeys refuses a write that carries a private key in any
// field: the engine makes its signing keys itself and never takes one in,
// so a private key written anywhere is a mistake that would keep it where
// it does not belong (a config field, a role, the audit log's HMACs). The
// message names the field, never the value.
func refusePrivateKeys(mount string, data map[string]any) error {
	for _, name := range slices.Sorted(maps.Keys(data)) {
		if holdsPrivateKey(data[name]) {
			return userErrorf("%s holds a private key, and this engine never takes one: it makes its private_key_jwt signing key itself "+
				"and keeps it sealed. Remove it, write token_auth_method=private_key_jwt to %sconfig, and register the public keys "+
				"from \"vault read %sjwks\" at the server", name, mount, mount)
		}
	}
	return nil
}

// holdsPrivateKey finds a PEM private key (PKCS #1, #8, SEC 1, OpenSSH,
// encrypted or not) or a JWK with private members in a value or anything
// it holds.
func holdsPrivateKey(v any) bool {
	switch v := v.(type) {
	case string:
		if strings.Contains(v, "PRIVATE KEY-----") {
			return true
		}
		return jwkWithPrivateMembers(v)
	case []string:
		return slices.ContainsFunc(v, func(s string) bool { return holdsPrivateKey(s) })
	case []any:
		return slices.ContainsFunc(v, holdsPrivateKey)
	case map[string]string:
		for k, s := range v {
			if holdsPrivateKey(k) || holdsPrivateKey(s) {
				return true
			}
		}
	case map[string]any:
		if _, isJWK := v["kty"]; isJWK {
			if _, private := v["d"]; private {
				return true
			}
		}
		for _, x := range v {
			if holdsPrivateKey(x) {
				return true
			}
		}
	}
	return false
}

// jwkWithPrivateMembers says whether s is a JSON JWK or JWKS with a
// private member ("d" is in every private JWK: RSA, EC and OKP).
func jwkWithPrivateMembers(s string) bool {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "{") || !strings.Contains(s, `"d"`) {
		return false
	}
	var doc map[string]any
	if json.Unmarshal([]byte(s), &doc) != nil {
		return false
	}
	return holdsPrivateKey(doc)
}
