package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"sync"

	"github.com/go-jose/go-jose/v3"
	"github.com/ory/fosite"
	"github.com/ory/fosite/storage"
)

// ClientSpec is one client as the test registers it: in the clients file, or
// whole through PUT /admin/clients/{id}. The secret is given in clear here
// (it is a throwaway test secret) and only its bcrypt hash is kept, as fosite
// compares hashes and never stores a secret itself.
type ClientSpec struct {
	ID     string `json:"id"`
	Secret string `json:"secret,omitempty"`
	// TokenEndpointAuthMethod is client_secret_basic, client_secret_post or
	// private_key_jwt. fosite enforces it: a client_secret_basic client that
	// sends its secret in the body is refused, and the other way round.
	TokenEndpointAuthMethod string `json:"token_endpoint_auth_method"`
	// TokenEndpointAuthSigningAlg is the one alg a private_key_jwt client's
	// assertions may use; fosite defaults it to RS256 and refuses any other,
	// and it accepts only RS*, PS* and ES* (never EdDSA or HS*).
	TokenEndpointAuthSigningAlg string   `json:"token_endpoint_auth_signing_alg,omitempty"`
	Scopes                      []string `json:"scopes,omitempty"`
	// Audience lists the values the client may ask for with the audience
	// form parameter; empty means it may ask for none.
	Audience []string `json:"audience,omitempty"`
	// JWKS holds the client's public keys inline; JWKSURI has fosite fetch
	// them instead. At most one is set; a private_key_jwt client may start with
	// neither and get its keys later from the admin endpoint (the keys a
	// Vault mount generates exist only after the mount is pointed at us).
	JWKS    *jose.JSONWebKeySet `json:"jwks,omitempty"`
	JWKSURI string              `json:"jwks_uri,omitempty"`
}

// ClientsFile is the document given by -clients.
type ClientsFile struct {
	Clients []ClientSpec `json:"clients"`
}

// Auth methods the server takes; fosite also knows "none" (public clients),
// which the client_credentials grant refuses anyway, and client_secret_jwt,
// which it does not implement.
const (
	authBasic = "client_secret_basic"
	authPost  = "client_secret_post"
	authJWT   = "private_key_jwt"
)

// fosite's client authentication looks keys up by the assertion's alg family
// and refuses every other alg, so registering one of these is the only way a
// private_key_jwt client can work.
var assertionAlgs = map[string]bool{
	"RS256": true, "RS384": true, "RS512": true,
	"PS256": true, "PS384": true, "PS512": true,
	"ES256": true, "ES384": true, "ES512": true,
}

func readClientsFile(path string) ([]ClientSpec, error) {
	// The path is the -clients flag: the operator names the file to read.
	b, err := os.ReadFile(path) //nolint:gosec // G304: reads the clients file its operator names.
	if err != nil {
		return nil, err
	}
	var f ClientsFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("clients file %s: %w", path, err)
	}
	return f.Clients, nil
}

// validate refuses a registration fosite would accept but then fail on in a
// way that is hard to read from a test: a key without use=sig is silently
// skipped by fosite's key lookup, and an alg outside RS/PS/ES is refused only
// when the first assertion arrives.
func (c *ClientSpec) validate() error {
	if c.ID == "" {
		return errors.New("client without an id")
	}
	switch c.TokenEndpointAuthMethod {
	case authBasic, authPost:
		if c.Secret == "" {
			return fmt.Errorf("client %q: %s needs a secret", c.ID, c.TokenEndpointAuthMethod)
		}
		if c.JWKS != nil || c.JWKSURI != "" || c.TokenEndpointAuthSigningAlg != "" {
			return fmt.Errorf("client %q: keys and a signing alg are for private_key_jwt only", c.ID)
		}
	case authJWT:
		if c.Secret != "" {
			return fmt.Errorf("client %q: a private_key_jwt client has no secret", c.ID)
		}
		if c.TokenEndpointAuthSigningAlg == "" {
			c.TokenEndpointAuthSigningAlg = "RS256"
		}
		if !assertionAlgs[c.TokenEndpointAuthSigningAlg] {
			return fmt.Errorf("client %q: fosite does not verify assertions signed with %s", c.ID, c.TokenEndpointAuthSigningAlg)
		}
		if c.JWKS != nil && c.JWKSURI != "" {
			return fmt.Errorf("client %q: give jwks or jwks_uri, not both", c.ID)
		}
		if c.JWKS != nil {
			if err := checkPublicJWKS(c.JWKS); err != nil {
				return fmt.Errorf("client %q: %w", c.ID, err)
			}
		}
		if c.JWKSURI != "" {
			if err := checkJWKSURI(c.JWKSURI); err != nil {
				return fmt.Errorf("client %q: %w", c.ID, err)
			}
		}
	case "":
		return fmt.Errorf("client %q: token_endpoint_auth_method is required", c.ID)
	default:
		return fmt.Errorf("client %q: token_endpoint_auth_method %q is not served here", c.ID, c.TokenEndpointAuthMethod)
	}
	return nil
}

