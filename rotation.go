package mapsindoors

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

const (
	// defaultRotationTimeout bounds the steps of a rotation: every upstream
	// call, every storage write and every wait between attempts. It is
	// detached from the request, so a caller that gives up does not stop a
	// rotation half way.
	defaultRotationTimeout = time.Minute
	// settleTimeout is what a rotation has past its deadline, all told, to
	// learn and clean up what it left: reading the config back after a
	// write that reported failure, deleting a secret it created but did not
	// store, recording its failure. With the deadline it bounds how long
	// the write lock is held (75 s), below Vault's 90 s request limit.
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
	// Keys is set instead of the secret ids on a private_key_jwt mount,
	// where rotate-root rolls the signing key over (key_rotation.go).
	Keys *keyRollover
}

// rotationRun is one rotation under way: its deadlines, its log and what it
// has done so far.
type rotationRun struct {
	b *backend
	s logical.Storage
	// ctx bounds the steps; settle bounds what comes after them.
	ctx, settle context.Context
	log         hclog.Logger
	started     time.Time
	trigger     string

	stored *config // as read at the start, under the write lock
	cfg    *config // stored, resolved
	client upstream.Client
	walID  string
	wal    rotateWAL
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
	unlock, err := b.lockWrites(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.rotationTimeout)
	defer cancel()
	settle, cancelSettle := context.WithTimeout(context.WithoutCancel(ctx), b.rotationTimeout+settleTimeout)
	defer cancelSettle()
	r := &rotationRun{b: b, s: s, ctx: rctx, settle: settle, log: b.Logger().With("mount", mount, "trigger", trigger), started: b.now().UTC(), trigger: trigger}

	res, err := r.run(mount, wanted)
	b.rotationDone(trigger, res, err)
	var ue userError
	var full keptStateFull
	if err != nil && (!errors.As(err, &ue) || (errors.As(err, &full) && trigger == triggerSchedule)) {
		r.recordFailure(trigger, err)
	}
	return res, err
}

