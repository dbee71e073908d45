package mapsindoors

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"strings"
)

// An account is what a client secret belongs to upstream: the secrets Vault
// replaced may be deleted only there, logged in with that account's own
// credential. It is identified by
//
//   - the provider (resolved),
//   - token_url, where the credential logs in,
//   - rotation_url, the API that creates, lists and deletes the secrets,
//   - customer_id, the API's tenant, and
//   - client_id, the OAuth2 client the secrets belong to.
//
// The URLs count whole (scheme, host, port, path and query; not a fragment,
// with scheme and host lower case, a default port dropped and the query's
// parameters sorted), not just their hosts: multi-tenant identity servers
// put the tenant in the path (Keycloak's /realms/<realm>/, Entra ID's
// /<tenant>/), or in the query, which every token and rotation request
// carries, so two paths or two queries on one host may be two accounts. Erring that way costs an operator one explicit
// settle of the pending deletions (client-secrets/pending); erring the other
// way deletes with the wrong credential and leaves the right secret live.
//
// Pending deletions and write-ahead log entries keep the account's
// fingerprint, a hash of the above: short and fixed in size, so it never
// bounds what the config may hold, and it holds nothing secret.
type accountID struct {
	Provider    string `json:"provider"`
	TokenURL    string `json:"token_url"`
	RotationURL string `json:"rotation_url"`
	CustomerID  string `json:"customer_id"`
	ClientID    string `json:"client_id"`
}

// accountFingerprintPrefix starts every fingerprint; it names the hash.
const accountFingerprintPrefix = "sha256:"

// account is the account of a config (resolved or not).
func (c *config) account() accountID {
	r := c.resolved()
	return accountID{
		Provider:    r.Provider,
		TokenURL:    canonicalURL(r.TokenURL),
		RotationURL: canonicalURL(r.RotationURL),
		CustomerID:  r.CustomerID,
		ClientID:    r.ClientID,
	}
}

// fingerprint is the account's short, stable identifier.
func (a accountID) fingerprint() string {
	raw, _ := json.Marshal(a) // a struct of strings always encodes
	sum := sha256.Sum256(raw)
	return accountFingerprintPrefix + hex.EncodeToString(sum[:16])
}

// describe names the account for a message: never a secret.
func (a accountID) describe() string {
	parts := []string{"provider " + a.Provider}
	if a.ClientID != "" {
		parts = append(parts, "client_id "+a.ClientID)
	}
	if a.CustomerID != "" {
		parts = append(parts, "customer_id "+a.CustomerID)
	}
	if a.TokenURL != "" {
		parts = append(parts, "token_url "+a.TokenURL)
	}
	if a.RotationURL != "" {
		parts = append(parts, "rotation_url "+a.RotationURL)
	}
	return strings.Join(parts, ", ")
}

// movedFields names the parts of the account that differ.
func (a accountID) movedFields(to accountID) []string {
	var moved []string
	for _, f := range []struct {
		name     string
		was, now string
	}{
		{"provider", a.Provider, to.Provider},
		{"token_url", a.TokenURL, to.TokenURL},
		{"rotation_url", a.RotationURL, to.RotationURL},
		{"customer_id", a.CustomerID, to.CustomerID},
		{"client_id", a.ClientID, to.ClientID},
	} {
		if f.was != f.now {
			moved = append(moved, f.name)
		}
	}
	return moved
}

// canonicalURL is a URL as the account counts it: scheme and host lower
// case, no default port, the query with its parameters sorted (the requests
// carry it, so it may name the tenant), no fragment. A URL without a query
// comes out as it did before queries counted, so the fingerprints kept
// with such a config's records stay the same. Text that does not parse is
// kept as it is (validation refuses it anyway).
func canonicalURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return raw
	}
	scheme := strings.ToLower(u.Scheme)
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	if (scheme == "https" && port == "443") || (scheme == "http" && port == "80") {
		port = ""
	}
	if port != "" {
		host += ":" + port
	} else if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	canonical := scheme + "://" + host + u.EscapedPath()
	if u.RawQuery != "" {
		// Encode sorts by key; a query that does not parse counts as written.
		if q, err := url.ParseQuery(u.RawQuery); err == nil {
			canonical += "?" + q.Encode()
		} else {
			canonical += "?" + u.RawQuery
		}
	}
	return canonical
}

// belongsTo says whether a record kept with fingerprint fp belongs to the
// account with fingerprint current. A record kept before accounts were
// recorded has none, and is taken to be the stored config's: it was made
// with it, and the config writes that could have moved it since were
// accepted without a word, so nothing better is known.
func belongsTo(fp, current string) bool {
	return fp == "" || fp == current
}
