package mapsindoors

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// The signing keys of private_key_jwt (RFC 7523) client authentication. The
// engine makes each key itself and keeps it seal-wrapped in one storage
// entry, apart from the config; only the public halves ever leave it, as the
// JWKS at <mount>/jwks. Whatever a node signs with and whatever it publishes
// come from one in-memory snapshot of that entry, so the key a request is
// signed with is always in the JWKS that node serves.

const (
	// keysStoragePath holds the keys, private halves included: sealed.
	keysStoragePath = "signing_keys"

	defaultKeyType = "rsa-2048"
	// maxKeyRolloverDelay bounds key_rollover_delay as
	// previous_secret_grace is bounded.
	maxKeyRolloverDelay = 30 * 24 * time.Hour
)

// keyType is one kind of key the engine can make, and the JWS alg it signs
// with. RS256 is the default because every server that takes
// private_key_jwt accepts it; several refuse EdDSA.
type keyType struct {
	name     string
	alg      string
	generate func() (crypto.Signer, error)
}

var keyTypes = []keyType{
	{"rsa-2048", "RS256", func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 2048) }},
	{"ec-p256", "ES256", func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }},
	{"ed25519", "EdDSA", func() (crypto.Signer, error) {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}},
}

func lookupKeyType(name string) (keyType, error) {
	for _, kt := range keyTypes {
		if kt.name == name {
			return kt, nil
		}
	}
	names := make([]string, len(keyTypes))
	for i, kt := range keyTypes {
		names[i] = kt.name
	}
	return keyType{}, userErrorf("key_type %q is not known; use one of %s (default %s)", name, strings.Join(names, ", "), defaultKeyType)
}

// signingConfig is the part of the config private_key_jwt adds. It is
// embedded in config, so its fields are stored beside the others.
type signingConfig struct {
	// KeyType is the type of the keys rotate-root makes from now on; the
	// keys already made keep theirs.
	KeyType string `json:"key_type,omitempty"`
	// KeyRolloverDelay is how long a new key is published before it may
	// sign.
	KeyRolloverDelay time.Duration `json:"key_rollover_delay,omitempty"`
	// AssertionAudience replaces the token URL as the assertions' aud.
	AssertionAudience string `json:"assertion_audience,omitempty"`
}

// usesSigningKeys says whether the (resolved) config authenticates the
// client with a key of this mount's.
func (c *config) usesSigningKeys() bool {
	return c.TokenAuthMethod == string(upstream.AuthPrivateKeyJWT)
}

func (c *config) keyType() string {
	if c.KeyType == "" {
		return defaultKeyType
	}
	return c.KeyType
}

// The config fields of private_key_jwt, each an entry of configFields.

func keyTypeField() configField {
	f := textField("key_type", "Type of the signing keys this mount makes for private_key_jwt: rsa-2048 (RS256), ec-p256 (ES256) or ed25519 (EdDSA, which several servers refuse). A change applies from the next rotate-root. Default "+defaultKeyType+".",
		func(c *config) *string { return &c.KeyType })
	f.set = func(c *config, v any) { c.KeyType = strings.ToLower(strings.TrimSpace(v.(string))) }
	f.read = func(c *config) any { return c.keyType() }
	return f.checkedBy(func(c *config) error {
		_, err := lookupKeyType(c.keyType())
		return err
	})
}

func keyRolloverDelayField() configField {
	return durationField("key_rollover_delay", "With private_key_jwt: how long rotate-root publishes a new key in the JWKS before it may sign (at most 30 days). Signing moves to it only once the server accepts it. Default 0: right away, for servers that fetch the JWKS for a kid they do not know.",
		func(c *config) *time.Duration { return &c.KeyRolloverDelay }).
		checkedBy(func(c *config) error {
			if c.KeyRolloverDelay < 0 || c.KeyRolloverDelay > maxKeyRolloverDelay {
				return userErrorf("key_rollover_delay must be between 0 and %s", maxKeyRolloverDelay)
			}
			return nil
		})
}

func assertionAudienceField() configField {
	return textField("assertion_audience", "With private_key_jwt: the aud of the client assertions, for servers that want something else than the token URL (their issuer, say). Default: token_url, exactly as written.",
		func(c *config) *string { return &c.AssertionAudience }).
		checkedBy(func(c *config) error {
			if strings.ContainsAny(c.AssertionAudience, " \t\r\n") {
				return userErrorf("assertion_audience must be one value without spaces, such as https://auth.example.com/oauth2/token")
			}
			return nil
		}).
		sentAs(func(c *config, u *upstream.Config) { u.AssertionAudience = c.AssertionAudience })
}