// run does the steps, numbered as in the README:
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
// Until step 5 a failure leaves the config as it was, and what was created
// is deleted now or by the rollback, which the WAL lets find it. From step
// 5 on, the new secret is the stored one, and the replaced one can no
// longer be forgotten: the periodic function deletes what step 7 did not.
func (r *rotationRun) run(mount string, wanted func(*config) bool) (*rotationResult, error) {
	stored, err := getConfig(r.ctx, r.s)
	if err != nil {
		return nil, err
	}
	if stored == nil {
		return nil, errNoConfig(mount)
	}
	if wanted != nil && !wanted(stored) {
		return nil, nil
	}
	r.stored, r.cfg = stored, stored.resolved()
	if err := canRotate(r.cfg); err != nil {
		return nil, err
	}
	if r.cfg.usesSigningKeys() {
		return r.rollKeys()
	}
	if err := r.b.checkRoomToRotate(r.ctx, r.s, mount, r.stored); err != nil {
		return nil, err
	}
	if r.client, err = r.b.newClient(r.cfg.clientConfig()); err != nil {
		return nil, fmt.Errorf("build upstream client: %w", err)
	}
	defer r.client.Close()

	// 2. The write-ahead log goes first, so that even a crash right after
	// the create leaves something that finds the new secret. It names the
	// account, so that nothing ever looks for the secret, or deletes it,
	// logged in as another.
	r.wal = rotateWAL{Marker: newMarker(), PreviousID: r.cfg.ClientSecretID, StartedAt: r.started, Account: r.cfg.account().fingerprint()}
	if r.walID, err = framework.PutWAL(r.ctx, r.s, walKindRotateRoot, &r.wal); err != nil {
		return nil, failedAt(stepWAL, r.cfg, "", fmt.Errorf("write the rotation's write-ahead log: %w", err))
	}
	r.log.Info("rotation started", "previous_client_secret_id", r.cfg.ClientSecretID)

	// 3. Create the new secret, unless this node lost the right to write
	// meanwhile (a step-down): nothing is created that it could not store.
	if !r.b.WriteSafeReplicationState() {
		return nil, logical.ErrReadOnly
	}
	created, err := withTimeout(r.ctx, r.cfg.RequestTimeout, func(ctx context.Context) (*upstream.ClientSecret, error) {
		return r.client.CreateClientSecret(ctx, rotationDescriptionPrefix+r.wal.Marker)
	})
	if err != nil {
		r.abandonUnknownCreate(err)
		r.log.Error("rotation failed: creating the new client secret", "error", err)
		return nil, failedAt(stepCreate, r.cfg, "", fmt.Errorf("create the new client secret: %w", err))
	}
	if err := checkSecretID("the new client secret's id", created.ID); err != nil {
		r.abandonCreated(created.ID)
		r.log.Error("rotation failed: the upstream answered the create with an id Vault cannot keep", "error", err)
		return nil, failedAt(stepCreate, r.cfg, "", fmt.Errorf("create the new client secret: %w", err))
	}
	r.log = r.log.With("new_client_secret_id", created.ID)

	// 4. Prove it before anything depends on it.
	next := r.cfg.clone()
	next.ClientSecret = created.Secret
	if err := r.b.verifySecret(r.ctx, next); err != nil {
		r.abandonCreated(created.ID)
		r.log.Error("rotation failed: the new client secret does not log in", "error", err)
		return nil, failedAt(stepProve, r.cfg, created.ID, fmt.Errorf("log in with the new client secret %s: %w", created.ID, err))
	}

	// 5. Store it.
	now, err := r.store(created)
	if err != nil {
		return nil, failedAt(stepStore, r.cfg, created.ID, err)
	}
	res := &rotationResult{ClientSecretID: created.ID, PreviousClientSecretID: r.cfg.ClientSecretID, RotatedAt: now}

	// 6. Nothing is left for the rollback: the new secret is stored, and
	// the one it replaced is in the config's pending deletions.
	if err := framework.DeleteWAL(r.ctx, r.s, r.walID); err != nil {
		r.log.Warn("rotation stored the new client secret, but its write-ahead log entry was not deleted; the rollback will find nothing to do", "error", err)
	}

	// 7. Delete what is due.
	r.deleteReplaced(res)
	r.log.Info("rotation done", "previous_client_secret_id", r.cfg.ClientSecretID, "previous_deleted", res.PreviousDeleted)
	return res, nil
}

// store writes the new secret with the secret it replaces as a pending
// deletion, in one write: whatever happens next, the config names every
// secret that is still Vault's to delete. A write can commit and still
// report failure (a deadline that fires after the commit, a leadership
// change during apply), so what follows a failure depends on what storage
// holds, not on the snapshot.
func (r *rotationRun) store(created *upstream.ClientSecret) (time.Time, error) {
	now := r.b.now().UTC()
	updated := r.stored.clone()
	updated.ClientSecret = created.Secret
	updated.ClientSecretID = created.ID
	updated.PreviousClientSecretID = r.cfg.ClientSecretID
	// The schedule counts from the rotation's start, so a rotation that
	// takes a while does not push the next one a whole tick later.
	updated.LastRotated = r.started
	updated.SecretSetAt = now
	updated.Rotation = rotationStatus{}
	updated.PendingDeletions, _ = withoutStored(updated.PendingDeletions, created.ID)
	if r.cfg.ClientSecretID != "" {
		updated.PendingDeletions = withPending(updated.PendingDeletions, pendingDeletion{
			ID: r.cfg.ClientSecretID, ReplacedAt: now, DueAt: now.Add(r.cfg.PreviousSecretGrace), Account: r.wal.Account,
		})
	}
	err := putConfig(r.ctx, r.s, updated)
	if err == nil {
		r.b.reset()
		return now, nil
	}

	switch r.b.storedSecretID(r.settle, r.s) {
	case created.ID:
		r.log.Warn("storing the new client secret reported a failure, but the config holds it", "error", err)
		r.b.reset()
		return now, nil
	case r.cfg.ClientSecretID:
		// A read-back can be stale (a node that lost leadership has not
		// applied what the new leader commits): only a write that succeeds
		// after the failed one proves the failed one can no longer land.
		if r.b.fenceConfig(r.settle, r.s) {
			r.abandonCreated(created.ID)
			r.log.Error("rotation failed: storing the new client secret", "error", err)
			return now, err
		}
	}
	r.b.reset()
	r.log.Error("rotation stopped: storing the new client secret reported a failure and what storage holds cannot be settled; "+
		"the write-ahead log rollback settles it", "error", err)
	return now, fmt.Errorf("%w; whether the new client secret %s was stored is not known yet: Vault's write-ahead log rollback settles it within about %s",
		err, created.ID, walRollbackMinAge)
}

