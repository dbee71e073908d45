package mapsindoors

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

const (
	// defaultRotationTimeout bounds a whole rotation: every upstream call,
	// every storage write and every wait between attempts. It is detached
	// from the request, so a caller that gives up does not stop a rotation
	// half way, and it bounds how long the config's write lock is held.
	defaultRotationTimeout = time.Minute
	// settleTimeout bounds what a rotation does after its deadline to
	// learn or clean up what it left: re-reading the config after an
	// ambiguous write, deleting a secret it created but did not store.
	settleTimeout = 15 * time.Second

	triggerManual   = "manual"
	triggerSchedule = "schedule"
)

// rotationResult is what a rotation reports; it is returned and logged.
type rotationResult struct {
	ClientSecretID         string
	PreviousClientSecretID string
	RotatedAt              time.Time
	PreviousDeleted        bool
	// PreviousDeletionDue is when the replaced secret is deleted, if it
	// was not deleted yet.
	PreviousDeletionDue time.Time
	Warnings            []string
}

// rotateRoot replaces the stored client secret.
func (b *backend) rotateRoot(ctx context.Context, s logical.Storage, mount, trigger string) (*rotationResult, error) {
	return b.rotateRootIf(ctx, s, mount, trigger, nil)
}

// rotateRootIf is rotateRoot that first checks, under the write lock, that
// the stored config still wants a rotation (a schedule that another
// rotation just satisfied does not); it returns nil, nil when not. A
// failure is recorded in the config's rotation status.
func (b *backend) rotateRootIf(ctx context.Context, s logical.Storage, mount, trigger string, wanted func(*config) bool) (*rotationResult, error) {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.rotationTimeout)
	defer cancel()
	log := b.Logger().With("mount", mount, "trigger", trigger)

	res, err := b.rotateLocked(rctx, s, log, mount, wanted)
	b.rotationDone(trigger, res, err)
	var ue userError
	if err != nil && !errors.As(err, &ue) {
		b.recordRotationFailure(ctx, s, log, trigger, err)
	}
	return res, err
}

