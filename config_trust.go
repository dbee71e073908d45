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
var trustFields = []trustField{
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
//
// It runs before the write makes any request (verify_connection's login
// comes after it), and holds two more rules: a private_key_jwt config's
// destination is fixed (checkSigningDestinationFixed), and client_secret_id
// is changed only with the secret it names (checkClientSecretIDCarried).
func checkCredentialsCarried(stored, next *config, d *framework.FieldData) error {
	if stored == nil {
		return nil
	}
	if err := checkSigningDestinationFixed(stored, next); err != nil {
		return err
	}
	if err := checkClientSecretIDCarried(stored, next, d); err != nil {
		return err
	}
	was, now := stored.resolved(), next.resolved()
	moved := movedFields(was, now, trustFields)
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

// trustField is a config field that decides where requests go or whom to
// trust there.
type trustField struct {
	name string
	get  func(c *config) string
}

// signingDestination is where a private_key_jwt config's requests and
// assertions go: the trust fields and the assertions' aud.
var signingDestination = append(slices.Clone(trustFields),
	trustField{"assertion_audience", func(c *config) string { return c.AssertionAudience }})

// movedFields names the fields whose effective values differ.
func movedFields(was, now *config, fields []trustField) []string {
	var moved []string
	for _, f := range fields {
		if f.get(was) != f.get(now) {
			moved = append(moved, f.name)
		}
	}
	return moved
}

// checkSigningDestinationFixed is the trust rule of private_key_jwt. There
// is no stored secret that a write could be asked to carry: every request
// is signed with the mount's key, and a client assertion is a credential at
// its aud until it expires. A server that trusts the mount's JWKS by URL
// trusts every key the mount publishes, so even a key made for the write
// would be accepted. So the destination of a private_key_jwt config (the
// trust fields and assertion_audience) is fixed for the life of that
// config: moving it, or turning private_key_jwt on for a stored config
// whose destination an update could have set, takes deleting the config (a
// capability of its own in Vault's ACL), which retires its keys, and
// writing a new one. Moving away from private_key_jwt is allowed; it
// retires the keys.
func checkSigningDestinationFixed(stored, next *config) error {
	if stored == nil {
		return nil
	}
	was, now := stored.resolved(), next.resolved()
	if !now.usesSigningKeys() {
		return nil
	}
	if !was.usesSigningKeys() {
		return userErrorf("token_auth_method private_key_jwt can only be set on a new config: its signing keys and where its client assertions go " +
			"belong to that one config, which an update could otherwise point anywhere: delete the config and write it again with " +
			"token_auth_method=private_key_jwt (deleting takes the delete capability on config)")
	}
	moved := movedFields(was, now, signingDestination)
	if len(moved) == 0 {
		return nil
	}
	return userErrorf("changing %s would send this mount's signed client assertions somewhere else, and with private_key_jwt where they go "+
		"is fixed for the life of the config: to move it, delete the config (which retires its signing keys) and write it again "+
		"(deleting takes the delete capability on config); then register the new key at the server", strings.Join(moved, ", "))
}

// checkClientSecretIDCarried refuses a change of client_secret_id without
// the secret it names in the same write: the next rotation deletes the
// secret of that id upstream, so a writer who could name any id could
// delete another integration's secret. Clearing it takes the secret too:
// while the stored secret has no id, Vault cannot tell which pending
// deletion it may be and deletes none of them, so a write that cleared it
// without the secret would keep every replaced secret live past its grace.
func checkClientSecretIDCarried(stored, next *config, d *framework.FieldData) error {
	if stored.ClientSecretID == next.ClientSecretID || written(d, "client_secret") || providerInputWritten(d) {
		return nil
	}
	if next.ClientSecretID == "" {
		return userErrorf("clearing client_secret_id stops the deletion of every replaced secret pending deletion (Vault can no longer tell " +
			"which secret the mount holds), so it is cleared only with the secret: write client_secret (the secret the mount is to hold) " +
			"in the same request, or write the stored secret's client_secret_id instead")
	}
	return userErrorf("changing client_secret_id changes which secret the next rotation deletes upstream, so it is changed only with " +
		"that secret: write client_secret (the secret with this id) in the same request")
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
