package mapsindoors

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// A private_key_jwt key rollover (rotate-root on such a mount) has nothing
// to create or delete upstream, so it needs no write-ahead log; what it must
// guarantee is that no request is ever signed with a key the server cannot
// know of, and that no key is forgotten:
//
//  1. a new key is stored as "next" and published in the JWKS, beside the
//     current one, which still signs;
//  2. once key_rollover_delay has passed, a token request signed with the
//     next key proves that the server accepts it (a server given the JWKS
//     URL fetches it for the kid it does not know, a server given the keys
//     by hand has them by then, or not);
//  3. only then does it become "current" and sign, in the same write that
//     makes the old one "previous";
//  4. the previous key leaves the JWKS once previous_secret_grace has
//     passed.
//
// Every step is one write of the key set, and what a node signs with and
// what it publishes come from one snapshot of it. A failed proof leaves the
// current key signing; the periodic function tries again, backing off.

// keyRollover is what a rollover reports.
type keyRollover struct {
	// NewKeyID is the next key: made now, or pending from before.
	NewKeyID string
	// Started says the key was made by this call.
	Started bool
	// Promoted says the new key signs now.
	Promoted     bool
	PromoteAfter time.Time
	// SigningKeyID signs from now on; PreviousKeyID signed before it.
	SigningKeyID      string
	PreviousKeyID     string
	PreviousRemovalAt time.Time
	RotatedAt         time.Time
}

// response is rotate-root's answer: never private material.
func (k *keyRollover) response(warnings []string) *logical.Response {
	state := keyNext
	if k.Promoted {
		state = keyCurrent
	}
	return &logical.Response{
		Data: map[string]any{
			"kid":                   k.NewKeyID,
			"state":                 string(state),
			"signing_kid":           k.SigningKeyID,
			"previous_kid":          k.PreviousKeyID,
			"promote_after":         formatTime(k.PromoteAfter),
			"previous_removal_at":   formatTime(k.PreviousRemovalAt),
			"rotated_at":            formatTime(k.RotatedAt),
			"rollover_started_here": k.Started,
		},
		Warnings: warnings,
	}
}

// rollKeys is rotate-root on a private_key_jwt mount, under the write lock.
// It starts a rollover unless one is under way, and promotes the next key
// if it is due and the server accepts it. A manual rotate-root tries that
// at once; a scheduled one respects the back-off of failed attempts.
func (r *rotationRun) rollKeys() (*rotationResult, error) {
	now := r.b.now().UTC()
	set, err := getKeySet(r.ctx, r.s)
	if err != nil {
		return nil, err
	}
	if r.trigger == triggerSchedule && r.rolledOverAlready(set) {
		return nil, nil
	}
	out := &keyRollover{RotatedAt: now}
	res := &rotationResult{RotatedAt: now, Keys: out}

	if set.find(keyCurrent) == nil {
		// A mount configured before it had keys: its first key signs at
		// once, as the config write would have made it.
		if _, _, err := r.b.ensureSigningKey(r.ctx, r.s, r.stored, r.cfg); err != nil {
			return nil, err
		}
		if set, err = getKeySet(r.ctx, r.s); err != nil {
			return nil, err
		}
		cur := set.find(keyCurrent)
		out.NewKeyID, out.Started, out.Promoted, out.SigningKeyID = cur.KeyID, true, true, cur.KeyID
		if w := r.markKeysRotated(set.RolledOverAt); w != "" {
			res.Warnings = append(res.Warnings, w)
		}
		return res, nil
	}

	if next := set.find(keyNext); next == nil {
		k, err := newSigningKey(r.cfg.keyType(), now)
		if err != nil {
			return nil, err
		}
		k.State, k.PromoteAfter = keyNext, now.Add(r.cfg.KeyRolloverDelay)
		updated := set.clone()
		updated.Keys = append(updated.Keys, k)
		// The schedule counts from here, whatever becomes of the config
		// write below: this entry records it with the key.
		updated.RolledOverAt = r.started
		// 1. Published before anything is signed with it.
		if err := r.b.storeKeys(r.ctx, r.s, updated); err != nil {
			return nil, err
		}
		set, out.Started = updated, true
		r.log.Info("key rollover started: the new key is published", "kid", k.KeyID, "alg", k.Algorithm,
			"promote_after", formatTime(k.PromoteAfter))
		if w := r.markKeysRotated(r.started); w != "" {
			res.Warnings = append(res.Warnings, w)
		}
	}

	next := set.find(keyNext)
	out.NewKeyID, out.PromoteAfter = next.KeyID, next.PromoteAfter
	out.SigningKeyID = set.find(keyCurrent).KeyID
	p, err := r.b.promoteNextKey(r.ctx, r.s, r.cfg, set, now, r.trigger == triggerManual, r.log)
	if err != nil {
		return nil, err
	}
	switch {
	case p.promoted != nil:
		out.Promoted, out.PreviousKeyID = true, out.SigningKeyID
		out.SigningKeyID = p.promoted.find(keyCurrent).KeyID
		// Without a grace the replaced key is gone already.
		for _, k := range p.promoted.Keys {
			if k.KeyID == out.PreviousKeyID {
				out.PreviousRemovalAt = k.RemoveAt
			}
		}
	case p.refused != nil:
		res.Warnings = append(res.Warnings, fmt.Sprintf(
			"the new key %s is published, but the server does not accept it yet, so key %s still signs: %v. "+
				"Register the keys from the jwks path at the server (or wait until it fetches them again); "+
				"Vault tries the new key again about once a minute, backing off",
			next.KeyID, out.SigningKeyID, p.refused))
	default:
		res.Warnings = append(res.Warnings, fmt.Sprintf(
			"the new key %s is published and signs from %s (key_rollover_delay), once the server accepts it; key %s signs until then",
			next.KeyID, formatTime(next.PromoteAfter), out.SigningKeyID))
	}
	return res, nil
}