// rotateLocked does the steps, numbered as in the README:
//
//  1. (the caller made sure this node can write storage);
//  2. write a write-ahead log entry with a random marker;
//  3. create the new secret, logged in with the current one, with the marker
//     in its description;
//  4. prove it by logging in with it;
//  5. store it, in the same write that records the secret it replaces as a
//     pending deletion;
//  6. drop the write-ahead log entry;
//  7. delete the pending deletions that are due, logged in with the new
//     secret.
//
// Until step 5 a failure leaves the config as it was and deletes what was
// created (now, or by the rollback). From step 5 on, the new secret is the
// stored one, and the replaced one can no longer be forgotten: the
// periodic function deletes what step 7 could not.
func (b *backend) rotateLocked(ctx context.Context, s logical.Storage, log hclog.Logger, mount string, wanted func(*config) bool) (*rotationResult, error) {
	stored, err := getConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	if stored == nil {
		return nil, errNoConfig(mount)
	}
	if wanted != nil && !wanted(stored) {
		return nil, nil
	}
	cfg := stored.resolved()
	if err := canRotate(cfg); err != nil {
		return nil, err
	}
	client, err := b.newClient(cfg.clientConfig())
	if err != nil {
		return nil, fmt.Errorf("build upstream client: %w", err)
	}
	defer client.Close()

	// 2. The write-ahead log goes first, so that even a crash right after
	// the create leaves something that finds the new secret.
	wal := rotateWAL{Marker: newMarker(), PreviousID: cfg.ClientSecretID, StartedAt: b.now().UTC()}
	walID, err := framework.PutWAL(ctx, s, walKindRotateRoot, &wal)
	if err != nil {
		return nil, failedAt(stepWAL, cfg, "", fmt.Errorf("write the rotation's write-ahead log: %w", err))
	}
	log.Info("rotation started", "previous_client_secret_id", cfg.ClientSecretID)

	// 3. Create the new secret.
	created, err := withTimeout(ctx, cfg.RequestTimeout, func(ctx context.Context) (*upstream.ClientSecret, error) {
		return client.CreateClientSecret(ctx, rotationDescriptionPrefix+wal.Marker)
	})
	if err != nil {
		b.abandonRotation(ctx, s, client, cfg, walID, wal, log)
		log.Error("rotation failed: creating the new client secret", "error", err)
		return nil, failedAt(stepCreate, cfg, "", fmt.Errorf("create the new client secret: %w", err))
	}
	log = log.With("new_client_secret_id", created.ID)

	// 4. Prove it before anything depends on it.
	next := cfg.clone()
	next.ClientSecret = created.Secret
	if err := b.verifySecret(ctx, next); err != nil {
		b.abandonRotation(ctx, s, client, cfg, walID, wal, log)
		log.Error("rotation failed: the new client secret does not log in", "error", err)
		return nil, failedAt(stepProve, cfg, created.ID, fmt.Errorf("log in with the new client secret %s: %w", created.ID, err))
	}

	// 5. Store it with the replaced secret as a pending deletion, in one
	// write: whatever happens next, the config names every secret that
	// is still Vault's to delete.
	now := b.now().UTC()
	updated := stored.clone()
	updated.ClientSecret = created.Secret
	updated.ClientSecretID = created.ID
	updated.PreviousClientSecretID = cfg.ClientSecretID
	updated.LastRotated = now
	updated.SecretSetAt = now
	updated.Rotation = rotationStatus{}
	if cfg.ClientSecretID != "" {
		updated.PendingDeletions = append(updated.PendingDeletions,
			pendingDeletion{ID: cfg.ClientSecretID, ReplacedAt: now, DueAt: now.Add(cfg.PreviousSecretGrace)})
	}
	if err := putConfig(ctx, s, updated); err != nil {
		// A write can commit and still report failure (a deadline that
		// fires after the commit, a leadership change during apply): what
		// to do next depends on what storage holds, not on the snapshot.
		switch b.storedSecretID(ctx, s) {
		case created.ID:
			log.Warn("storing the new client secret reported a failure, but the config holds it", "error", err)
		case cfg.ClientSecretID:
			b.abandonRotation(ctx, s, client, cfg, walID, wal, log)
			log.Error("rotation failed: storing the new client secret", "error", err)
			return nil, failedAt(stepStore, cfg, created.ID, err)
		default:
			b.reset()
			log.Error("rotation stopped: storing the new client secret reported a failure and the config cannot be read back; "+
				"the write-ahead log rollback settles it", "error", err)
			return nil, failedAt(stepStore, cfg, created.ID, fmt.Errorf("%w; whether the new client secret %s was stored is not known yet: Vault's write-ahead log rollback settles it within about %s",
				err, created.ID, walRollbackMinAge))
		}
	}
	b.reset()
	res := &rotationResult{ClientSecretID: created.ID, PreviousClientSecretID: cfg.ClientSecretID, RotatedAt: now}

	// 6. Nothing is left for the rollback: the new secret is stored, and
	// the one it replaced is in the config's pending deletions.
	if err := framework.DeleteWAL(ctx, s, walID); err != nil {
		log.Warn("rotation stored the new client secret, but its write-ahead log entry was not deleted; the rollback will find nothing to do", "error", err)
	}

	// 7. Delete what is due, the replaced secret first of all unless it
	// has a grace period. Only a secret whose id Vault was given is Vault's
	// to delete.
	if cfg.ClientSecretID == "" {
		res.Warnings = append(res.Warnings, "client_secret_id was not set, so the previous client secret was not deleted "+
			"and is still live upstream; delete it once nothing uses it ("+mount+"client-secrets lists the ids)")
		log.Warn("rotation stored the new client secret; the previous one has no known id and is not deleted")
	} else {
		deleted, err := b.deletePendingLocked(ctx, s, log)
		res.PreviousDeleted = slices.Contains(deleted, cfg.ClientSecretID)
		switch {
		case res.PreviousDeleted:
		case err != nil:
			res.PreviousDeletionDue = now
			res.Warnings = append(res.Warnings, fmt.Sprintf("the new client secret %s is stored and in use, but deleting the previous one, %s, failed "+
				"and it is still live upstream; Vault retries the delete about once a minute (%v)", created.ID, cfg.ClientSecretID, err))
			log.Error("rotation stored the new client secret, but the previous one is still live upstream",
				"previous_client_secret_id", cfg.ClientSecretID, "error", err)
		default:
			res.PreviousDeletionDue = now.Add(cfg.PreviousSecretGrace)
		}
	}
	log.Info("rotation done", "previous_client_secret_id", cfg.ClientSecretID, "previous_deleted", res.PreviousDeleted)
	return res, nil
}