// validateSigning checks what private_key_jwt needs of a resolved config.
func (c *config) validateSigning() error {
	if !c.usesSigningKeys() {
		return nil
	}
	if c.ClientSecret != "" {
		return userErrorf("token_auth_method private_key_jwt sends no client secret, so none may be stored: write client_secret=\"\" with it")
	}
	return nil
}

// checkAssertionAudienceCarried is config_trust.go's rule for
// private_key_jwt. An assertion is a credential at its aud until it
// expires. With aud the token URL, moving token_url moves aud along, and an
// assertion sent to another host is of no use at the real server; but with
// an assertion_audience, a write that moves where requests go could collect
// assertions the real server takes. So such a write must name
// assertion_audience again ("" for the token URL).
func checkAssertionAudienceCarried(stored, next *config, d *framework.FieldData) error {
	if stored == nil {
		return nil
	}
	was, now := stored.resolved(), next.resolved()
	if !now.usesSigningKeys() || now.AssertionAudience == "" || written(d, "assertion_audience") {
		return nil
	}
	var moved []string
	for _, f := range trustFields {
		if f.get(was) != f.get(now) {
			moved = append(moved, f.name)
		}
	}
	if len(moved) == 0 {
		return nil
	}
	return userErrorf("changing %s changes where the client assertions go, and their aud is assertion_audience, not the token URL: "+
		"write assertion_audience again in the same request (\"\" to use the token URL)", strings.Join(moved, ", "))
}

// keyState is where a key is in its rollover.
type keyState string

const (
	// keyNext is published in the JWKS but does not sign yet.
	keyNext keyState = "next"
	// keyCurrent signs; there is one at most.
	keyCurrent keyState = "current"
	// keyPrevious signed before the current one and stays published
	// until its RemoveAt.
	keyPrevious keyState = "previous"
)

// signingKey is one key as stored. The times that end a state are fixed
// when the key enters it, as a pending deletion's due time is.
type signingKey struct {
	KeyID     string    `json:"kid"`
	Type      string    `json:"key_type"`
	Algorithm string    `json:"alg"`
	State     keyState  `json:"state"`
	CreatedAt time.Time `json:"created_at"`
	// PromoteAfter is when a next key may begin to sign, if the server
	// accepts it by then.
	PromoteAfter time.Time `json:"promote_after,omitempty"`
	PromotedAt   time.Time `json:"promoted_at,omitempty"`
	RetiredAt    time.Time `json:"retired_at,omitempty"`
	// RemoveAt is when a previous key leaves the JWKS.
	RemoveAt time.Time `json:"remove_at,omitempty"`
	// How the attempts to promote a next key went: one is made only after
	// a token request signed with it succeeded, and failures back off.
	FailedPromotions     int       `json:"failed_promotions,omitempty"`
	LastPromotionError   string    `json:"last_promotion_error,omitempty"`
	LastPromotionErrorAt time.Time `json:"last_promotion_error_at,omitempty"`
	NextPromotionAttempt time.Time `json:"next_promotion_attempt,omitempty"`
	// PrivateKey is PKCS #8 DER. It never leaves storage and memory.
	PrivateKey []byte `json:"private_key"`
}

// keySet is the stored entry.
type keySet struct {
	Keys []signingKey `json:"keys"`
}

func (s *keySet) clone() *keySet {
	return &keySet{Keys: slices.Clone(s.Keys)}
}

// find is the first key in state, or nil.
func (s *keySet) find(state keyState) *signingKey {
	for i := range s.Keys {
		if s.Keys[i].State == state {
			return &s.Keys[i]
		}
	}
	return nil
}