// markKeysRotated records in the config, for rotation_period and
// rotation_schedule and for reads, that a rollover began at, and clears a
// failure of an earlier rotate-root. The key set records the same time with
// the key (RolledOverAt), and a scheduled run consults it
// (rolledOverAlready), so a config write that fails here cannot make one
// scheduled time roll the keys over twice: it is a warning.
func (r *rotationRun) markKeysRotated(at time.Time) string {
	updated := r.stored.clone()
	updated.LastRotated = at
	updated.Rotation = rotationStatus{}
	if err := putConfig(r.ctx, r.s, updated); err != nil {
		r.log.Warn("the key rollover began, but its time could not be recorded for the rotation schedule", "error", err)
		return "the new key is published, but the rollover's time could not be recorded in the config, so a scheduled rotation may come early"
	}
	r.b.reset()
	return ""
}

// rolledOverAlready says whether a scheduled run finds its scheduled time
// served by a rollover that the config does not show: one whose
// last_rotated write failed, or whose key write committed but reported
// failure. It then records that rollover's time in the config (repairing
// it, best effort) and the run does nothing: one scheduled time, one
// rollover. A next key it left is promoted by settleSigningKeys.
func (r *rotationRun) rolledOverAlready(set *keySet) bool {
	if !set.RolledOverAt.After(r.stored.LastRotated) {
		return false
	}
	seen := r.stored.clone()
	seen.LastRotated = set.RolledOverAt
	if seen.dueForRotation(r.b.now()) {
		return false
	}
	r.log.Info("the scheduled key rollover already ran; recording its time in the config", "rolled_over_at", formatTime(set.RolledOverAt))
	if w := r.markKeysRotated(set.RolledOverAt); w != "" {
		r.log.Warn(w)
	}
	return true
}

// promotion is how an attempt to promote the next key went.
type promotion struct {
	// promoted is the stored set when the next key signs now.
	promoted *keySet
	// refused is why the server did not take a token request signed with
	// the next key; the attempt is recorded in the set, to back off.
	refused error
}

// promoteNextKey is steps 2 and 3: if the next key is due (and, unless
// force, not backing off after a failed attempt), it proves it with a token
// request signed with it, and makes it the current key when that works. An
// error is a storage failure.
func (b *backend) promoteNextKey(ctx context.Context, s logical.Storage, cfg *config, set *keySet, now time.Time, force bool, log hclog.Logger) (promotion, error) {
	next := set.find(keyNext)
	if next == nil || now.Before(next.PromoteAfter) || (!force && now.Before(next.NextPromotionAttempt)) {
		return promotion{}, nil
	}
	if proofErr := b.proveKey(ctx, cfg, *next); proofErr != nil {
		updated := set.clone()
		k := updated.find(keyNext)
		k.FailedPromotions++
		k.LastPromotionError = proofErr.Error()
		k.LastPromotionErrorAt = now
		k.NextPromotionAttempt = now.Add(scheduleBackoff(k.FailedPromotions))
		if err := b.storeKeys(ctx, s, updated); err != nil {
			log.Warn("could not record a failed key promotion", "error", err)
		}
		log.Warn("the server does not accept the next signing key yet; the current key goes on signing",
			"kid", next.KeyID, "failed_promotions", k.FailedPromotions, "next_attempt", formatTime(k.NextPromotionAttempt), "error", proofErr)
		return promotion{refused: proofErr}, nil
	}
	updated, early := promote(set, now, cfg.PreviousSecretGrace)
	if err := b.storeKeys(ctx, s, updated); err != nil {
		return promotion{}, fmt.Errorf("the server accepts the new key %s, but it could not be made the signing key: %w", next.KeyID, err)
	}
	if len(early) > 0 {
		log.Warn("more previous signing keys than a mount keeps: the oldest left the JWKS before their grace ended",
			"kids", early, "max_previous_keys", maxPreviousKeys)
	}
	log.Info("key rollover: the new key signs from now on", "kid", next.KeyID)
	return promotion{promoted: updated}, nil
}