// canRotate refuses, as a 400, configs that have no secret API to rotate
// through.
func canRotate(cfg *config) error {
	if p := cfg.provider(); p == nil || !p.canRotate {
		return userErrorf("provider %s has no client-secret API, so its credentials cannot be rotated by Vault", cfg.Provider)
	}
	if cfg.GrantType != string(upstream.GrantClientCredentials) {
		return userErrorf("rotate-root rotates a client secret, and this config uses the %s grant", cfg.GrantType)
	}
	if cfg.RotationURL == "" {
		return userErrorf("rotation_url is not set; write it to config")
	}
	if cfg.CustomerID == "" {
		return userErrorf("customer_id is required to rotate through the clientcredentials API; write it to config")
	}
	return nil
}

// verifySecret logs in with a new secret. The upstream says a new secret
// works at once; a few short retries cover a replica that is a moment late.
// The waits end with the rotation's deadline.
func (b *backend) verifySecret(ctx context.Context, cfg *config) error {
	client, err := b.newClient(cfg.clientConfig())
	if err != nil {
		return err
	}
	defer client.Close()
	for attempt := 0; ; attempt++ {
		_, err = withTimeout(ctx, cfg.RequestTimeout, func(ctx context.Context) (*upstream.Token, error) {
			return client.Token(ctx, upstream.TokenRequest{Scopes: cfg.Scopes})
		})
		if err == nil || attempt >= len(b.verifyBackoff) {
			return err
		}
		select {
		case <-time.After(b.verifyBackoff[attempt]):
		case <-ctx.Done():
			return fmt.Errorf("%w (and the rotation's deadline passed before the next attempt)", err)
		}
	}
}

// storedSecretID reads back the id of the stored secret with a fresh,
// bounded context; "\x00" when it cannot be read.
func (b *backend) storedSecretID(ctx context.Context, s logical.Storage) string {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	stored, err := getConfig(ctx, s)
	if err != nil || stored == nil {
		return "\x00"
	}
	return stored.ClientSecretID
}

// abandonRotation deletes what a rotation that did not store its secret
// may have created, logged in with the current secret, and drops the WAL
// when that worked. When it did not, the WAL stays and Vault's rollback
// tries again later.
func (b *backend) abandonRotation(ctx context.Context, s logical.Storage, client upstream.Client, cfg *config, walID string, wal rotateWAL, log hclog.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	if _, err := deleteUnstored(ctx, client, cfg, wal); err != nil {
		log.Warn("could not yet delete the client secret a failed rotation created; the write-ahead log rollback will retry",
			"marker", wal.Marker, "error", err)
		return
	}
	if err := framework.DeleteWAL(ctx, s, walID); err != nil {
		log.Warn("could not delete the write-ahead log entry of a failed rotation", "error", err)
	}
}