// deleteReplaced is step 7: the replaced secret is deleted now unless it
// has a grace period, and older pending deletions that are due with it.
// Only a secret whose id Vault was given is Vault's to delete. What is
// reported of the replaced secret is its own outcome: an older deletion's
// failure is reported as that one's.
func (r *rotationRun) deleteReplaced(res *rotationResult) {
	previous := r.cfg.ClientSecretID
	if previous == "" {
		res.Warnings = append(res.Warnings, "client_secret_id was not set, so the previous client secret was not deleted "+
			"and is still live upstream; delete it once nothing uses it (client-secrets lists the ids)")
		r.log.Warn("rotation stored the new client secret; the previous one has no known id and is not deleted")
		return
	}
	res.PreviousDeletionDue = res.RotatedAt.Add(r.cfg.PreviousSecretGrace)
	rep, err := r.b.deleteDueLocked(r.ctx, r.s, r.log)
	res.PreviousDeleted = slices.Contains(rep.deletedIDs(), previous)
	if res.PreviousDeleted {
		res.PreviousDeletionDue = time.Time{}
	}
	for _, f := range rep.failed {
		if f.p.ID == previous {
			res.Warnings = append(res.Warnings, fmt.Sprintf("the new client secret %s is stored and in use, but deleting the previous one, %s, failed "+
				"and it is still live upstream; it stays in pending_deletions and Vault tries again from about a minute on (%v)", res.ClientSecretID, previous, f.err))
			r.log.Error("rotation stored the new client secret, but the previous one is still live upstream",
				"previous_client_secret_id", previous, "error", f.err)
			continue
		}
		res.Warnings = append(res.Warnings, fmt.Sprintf("an older replaced client secret, %s (replaced at %s), could not be deleted and is still live upstream; "+
			"it stays in pending_deletions with its reason and Vault tries again later (%v)", f.p.ID, formatTime(f.p.ReplacedAt), f.err))
	}
	if err != nil && r.previousInGrace(res) {
		r.log.Warn("rotation stored the new client secret; older pending deletions that are due could not be deleted yet", "error", err)
	}
	if err != nil && !res.PreviousDeleted && !r.previousInGrace(res) {
		res.Warnings = append(res.Warnings, fmt.Sprintf("the new client secret %s is stored and in use, but the pending deletions that are due, "+
			"the previous one, %s, among them, could not be deleted yet; Vault tries again about once a minute (%v)", res.ClientSecretID, previous, err))
		r.log.Error("rotation stored the new client secret, but the due pending deletions could not be deleted", "error", err)
	}
}

// previousInGrace says the replaced secret is still in its grace,
// so that nothing was to be deleted of it yet.
func (r *rotationRun) previousInGrace(res *rotationResult) bool {
	return r.b.now().Before(res.PreviousDeletionDue)
}