// proveKey makes one token request signed with k, whatever signs for the
// mount meanwhile.
func (b *backend) proveKey(ctx context.Context, cfg *config, k signingKey) error {
	snap, err := newKeySnapshot(&keySet{Keys: []signingKey{k}})
	if err != nil {
		return err
	}
	key, _ := snap.signingKey(k.State)
	cc := cfg.clientConfig()
	cc.Signer = fixedSigner(key)
	client, err := b.newClient(cc)
	if err != nil {
		return err
	}
	defer client.Close()
	_, err = withTimeout(ctx, cfg.RequestTimeout, func(ctx context.Context) (*upstream.Token, error) {
		return client.Token(ctx, upstream.TokenRequest{Scopes: cfg.Scopes})
	})
	return err
}

// fixedSigner signs with one key whatever the mount's current key is: a
// rollover proves its next key with it before the key may sign for real.
type fixedSigner upstream.SigningKey

func (f fixedSigner) SigningKey(context.Context) (upstream.SigningKey, error) {
	return upstream.SigningKey(f), nil
}

// promote makes the next key current and the current one previous, due to
// leave the JWKS after grace (at once without one), and drops previous
// keys whose time has come, and the oldest over maxPreviousKeys (named in
// early).
func promote(set *keySet, now time.Time, grace time.Duration) (promoted *keySet, early []string) {
	updated := set.clone()
	for i := range updated.Keys {
		k := &updated.Keys[i]
		switch k.State {
		case keyCurrent:
			k.State, k.RetiredAt, k.RemoveAt = keyPrevious, now, now.Add(grace)
		case keyNext:
			k.State, k.PromotedAt = keyCurrent, now
			k.FailedPromotions, k.LastPromotionError = 0, ""
			k.LastPromotionErrorAt, k.NextPromotionAttempt = time.Time{}, time.Time{}
		}
	}
	return boundPrevious(prune(updated, now))
}

// prune drops the previous keys due to leave the JWKS.
func prune(set *keySet, now time.Time) *keySet {
	updated := set.clone()
	updated.Keys = slices.DeleteFunc(updated.Keys, func(k signingKey) bool {
		return k.State == keyPrevious && !now.Before(k.RemoveAt)
	})
	return updated
}

// keysNeedWork says whether the periodic function has a key to promote or
// to drop at now.
func (s *keySet) needsWork(now time.Time) bool {
	for _, k := range s.Keys {
		switch {
		case k.State == keyNext && !now.Before(k.PromoteAfter) && !now.Before(k.NextPromotionAttempt):
			return true
		case k.State == keyPrevious && !now.Before(k.RemoveAt):
			return true
		}
	}
	return false
}

// settleSigningKeys runs from the periodic function on the active node:
// it promotes a next key that is due (if the server accepts it) and drops
// the previous keys whose grace has passed. It reads storage without the
// write lock first, so a mount with nothing to do never waits for it.
func (b *backend) settleSigningKeys(ctx context.Context, s logical.Storage, mount string) {
	log := b.Logger().With("mount", mount)
	set, err := getKeySet(ctx, s)
	if err != nil || (!set.needsWork(b.now()) && !b.keysLeftBehind(ctx, s, set)) {
		return
	}
	unlock, err := b.lockWrites(ctx)
	if err != nil {
		log.Debug("settling the signing keys waits for the next run", "error", err)
		return
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.rotationTimeout)
	defer cancel()

	stored, err := getConfig(ctx, s)
	if err != nil || stored == nil {
		return
	}
	cfg := stored.resolved()
	if !cfg.usesSigningKeys() {
		// A write that moved away from private_key_jwt could not retire
		// the keys of the config it replaced: they are retired now.
		if _, err := b.retireSigningKeys(ctx, s); err != nil {
			log.Warn("could not retire the signing keys of a config that no longer uses them; retried about once a minute", "error", err)
		}
		return
	}
	if set, err = getKeySet(ctx, s); err != nil {
		return
	}
	now := b.now().UTC()
	if pruned := prune(set, now); len(pruned.Keys) != len(set.Keys) {
		if err := b.storeKeys(ctx, s, pruned); err != nil {
			log.Warn("could not drop the signing keys whose grace has passed; retried about once a minute", "error", err)
			return
		}
		log.Info("previous signing keys left the JWKS", "dropped", len(set.Keys)-len(pruned.Keys))
		set = pruned
	}
	if _, err := b.promoteNextKey(ctx, s, cfg, set, now, false, log); err != nil {
		log.Warn("key promotion failed; retried about once a minute", "error", err)
	}
}

// keysLeftBehind says whether the stored config no longer uses the keys
// that are stored: read without the write lock, as needsWork is.
func (b *backend) keysLeftBehind(ctx context.Context, s logical.Storage, set *keySet) bool {
	if len(set.Keys) == 0 {
		return false
	}
	stored, err := getConfig(ctx, s)
	return err == nil && stored != nil && !stored.resolved().usesSigningKeys()
}
