package mapsindoors

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"slices"
	"time"

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
	var wal rotateWAL
	raw, err := json.Marshal(data)
	if err == nil {
		err = json.Unmarshal(raw, &wal)
	}
	if err != nil || wal.Marker == "" {
		b.Logger().Warn("dropping a rotation write-ahead log entry that does not decode", "mount", req.MountPoint, "error", err)
		return nil
	}

	unlock, err := b.lockWrites(ctx)
	if err != nil {
		return err
	}
	defer unlock()
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