// newSigningKey makes a key of the given type. Its kid is the RFC 7638
// thumbprint of the public key: unique per key, and the same wherever it is
// computed.
func newSigningKey(typeName string, now time.Time) (signingKey, error) {
	kt, err := lookupKeyType(typeName)
	if err != nil {
		return signingKey{}, err
	}
	priv, err := kt.generate()
	if err != nil {
		return signingKey{}, fmt.Errorf("generate a %s key: %w", kt.name, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return signingKey{}, fmt.Errorf("encode the new %s key: %w", kt.name, err)
	}
	thumb, err := (&jose.JSONWebKey{Key: priv.Public()}).Thumbprint(crypto.SHA256)
	if err != nil {
		return signingKey{}, fmt.Errorf("compute the new key's kid: %w", err)
	}
	return signingKey{
		KeyID:      base64.RawURLEncoding.EncodeToString(thumb),
		Type:       kt.name,
		Algorithm:  kt.alg,
		CreatedAt:  now.UTC(),
		PrivateKey: der,
	}, nil
}

func getKeySet(ctx context.Context, s logical.Storage) (*keySet, error) {
	entry, err := s.Get(ctx, keysStoragePath)
	if err != nil {
		return nil, fmt.Errorf("read the signing keys: %w", err)
	}
	set := &keySet{}
	if entry == nil {
		return set, nil
	}
	if err := entry.DecodeJSON(set); err != nil {
		return nil, fmt.Errorf("decode the signing keys: %w", err)
	}
	return set, nil
}

func putKeySet(ctx context.Context, s logical.Storage, set *keySet) error {
	entry, err := logical.StorageEntryJSON(keysStoragePath, set)
	if err != nil {
		return fmt.Errorf("encode the signing keys: %w", err)
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("store the signing keys: %w", err)
	}
	return nil
}

// keySnapshot is a key set ready to sign with and to publish. It is never
// changed once made; a change makes a new one.
type keySnapshot struct {
	keys    []signingKey
	signers map[string]crypto.Signer
	// jwks is the published document: every key's public half.
	jwks []byte
}

func newKeySnapshot(set *keySet) (*keySnapshot, error) {
	snap := &keySnapshot{keys: slices.Clone(set.Keys), signers: map[string]crypto.Signer{}}
	doc := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	for _, k := range set.Keys {
		parsed, err := x509.ParsePKCS8PrivateKey(k.PrivateKey)
		if err != nil {
			return nil, fmt.Errorf("signing key %s does not parse", k.KeyID)
		}
		signer, ok := parsed.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("signing key %s cannot sign", k.KeyID)
		}
		snap.signers[k.KeyID] = signer
		doc.Keys = append(doc.Keys, jose.JSONWebKey{Key: signer.Public(), KeyID: k.KeyID, Algorithm: k.Algorithm, Use: "sig"})
	}
	var err error
	if snap.jwks, err = json.Marshal(doc); err != nil {
		return nil, fmt.Errorf("encode the JWKS: %w", err)
	}
	return snap, nil
}

// signingKey is the key of state in the snapshot, ready for upstream.
func (s *keySnapshot) signingKey(state keyState) (upstream.SigningKey, bool) {
	for _, k := range s.keys {
		if k.State == state {
			return upstream.SigningKey{KeyID: k.KeyID, Algorithm: k.Algorithm, Key: s.signers[k.KeyID]}, true
		}
	}
	return upstream.SigningKey{}, false
}

// keyRing is the mount's keys in memory. The JWKS path reads it without
// any lock that a token request or a rotation holds: a server given the
// JWKS URL fetches it while the token request it answers waits (a rotation
// that proves a new key holds the write lock meanwhile). It is also the
// upstream client's AssertionSigner, asked once per HTTP request.
type keyRing struct {
	// storage is the mount's storage, for a signer that finds nothing
	// loaded (after Invalidate) outside any request.
	storage logical.Storage

	snap atomic.Pointer[keySnapshot]
	// mu guards gen and orders replacements of snap; it is held for
	// neither I/O nor signing. gen counts replacements, so a load that
	// read storage before a rotation published does not overwrite what
	// the rotation published with what it read.
	mu  sync.Mutex
	gen uint64
}

var _ upstream.AssertionSigner = (*keyRing)(nil)

// load is the snapshot, read from storage when none is loaded.
func (r *keyRing) load(ctx context.Context, s logical.Storage) (*keySnapshot, error) {
	if snap := r.snap.Load(); snap != nil {
		return snap, nil
	}
	if s == nil {
		return nil, errors.New("the signing keys are not loaded and there is no storage to read them from")
	}
	r.mu.Lock()
	gen := r.gen
	r.mu.Unlock()
	set, err := getKeySet(ctx, s)
	if err != nil {
		return nil, err
	}
	snap, err := newKeySnapshot(set)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	if r.gen == gen {
		r.snap.Store(snap)
	}
	r.mu.Unlock()
	return snap, nil
}

// publish makes set the one that signs and is published, once it is
// stored.
func (r *keyRing) publish(set *keySet) error {
	snap, err := newKeySnapshot(set)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.gen++
	r.snap.Store(snap)
	r.mu.Unlock()
	return nil
}

// invalidate drops the snapshot; the next use reads storage. A write whose
// outcome is unknown invalidates, so that what signs and what is published
// both follow what storage holds.
func (r *keyRing) invalidate() {
	r.mu.Lock()
	r.gen++
	r.snap.Store(nil)
	r.mu.Unlock()
}

