package mapsindoors

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// rotationResult is what a rotation reports; it is returned and logged.
type rotationResult struct {
	ClientSecretID         string
	PreviousClientSecretID string
	RotatedAt              time.Time
	PreviousDeleted        bool
	Warnings               []string
}

// rotateRoot replaces the stored client secret: write-ahead log, create
// the new secret, prove it, store it, delete the old one, drop the log.
// Until the store, a failure leaves the config exactly as it was and
// deletes what was created (now, or by the WAL rollback later).
func (b *backend) rotateRoot(ctx context.Context, s logical.Storage, mount, trigger string) (*rotationResult, error) {
	return b.rotateRootIf(ctx, s, mount, trigger, nil)
}

// rotateRootIf is rotateRoot that first checks, under the write lock, that
// the stored config still wants a rotation (a schedule that another
// rotation just satisfied does not); it returns nil, nil when not.
func (b *backend) rotateRootIf(ctx context.Context, s logical.Storage, mount, trigger string, wanted func(*config) bool) (*rotationResult, error) {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()

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
	log := b.Logger().With("mount", mount, "trigger", trigger)

	// 1. (The caller made sure this node can write storage.)
	// 2. The write-ahead log goes first, so that even a crash right after
	// the create leaves something that finds the new secret.
	wal := rotateWAL{Marker: newMarker(), PreviousID: cfg.ClientSecretID, StartedAt: b.now().UTC()}
	walID, err := framework.PutWAL(ctx, s, walKindRotateRoot, &wal)
	if err != nil {
		return nil, fmt.Errorf("write the rotation's write-ahead log: %w", err)
	}
	log.Info("rotation started", "previous_client_secret_id", cfg.ClientSecretID)

	// Every upstream step gets its own timeout, and a rotation the caller
	// gave up on still finishes or cleans up rather than stopping half way.
	uctx := context.WithoutCancel(ctx)

	// 3. Create the new secret, logged in with the current one.
	created, err := withTimeout(uctx, cfg.RequestTimeout, func(ctx context.Context) (*upstream.ClientSecret, error) {
		return client.CreateClientSecret(ctx, rotationDescriptionPrefix+wal.Marker)
	})
	if err != nil {
		b.abandonRotation(uctx, s, client, cfg, walID, wal, log)
		log.Error("rotation failed: creating the new client secret", "error", err)
		return nil, fmt.Errorf("create the new client secret: %w", err)
	}
	log = log.With("new_client_secret_id", created.ID)

	// 4. Prove the new secret before anything depends on it.
	next := cfg.resolved()
	next.ClientSecret = created.Secret
	if err := b.verifySecret(uctx, next); err != nil {
		b.abandonRotation(uctx, s, client, cfg, walID, wal, log)
		log.Error("rotation failed: the new client secret does not log in", "error", err)
		return nil, fmt.Errorf("log in with the new client secret %s: %w", created.ID, err)
	}

	// 5. Store it. The previous id is kept so the operator can see what was
	// replaced, and the WAL still names it should the delete not happen.
	now := b.now().UTC()
	updated := *stored
	updated.ClientSecret = created.Secret
	updated.PreviousClientSecretID = cfg.ClientSecretID
	updated.ClientSecretID = created.ID
	updated.LastRotated = now
	if err := putConfig(ctx, s, &updated); err != nil {
		b.abandonRotation(uctx, s, client, cfg, walID, wal, log)
		log.Error("rotation failed: storing the new client secret", "error", err)
		return nil, err
	}
	b.reset()
	b.rotationSucceeded()

	res := &rotationResult{ClientSecretID: created.ID, PreviousClientSecretID: cfg.ClientSecretID, RotatedAt: now}

	// 6. Delete the previous secret, logged in with the new one. Only a
	// secret whose id Vault was given is Vault's to delete.
	if cfg.ClientSecretID == "" {
		res.Warnings = append(res.Warnings, "client_secret_id was not set, so the previous client secret was not deleted "+
			"and is still live upstream; delete it once nothing uses it ("+mount+"client-secrets lists the ids)")
		log.Warn("rotation stored the new client secret; the previous one has no known id and was not deleted")
	} else {
		nextClient, err := b.newClient(next.clientConfig())
		if err == nil {
			err = withTimeoutErr(uctx, cfg.RequestTimeout, func(ctx context.Context) error {
				return nextClient.DeleteClientSecret(ctx, cfg.ClientSecretID)
			})
			nextClient.Close()
		}
		if err != nil {
			// The new secret works and is stored; a WAL that says so stays,
			// so the rollback retries the delete.
			b.markStored(ctx, s, walID, wal, log)
			res.Warnings = append(res.Warnings, fmt.Sprintf("the new client secret %s is stored and in use, but deleting the previous one, %s, failed "+
				"and it is still live upstream; Vault retries the delete within about %s (%v)",
				created.ID, cfg.ClientSecretID, walRollbackMinAge, err))
			log.Error("rotation stored the new client secret, but the previous one is still live upstream",
				"previous_client_secret_id", cfg.ClientSecretID, "error", err)
			return res, nil
		}
		res.PreviousDeleted = true
	}

	// 7. Done: the WAL has nothing left to clean up.
	if err := framework.DeleteWAL(ctx, s, walID); err != nil {
		log.Warn("rotation done, but its write-ahead log entry was not deleted; the rollback will find nothing to do", "error", err)
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
		time.Sleep(b.verifyBackoff[attempt])
	}
}

// abandonRotation deletes what a failed rotation may have created, logged
// in with the current secret, and drops the WAL when that worked. When it
// did not, the WAL stays and Vault's rollback tries again later.
func (b *backend) abandonRotation(ctx context.Context, s logical.Storage, client upstream.Client, cfg *config, walID string, wal rotateWAL, log hclog.Logger) {
	if _, err := b.deleteOrphans(ctx, client, cfg, wal); err != nil {
		log.Warn("could not yet delete the client secret a failed rotation created; the write-ahead log rollback will retry",
			"marker", wal.Marker, "error", err)
		return
	}
	if err := framework.DeleteWAL(ctx, s, walID); err != nil {
		log.Warn("could not delete the write-ahead log entry of a failed rotation", "error", err)
	}
}