// abandonCreated deletes a secret the rotation created and knows but did
// not store, logged in with the current secret, and drops the WAL when
// that worked; otherwise the WAL stays for the rollback.
func (r *rotationRun) abandonCreated(id string) {
	err := withTimeoutErr(r.settle, r.cfg.RequestTimeout, func(ctx context.Context) error {
		return r.client.DeleteClientSecret(ctx, id)
	})
	if err != nil {
		r.log.Warn("could not yet delete the client secret a failed rotation created; the write-ahead log rollback will retry",
			"marker", r.wal.Marker, "error", err)
		return
	}
	r.dropWAL()
}

// abandonUnknownCreate cleans up after a create that failed. When the
// upstream refused it (or the login before it), nothing was created. When
// the outcome is unknown (a timeout, a lost connection, a 5xx), the secret
// may exist now or only in a moment: what a listing finds is deleted, and
// unless it found one the WAL stays, so the rollback looks again later.
func (r *rotationRun) abandonUnknownCreate(cause error) {
	if createRefused(cause) {
		r.dropWAL()
		return
	}
	deleted, err := deleteUnstored(r.settle, r.client, r.cfg, r.wal)
	if err != nil || len(deleted) == 0 {
		r.log.Warn("a failed create may still leave a secret upstream; the write-ahead log rollback looks for it later",
			"marker", r.wal.Marker, "error", err)
		return
	}
	r.dropWAL()
}

// createRefused says the upstream answered the create (or the login it
// needs) with a refusal, so no secret was made.
func createRefused(err error) bool {
	var ue *upstream.Error
	if !errors.As(err, &ue) {
		return false
	}
	if ue.Op == "token request" {
		return true // the login failed: the create was never sent
	}
	return ue.StatusCode >= 400 && ue.StatusCode < 500 &&
		ue.StatusCode != http.StatusRequestTimeout && ue.StatusCode != http.StatusTooManyRequests
}

func (r *rotationRun) dropWAL() {
	if err := framework.DeleteWAL(r.settle, r.s, r.walID); err != nil {
		r.log.Warn("could not delete the write-ahead log entry of a failed rotation; the rollback drops it", "error", err)
	}
}

// recordFailure keeps a failed rotation's error (never a secret: upstream
// errors carry none) and, for a scheduled one, when to retry.
func (r *rotationRun) recordFailure(trigger string, cause error) {
	stored, err := getConfig(r.settle, r.s)
	if err != nil || stored == nil {
		r.log.Warn("rotation failed, and its failure could not be recorded", "error", cause)
		return
	}
	now := r.b.now().UTC()
	updated := stored.clone()
	updated.Rotation.LastError = cause.Error()
	updated.Rotation.LastErrorAt = now
	updated.Rotation.ConsecutiveFailures++
	if trigger == triggerSchedule {
		updated.Rotation.NextRetry = now.Add(scheduleBackoff(updated.Rotation.ConsecutiveFailures))
	}
	if err := putConfig(r.settle, r.s, updated); err != nil {
		r.log.Warn("could not record a failed rotation", "error", err)
	}
	r.log.Warn("rotation failed; the current client secret stays in use",
		"consecutive_failures", updated.Rotation.ConsecutiveFailures, "next_retry", formatTime(updated.Rotation.NextRetry), "error", cause)
}

// canRotate refuses, as a 400, configs that have no secret API to rotate
// through.
func canRotate(cfg *config) error {
	if cfg.usesSigningKeys() {
		return nil // the mount's own key rolls over (key_rotation.go)
	}
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

// storedSecretID reads back the id of the stored secret; "\x00" when it
// cannot be read.
func (b *backend) storedSecretID(ctx context.Context, s logical.Storage) string {
	stored, err := getConfig(ctx, s)
	if err != nil || stored == nil {
		return "\x00"
	}
	return stored.ClientSecretID
}

// fenceConfig writes the config it reads back and reports whether storage
// took that write: after it, an earlier write that reported failure can no
// longer become the stored config.
func (b *backend) fenceConfig(ctx context.Context, s logical.Storage) bool {
	stored, err := getConfig(ctx, s)
	if err != nil || stored == nil {
		return false
	}
	return putConfig(ctx, s, stored) == nil
}