// SigningKey is the current key: what every token request and revocation
// of the mount signs its assertion with.
func (r *keyRing) SigningKey(ctx context.Context) (upstream.SigningKey, error) {
	snap, err := r.load(ctx, r.storage)
	if err != nil {
		return upstream.SigningKey{}, err
	}
	k, ok := snap.signingKey(keyCurrent)
	if !ok {
		return upstream.SigningKey{}, errors.New("this mount has no signing key; write its config with token_auth_method=private_key_jwt to make one")
	}
	return k, nil
}

// newUpstreamClient is the backend's newClient: a private_key_jwt client
// signs with the mount's current key unless the caller named a key (a
// rollover proving its next one).
func (b *backend) newUpstreamClient(c upstream.Config) (upstream.Client, error) {
	if c.AuthMethod == upstream.AuthPrivateKeyJWT && c.Signer == nil {
		c.Signer = b.keys
	}
	return upstream.New(c)
}

// storeKeys writes set and then publishes it. When the write fails, what
// storage holds is not known (a write can commit and still report
// failure), so the snapshot is dropped and the next use reads storage:
// signing and the JWKS follow storage either way.
func (b *backend) storeKeys(ctx context.Context, s logical.Storage, set *keySet) error {
	if err := putKeySet(ctx, s, set); err != nil {
		b.keys.invalidate()
		return err
	}
	if err := b.keys.publish(set); err != nil {
		b.keys.invalidate()
		return err
	}
	return nil
}

// ensureSigningKey makes the mount's first key when a config that uses
// private_key_jwt is written and there is none yet, and publishes it before
// the config is stored: no request is signed with a key the JWKS does not
// show, a login that checks the config included. A mount that has keys
// keeps them (switching the method away and back needs no new
// registration). made says a key was made now, which no server can know
// yet.
func (b *backend) ensureSigningKey(ctx context.Context, s logical.Storage, cfg *config) (made bool, err error) {
	if !cfg.usesSigningKeys() {
		return false, nil
	}
	set, err := getKeySet(ctx, s)
	if err != nil {
		return false, err
	}
	if set.find(keyCurrent) != nil {
		return false, nil
	}
	now := b.now().UTC()
	k, err := newSigningKey(cfg.keyType(), now)
	if err != nil {
		return false, err
	}
	k.State, k.PromotedAt = keyCurrent, now
	updated := set.clone()
	updated.Keys = append(updated.Keys, k)
	if err := b.storeKeys(ctx, s, updated); err != nil {
		return false, err
	}
	b.Logger().Info("made the mount's first signing key", "kid", k.KeyID, "alg", k.Algorithm)
	return true, nil
}

// newKeyWarning is what a config write that made the mount's first key
// says instead of checking the connection: a server can only know the key
// once it is registered there.
func newKeyWarning(mount string) string {
	return fmt.Sprintf("made this mount's private_key_jwt signing key, so the connection was not checked (no server knows the key yet): "+
		"register the public keys from \"vault read -format=raw %sjwks\" with the client at the server, or give it that path's URL "+
		"as the client's jwks_uri, then check with \"vault read %sverify\"", mount, mount)
}

// signingKeysState is what a config read shows of the keys: never private
// material.
func (b *backend) signingKeysState(ctx context.Context, s logical.Storage) (map[string]any, error) {
	set, err := getKeySet(ctx, s)
	if err != nil {
		return nil, err
	}
	keys := make([]map[string]any, 0, len(set.Keys))
	for _, k := range set.Keys {
		m := map[string]any{
			"kid":        k.KeyID,
			"alg":        k.Algorithm,
			"key_type":   k.Type,
			"state":      string(k.State),
			"created_at": formatTime(k.CreatedAt),
		}
		switch k.State {
		case keyNext:
			// Signing moves to it at the first check after this time at
			// which the server accepts it.
			m["state_ends_at"] = formatTime(k.PromoteAfter)
			m["failed_promotions"] = k.FailedPromotions
			m["last_promotion_error"] = k.LastPromotionError
			m["last_promotion_error_at"] = formatTime(k.LastPromotionErrorAt)
			m["next_promotion_attempt"] = formatTime(k.NextPromotionAttempt)
		case keyCurrent:
			m["state_since"] = formatTime(k.PromotedAt)
			m["state_ends_at"] = "" // at the next rollover
		case keyPrevious:
			m["state_since"] = formatTime(k.RetiredAt)
			m["state_ends_at"] = formatTime(k.RemoveAt)
		}
		keys = append(keys, m)
	}
	return map[string]any{"signing_keys": keys}, nil
}

// signingKeysStateKeys are the keys signingKeysState adds to a config read.
var signingKeysStateKeys = []string{"signing_keys"}

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
