package mapsindoors

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// Making private_key_jwt signing keys, and the JWKS document that
// publishes their public halves: the key material, apart from where it is
// kept (keys_store.go) and how a node holds it (keys_ring.go).

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