// recordRotationFailure keeps a failed rotation's error (never a secret:
// upstream errors carry none) and, for a scheduled one, when to retry.
func (b *backend) recordRotationFailure(ctx context.Context, s logical.Storage, log hclog.Logger, trigger string, cause error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	stored, err := getConfig(ctx, s)
	if err != nil || stored == nil {
		log.Warn("rotation failed, and its failure could not be recorded", "error", cause)
		return
	}
	now := b.now().UTC()
	updated := stored.clone()
	updated.Rotation.LastError = cause.Error()
	updated.Rotation.LastErrorAt = now
	updated.Rotation.ConsecutiveFailures++
	if trigger == triggerSchedule {
		updated.Rotation.NextRetry = now.Add(scheduleBackoff(updated.Rotation.ConsecutiveFailures))
	}
	if err := putConfig(ctx, s, updated); err != nil {
		log.Warn("could not record a failed rotation", "error", err)
	}
	log.Warn("rotation failed; the current client secret stays in use",
		"consecutive_failures", updated.Rotation.ConsecutiveFailures, "next_retry", formatTime(updated.Rotation.NextRetry), "error", cause)
}

// hasDueDeletions says whether a pending deletion is due at now.
func (c *config) hasDueDeletions(now time.Time) bool {
	for _, p := range c.PendingDeletions {
		if !now.Before(p.DueAt) {
			return true
		}
	}
	return false
}

// deletePending deletes the replaced secrets whose grace has passed.
func (b *backend) deletePending(ctx context.Context, s logical.Storage, mount string) {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.rotationTimeout)
	defer cancel()
	if _, err := b.deletePendingLocked(ctx, s, b.Logger().With("mount", mount)); err != nil {
		b.Logger().Warn("deleting a replaced client secret failed; retried about once a minute", "mount", mount, "error", err)
	}
}

// deletePendingLocked deletes the due pending deletions, logged in with
// the stored secret, and takes them off the config. A secret the upstream
// no longer lists is taken off too; the stored secret is never deleted.
func (b *backend) deletePendingLocked(ctx context.Context, s logical.Storage, log hclog.Logger) ([]string, error) {
	stored, err := getConfig(ctx, s)
	if err != nil || stored == nil || len(stored.PendingDeletions) == 0 {
		return nil, err
	}
	cfg := stored.resolved()
	if cfg.ClientSecretID == "" {
		// The operator stored a secret without its id: any pending id may
		// be the secret the mount now holds.
		return nil, errors.New("the stored client secret has no client_secret_id, so Vault cannot tell which secret it holds " +
			"and deletes none; write client_secret_id to config")
	}
	if !stored.hasDueDeletions(b.now()) {
		return nil, nil
	}
	now := b.now()
	client, err := b.newClient(cfg.clientConfig())
	if err != nil {
		return nil, err
	}
	defer client.Close()
	listed, err := withTimeout(ctx, cfg.RequestTimeout, client.ListClientSecrets)
	if err != nil {
		return nil, err
	}
	live := map[string]bool{}
	for _, cs := range listed {
		live[cs.ID] = true
	}

	var done []string
	var deleteErr error
	for _, p := range stored.PendingDeletions {
		switch {
		case p.ID == cfg.ClientSecretID || !live[p.ID]:
			done = append(done, p.ID)
		case now.Before(p.DueAt) || deleteErr != nil:
		default:
			deleteErr = withTimeoutErr(ctx, cfg.RequestTimeout, func(ctx context.Context) error {
				return client.DeleteClientSecret(ctx, p.ID)
			})
			if deleteErr == nil {
				done = append(done, p.ID)
				log.Info("deleted a replaced client secret", "client_secret_id", p.ID)
				b.previousSecretDeleted(p)
			}
		}
	}
	if len(done) > 0 {
		updated := stored.clone()
		updated.PendingDeletions = slices.DeleteFunc(updated.PendingDeletions, func(p pendingDeletion) bool {
			return slices.Contains(done, p.ID)
		})
		if err := putConfig(ctx, s, updated); err != nil {
			// They are gone upstream; the next pass finds them unlisted.
			log.Warn("deleted replaced client secrets, but could not take them off the config yet", "error", err)
		}
	}
	return done, deleteErr
}
