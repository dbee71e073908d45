package mapsindoors

import (
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
)

// trustFields are the config fields that decide where the credentials are
// sent or whom to trust there. A write that changes any of them must carry
// the credentials again: otherwise anyone allowed to update config, but not
// to read the secret, could point the mount at a host of theirs and collect
// the stored secret with the next token request.
var trustFields = []struct {
	name string
	get  func(c *config) string
}{
	{"provider", func(c *config) string { return c.Provider }},
	{"token_url", func(c *config) string { return c.TokenURL }},
	{"rotation_url", func(c *config) string { return c.RotationURL }},
	{"revocation_url", func(c *config) string { return c.RevocationURL }},
	{"ca_cert", func(c *config) string { return c.CACert }},
	{"allow_loopback_http", func(c *config) string { return strconv.FormatBool(c.AllowLoopbackHTTP) }},
}

// checkCredentialsCarried refuses a write that changes a trust field of a
// stored config unless it also writes every secret the new config keeps.
// It compares effective values, so a provider change that moves a default
// URL counts, and rewriting a field with the value it has does not. A new
// config carries its credentials by definition.
func checkCredentialsCarried(stored, next *config, d *framework.FieldData) error {
	if stored == nil {
		return nil
	}
	was, now := stored.resolved(), next.resolved()
	var moved []string
	for _, f := range trustFields {
		if f.get(was) != f.get(now) {
			moved = append(moved, f.name)
		}
	}
	if len(moved) == 0 {
		return nil
	}
	var missing []string
	if now.ClientSecret != "" && !written(d, "client_secret") && !providerInputWritten(d) {
		want := "client_secret"
		if p := now.provider(); p != nil && len(p.inputFields) > 0 {
			want += " (or " + strings.Join(slices.Sorted(maps.Keys(p.inputFields)), ", ") + ")"
		}
		missing = append(missing, want)
	}
	if now.Password != "" && !written(d, "password") {
		missing = append(missing, "password")
	}
	if len(missing) == 0 {
		return nil
	}
	return userErrorf("changing %s changes where the credentials are sent or whom to trust, so the stored credentials are not kept: write %s again in the same request (an empty value drops a credential the new config does not use)",
		strings.Join(moved, ", "), strings.Join(missing, " and "))
}

// written says whether the request carried the field, even empty.
func written(d *framework.FieldData, field string) bool {
	_, ok := d.Raw[field]
	return ok
}

// providerInputWritten says whether the request carried a provider's own
// credential input (Metapack's api_key_properties), which sets the secret.
func providerInputWritten(d *framework.FieldData) bool {
	for name := range providerInputFields() {
		if written(d, name) {
			return true
		}
	}
	return false
}
