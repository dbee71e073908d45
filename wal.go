package mapsindoors

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
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
	walKindRotateRoot = "rotate-root"

	// rotationDescriptionPrefix starts the description of every secret this
	// engine creates; the marker after it lets a rollback find the secret.
	rotationDescriptionPrefix = "vault-rotation "
)

// rotateWAL is what a rollback needs to clean up after a rotation that
// stopped before it stored its secret: the marker in the description of the
// secret it created (whose id it cannot know in advance). PreviousID is kept
// for the log. Deleting replaced secrets is not the rollback's business:
// the config's pending deletions hold them.
type rotateWAL struct {
	Marker     string    `json:"marker"`
	PreviousID string    `json:"previous_id,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	// Account is the fingerprint of the account the rotation created its
	// secret at (rotation_account.go); empty in entries written before
	// accounts were recorded.
	Account string `json:"account,omitempty"`
}

// walRecord is a stored rotation WAL entry.
type walRecord struct {
	id        string
	wal       rotateWAL
	createdAt time.Time
}

// decodeRotateWAL reads a rotation WAL entry's data.
func decodeRotateWAL(data any) (rotateWAL, error) {
	var wal rotateWAL
	raw, err := json.Marshal(data)
	if err == nil {
		err = json.Unmarshal(raw, &wal)
	}
	if err == nil && wal.Marker == "" {
		err = errors.New("no marker")
	}
	return wal, err
}

// rotationWALs are the stored rotation WAL entries that decode: rotations
// that stopped before they were cleaned up (or, outside the write lock,
// one under way).
func rotationWALs(ctx context.Context, s logical.Storage) ([]walRecord, error) {
	ids, err := framework.ListWAL(ctx, s)
	if err != nil {
		return nil, fmt.Errorf("list the write-ahead log: %w", err)
	}
	var out []walRecord
	for _, id := range ids {
		entry, err := framework.GetWAL(ctx, s, id)
		if err != nil {
			return nil, fmt.Errorf("read the write-ahead log: %w", err)
		}
		if entry == nil || entry.Kind != walKindRotateRoot {
			continue
		}
		wal, err := decodeRotateWAL(entry.Data)
		if err != nil {
			continue
		}
		out = append(out, walRecord{id: id, wal: wal, createdAt: time.Unix(entry.CreatedAt, 0).UTC()})
	}
	return out, nil
}

// settleWALsLocked does now, for every rotation WAL entry of the stored
// config's account, what the rollback would do later: it deletes the
// secret such a rotation created but did not store, and drops the entry.
// The caller holds the write lock, so no rotation of this node is under
// way. It returns the markers settled.
func (b *backend) settleWALsLocked(ctx context.Context, s logical.Storage, stored *config, log hclog.Logger) ([]string, error) {
	wals, err := rotationWALs(ctx, s)
	if err != nil || len(wals) == 0 {
		return nil, err
	}
	cfg := stored.resolved()
	account := cfg.account().fingerprint()
	if cfg.ClientSecretID == "" {
		return nil, errors.New("the stored client secret has no client_secret_id, so Vault cannot tell whether a secret a rotation created is the one it holds; write client_secret_id to config")
	}
	client, err := b.newClient(cfg.clientConfig())
	if err != nil {
		return nil, err
	}
	defer client.Close()
	var settled []string
	for _, w := range wals {
		if !belongsTo(w.wal.Account, account) {
			continue
		}
		deleted, err := deleteUnstored(ctx, client, cfg, w.wal)
		if err != nil {
			return settled, fmt.Errorf("clean up after the rotation with marker %s: %w", w.wal.Marker, err)
		}
		if err := framework.DeleteWAL(ctx, s, w.id); err != nil {
			return settled, fmt.Errorf("drop the write-ahead log entry of the rotation with marker %s: %w", w.wal.Marker, err)
		}
		log.Info("settled a stopped rotation", "marker", w.wal.Marker, "deleted_client_secret_ids", deleted)
		settled = append(settled, w.wal.Marker)
	}
	return settled, nil
}

// walRollback runs on the active node for WAL entries older than
// WALRollbackMinAge: rotations that crashed or could not clean up. It
// deletes the secret such a rotation created unless the config holds it
// (then the rotation got as far as storing it) or lists it as a pending
// deletion (then a later rotation replaced it, and its grace applies).
func (b *backend) walRollback(ctx context.Context, req *logical.Request, kind string, data any) error {
	if kind != walKindRotateRoot {
		return nil
	}
	// A performance secondary or standby replicates the primary's WAL and
	// may lag behind its config: the primary rolls back.
	if !b.WriteSafeReplicationState() {
		return nil
	}
	wal, err := decodeRotateWAL(data)
	if err != nil {
		b.Logger().Warn("dropping a rotation write-ahead log entry that does not decode", "mount", req.MountPoint, "error", err)
		return nil
	}

	unlock, err := b.lockWrites(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	// Like a rotation's steps, the rollback holds the write lock for at
	// most the rotation deadline (a minute, within the 75 s the README
	// promises): a hung upstream cannot hold the lock past it, and what is
	// not done by then stays in the WAL for the next run.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.rotationTimeout)
	defer cancel()
	stored, err := getConfig(ctx, req.Storage)
	if err != nil {
		return err
	}
	log := b.Logger().With("mount", req.MountPoint, "marker", wal.Marker)
	if stored == nil {
		log.Warn("dropping a rotation write-ahead log entry: the config is gone, so nothing can log in to clean up; " +
			"a secret whose description ends in the marker may be left upstream")
		return nil
	}
	cfg := stored.resolved()
	if account := cfg.account(); !belongsTo(wal.Account, account.fingerprint()) {
		// The config was deleted and written again for another account
		// (a move with rotations unsettled is refused, a delete warns):
		// this credential cannot find or delete the secret, and a 404 here
		// would prove nothing.
		log.Warn("dropping a rotation write-ahead log entry of another account without looking for its secret: the config now logs in to " +
			account.describe() + "; a secret whose description ends in the marker may be left at the account the rotation ran at")
		return nil
	}
	if cfg.ClientSecretID == "" && !cfg.unchangedSince(wal.StartedAt) {
		// The stored secret has no id and was written or rotated in since
		// this rotation began: it may be the very secret it created.
		log.Warn("dropping a rotation write-ahead log entry without deleting anything: the stored client secret has no " +
			"client_secret_id and changed since the rotation began, so Vault cannot tell whether it is the one the rotation created; " +
			"a secret whose description ends in the marker may be left upstream (client-secrets lists them)")
		return nil
	}
	client, err := b.newClient(cfg.clientConfig())
	if err != nil {
		return err
	}
	defer client.Close()
	deleted, err := deleteUnstored(ctx, client, cfg, wal)
	if err != nil {
		log.Warn("rotation rollback could not finish; it is retried", "deleted", deleted, "error", err)
		return err
	}
	log.Info("rotation rollback done", "deleted_client_secret_ids", deleted)
	return nil
}

// deleteUnstored lists the upstream's secrets and deletes those created by
// the rotation with this WAL that the config neither holds nor lists as
// pending deletions: secrets that were never stored. It returns the ids
// deleted.
func deleteUnstored(ctx context.Context, client upstream.Client, cfg *config, wal rotateWAL) ([]string, error) {
	list, err := withTimeout(ctx, cfg.RequestTimeout, client.ListClientSecrets)
	if err != nil {
		return nil, err
	}
	var deleted []string
	for _, cs := range list {
		if cs.Description != rotationDescriptionPrefix+wal.Marker || cs.ID == cfg.ClientSecretID {
			continue
		}
		if slices.ContainsFunc(cfg.PendingDeletions, func(p pendingDeletion) bool { return p.ID == cs.ID }) {
			continue
		}
		if err := withTimeoutErr(ctx, cfg.RequestTimeout, func(ctx context.Context) error {
			return client.DeleteClientSecret(ctx, cs.ID)
		}); err != nil {
			return deleted, err
		}
		deleted = append(deleted, cs.ID)
	}
	return deleted, nil
}

// unchangedSince says the stored secret was neither written nor rotated in
// at or after t: then no secret a rotation that began at t created can be
// the stored one, id or not.
func (c *config) unchangedSince(t time.Time) bool {
	return c.SecretSetAt.Before(t) && c.LastRotated.Before(t)
}

func newMarker() string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