// checkPublicJWKS refuses private key material: a JWKS handed to an
// authorization server must hold public keys only, and a plugin that leaks a
// private member into its published JWKS should fail here, loudly.
func checkPublicJWKS(set *jose.JSONWebKeySet) error {
	for i, k := range set.Keys {
		if !k.IsPublic() {
			return fmt.Errorf("jwks key %d (kid %q) holds private key material", i, k.KeyID)
		}
		if k.Use != "sig" {
			return fmt.Errorf("jwks key %d (kid %q) has use %q; fosite ignores keys without use=sig", i, k.KeyID, k.Use)
		}
	}
	return nil
}

// checkJWKSURI allows https anywhere and plain http only on loopback, where
// the e2e suite's Vault dev server answers.
func checkJWKSURI(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("jwks_uri: %w", err)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopbackHost(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("jwks_uri %q: plain http is allowed on loopback only", raw)
	default:
		return fmt.Errorf("jwks_uri %q: scheme must be https (or http on loopback)", raw)
	}
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// clientStore is fosite's MemoryStore (tokens, jti blacklist) with its own
// client table: the MemoryStore's Clients map has no exported lock, so the
// admin endpoint could not replace a client in it while token requests read
// it. Clients here are immutable values swapped whole under the lock, so a
// request that already holds one is never affected by a replacement.
type clientStore struct {
	*storage.MemoryStore
	hasher fosite.Hasher

	mu      sync.RWMutex
	clients map[string]*fosite.DefaultOpenIDConnectClient
}

func newClientStore(hasher fosite.Hasher) *clientStore {
	return &clientStore{
		MemoryStore: storage.NewMemoryStore(),
		hasher:      hasher,
		clients:     map[string]*fosite.DefaultOpenIDConnectClient{},
	}
}

// GetClient overrides the MemoryStore's lookup; fosite reaches clients only
// through this method.
func (s *clientStore) GetClient(_ context.Context, id string) (fosite.Client, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c, ok := s.clients[id]
	if !ok {
		return nil, fosite.ErrNotFound
	}
	return c, nil
}

// put validates spec and registers it, replacing any client with its id.
func (s *clientStore) put(ctx context.Context, spec ClientSpec) error {
	if err := spec.validate(); err != nil {
		return err
	}
	var hash []byte
	if spec.Secret != "" {
		var err error
		if hash, err = s.hasher.Hash(ctx, []byte(spec.Secret)); err != nil {
			return fmt.Errorf("client %q: hashing its secret: %w", spec.ID, err)
		}
	}
	c := &fosite.DefaultOpenIDConnectClient{
		DefaultClient: &fosite.DefaultClient{
			ID:         spec.ID,
			Secret:     hash,
			GrantTypes: []string{"client_credentials"},
			Scopes:     append([]string(nil), spec.Scopes...),
			Audience:   append([]string(nil), spec.Audience...),
		},
		JSONWebKeysURI:                    spec.JWKSURI,
		JSONWebKeys:                       spec.JWKS,
		TokenEndpointAuthMethod:           spec.TokenEndpointAuthMethod,
		TokenEndpointAuthSigningAlgorithm: spec.TokenEndpointAuthSigningAlg,
	}
	s.mu.Lock()
	s.clients[spec.ID] = c
	s.mu.Unlock()
	return nil
}

// setJWKS gives a private_key_jwt client a new inline key set (dropping any
// jwks_uri), as an operator uploading a rolled-over key would.
func (s *clientStore) setJWKS(id string, set *jose.JSONWebKeySet) error {
	if err := checkPublicJWKS(set); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.clients[id]
	if !ok {
		return errNoClient
	}
	if old.TokenEndpointAuthMethod != authJWT {
		return fmt.Errorf("client %q uses %s, not private_key_jwt", id, old.TokenEndpointAuthMethod)
	}
	c := *old
	c.JSONWebKeys = set
	c.JSONWebKeysURI = ""
	s.clients[id] = &c
	return nil
}

var errNoClient = errors.New("no such client")
