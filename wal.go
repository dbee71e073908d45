package mapsindoors

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
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
// stopped half way: the marker in the description of the secret it
// created (whose id it cannot know in advance) and the id it replaced.
type rotateWAL struct {
	Marker     string    `json:"marker"`
	PreviousID string    `json:"previous_id,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	// Stored says the new secret reached the config, so PreviousID is no
	// longer in use and is the rollback's to delete.
	Stored bool `json:"stored,omitempty"`
}

// markStored replaces the rotation's WAL entry with one that says the new
// secret is stored. Should this fail, the old entry still works: the
// rollback sees the marked secret in the config.
func (b *backend) markStored(ctx context.Context, s logical.Storage, walID string, wal rotateWAL, log hclog.Logger) {
	wal.Stored = true
	if _, err := framework.PutWAL(ctx, s, walKindRotateRoot, &wal); err != nil {
		log.Warn("could not record the stored rotation in the write-ahead log", "error", err)
		return
	}
	if err := framework.DeleteWAL(ctx, s, walID); err != nil {
		log.Warn("could not delete a superseded write-ahead log entry", "error", err)
	}
}

// deleteOrphans lists the upstream's secrets and deletes those created by
// the rotation with this WAL, except the one the config now holds; if the
// config holds it, the rotation got as far as storing it, and what is left
// is deleting the id it replaced. It returns the ids deleted.
func (b *backend) deleteOrphans(ctx context.Context, client upstream.Client, cfg *config, wal rotateWAL) ([]string, error) {
	list, err := withTimeout(ctx, cfg.RequestTimeout, client.ListClientSecrets)
	if err != nil {
		return nil, err
	}
	var toDelete []string
	stored := wal.Stored
	listed := map[string]bool{}
	for _, cs := range list {
		listed[cs.ID] = true
		if cs.Description != rotationDescriptionPrefix+wal.Marker {
			continue
		}
		if cs.ID == cfg.ClientSecretID {
			stored = true
			continue
		}
		toDelete = append(toDelete, cs.ID)
	}
	if stored && wal.PreviousID != "" && wal.PreviousID != cfg.ClientSecretID && listed[wal.PreviousID] {
		toDelete = append(toDelete, wal.PreviousID)
	}
	var deleted []string
	for _, id := range toDelete {
		if err := withTimeoutErr(ctx, cfg.RequestTimeout, func(ctx context.Context) error {
			return client.DeleteClientSecret(ctx, id)
		}); err != nil {
			return deleted, err
		}
		deleted = append(deleted, id)
	}
	return deleted, nil
}

// walRollback runs on the active node for WAL entries older than
// WALRollbackMinAge: rotations that crashed or could not clean up.
func (b *backend) walRollback(ctx context.Context, req *logical.Request, kind string, data any) error {
	if kind != walKindRotateRoot {
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

	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	stored, err := getConfig(ctx, req.Storage)
	if err != nil {
		return err
	}
	log := b.Logger().With("mount", req.MountPoint, "marker", wal.Marker)
	if stored == nil {
		log.Warn("dropping a rotation write-ahead log entry: the config is gone, so nothing can log in to clean up")
		return nil
	}
	cfg := stored.resolved()
	client, err := b.newClient(cfg.clientConfig())
	if err != nil {
		return err
	}
	defer client.Close()
	deleted, err := b.deleteOrphans(ctx, client, cfg, wal)
	if err != nil {
		log.Warn("rotation rollback could not finish; it is retried", "deleted", deleted, "error", err)
		return err
	}
	log.Info("rotation rollback done", "deleted_client_secret_ids", deleted)
	return nil
}

func newMarker() string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
