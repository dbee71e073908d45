package mapsindoors

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// The key set's lifecycle: the stored entry of signing keys, how it is
// written and published, how a config gets its first key, and how a
// config's keys are retired with it. The keys belong to one config: a
// config delete, or a write that moves token_auth_method away from
// private_key_jwt, retires them, and a new private_key_jwt config never
// takes over keys an earlier one left.

const (
	// keysStoragePath holds the keys, private halves included: sealed.
	keysStoragePath = "signing_keys"
)

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
	// RolledOverAt is when the last rollover began (or the first key was
	// made), written with the key it made: the rotation schedule counts
	// from it even when the config's last_rotated could not be written.
	RolledOverAt time.Time `json:"rolled_over_at,omitempty"`
}

// clone is a copy that shares no slice with s.
func (s *keySet) clone() *keySet {
	cp := *s
	cp.Keys = slices.Clone(s.Keys)
	return &cp
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

// ensureSigningKey makes the first key of a config that uses
// private_key_jwt when it has none yet, and publishes it before the config
// is stored: no request is signed with a key the JWKS does not show, a
// login that checks the config included. stored is the config as stored
// before this write (nil for a new one): keys belong to the config they
// were made for, so keys found where no private_key_jwt config was stored
// (left by a delete or a switch whose retirement failed) are retired, never
// taken over. made says a key was made now, which no server can know yet;
// warnings are for the write's response.
func (b *backend) ensureSigningKey(ctx context.Context, s logical.Storage, stored, cfg *config) (made bool, warnings []string, err error) {
	if !cfg.usesSigningKeys() {
		return false, nil, nil
	}
	set, err := getKeySet(ctx, s)
	if err != nil {
		return false, nil, err
	}
	if len(set.Keys) > 0 && (stored == nil || !stored.resolved().usesSigningKeys()) {
		w, err := b.retireSigningKeys(ctx, s)
		if err != nil {
			return false, nil, err
		}
		warnings = append(warnings, w)
		set = &keySet{}
	}
	if set.find(keyCurrent) != nil {
		return false, warnings, nil
	}
	now := b.now().UTC()
	k, err := newSigningKey(cfg.keyType(), now)
	if err != nil {
		return false, nil, err
	}
	k.State, k.PromotedAt = keyCurrent, now
	updated := set.clone()
	updated.Keys = append(updated.Keys, k)
	updated.RolledOverAt = now
	if err := b.storeKeys(ctx, s, updated); err != nil {
		return false, nil, err
	}
	b.Logger().Info("made the mount's first signing key", "kid", k.KeyID, "alg", k.Algorithm)
	return true, warnings, nil
}

// retireSigningKeys ends the mount's signing keys with the config they
// belong to: it deletes the key set from storage and from the node's
// memory, so they neither sign nor stay in the JWKS, and no later config
// can take them over. The warning (empty when there were none) names them,
// for the response of the delete or write that retired them. A delete
// that fails may still have committed, so the node reads storage again
// either way.
func (b *backend) retireSigningKeys(ctx context.Context, s logical.Storage) (warning string, err error) {
	set, err := getKeySet(ctx, s)
	if err != nil {
		return "", err
	}
	if err := s.Delete(ctx, keysStoragePath); err != nil {
		b.keys.invalidate()
		return "", fmt.Errorf("retire the signing keys: %w", err)
	}
	if err := b.keys.publish(&keySet{}); err != nil {
		b.keys.invalidate()
		return "", err
	}
	if len(set.Keys) == 0 {
		return "", nil
	}
	kids := make([]string, len(set.Keys))
	for i, k := range set.Keys {
		kids[i] = k.KeyID
	}
	b.Logger().Info("retired the signing keys with their config", "kids", kids)
	return fmt.Sprintf("retired this mount's private_key_jwt signing keys %s with the config they belonged to: they sign nothing and left the JWKS; "+
		"remove them from the client's registration at the server. A new private_key_jwt config makes a new key",
		strings.Join(kids, ", ")), nil
}

// retireKeysMovedAway is the config write's part in retiring keys: after a
// write that moves token_auth_method away from private_key_jwt is stored,
// the keys of the config it replaced are retired. The write has committed,
// so a failure here is a warning, and the periodic function retires them
// later (settleSigningKeys); until then they sign nothing, since nothing
// stored uses them.
func (b *backend) retireKeysMovedAway(ctx context.Context, s logical.Storage, stored, next *config) string {
	if stored == nil || !stored.resolved().usesSigningKeys() || next.resolved().usesSigningKeys() {
		return ""
	}
	w, err := b.retireSigningKeys(ctx, s)
	if err != nil {
		b.Logger().Warn("the config no longer uses private_key_jwt, but its signing keys could not be retired yet; the periodic function tries again", "error", err)
		return "the config no longer uses private_key_jwt, but its signing keys could not be retired yet: they sign nothing, " +
			"and Vault retires them within minutes (or delete and write the config again)"
	}
	return w
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
