package mapsindoors

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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

	pathRotateHelpSyn  = "Rotate the root client secret through the clientcredentials API."
	pathRotateHelpDesc = `
Creates a new client secret upstream (logged in with the current one),
proves it by logging in with it, stores it, and then deletes the previous
secret by the id in client_secret_id. The old secret stays live until the
new one is stored, and a write-ahead log lets Vault delete a secret created
by a rotation that did not finish. Nothing secret is returned.
`
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

// rotationResult is what a rotation reports; it is returned and logged.
type rotationResult struct {
	ClientSecretID         string
	PreviousClientSecretID string
	RotatedAt              time.Time
	PreviousDeleted        bool
	Warnings               []string
}

// userError is a rotation refusal the caller can fix: a 400, not a 500.
type userError struct{ msg string }

func (e userError) Error() string { return e.msg }

func pathRotate(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern: "rotate-root",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationVerb:   "rotate",
			OperationSuffix: "root-credentials",
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: &framework.PathOperation{
				Callback: b.pathRotateRootUpdate,
				Summary:  "Rotate the root client secret.",
				// Rotation writes storage: performance standbys hand it to
				// the active node before it reaches the plugin.
				ForwardPerformanceStandby: true,
			},
		},
		HelpSynopsis:    pathRotateHelpSyn,
		HelpDescription: strings.TrimSpace(pathRotateHelpDesc),
	}}
}

func (b *backend) pathRotateRootUpdate(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	// Refuse before any upstream call where storage cannot be written, so
	// Vault forwards the request to the active node.
	if !b.WriteSafeReplicationState() {
		return nil, logical.ErrReadOnly
	}
	res, err := b.rotateRoot(ctx, req.Storage, req.MountPoint, "manual")
	var ue userError
	if errors.As(err, &ue) {
		return logical.ErrorResponse(ue.msg), nil
	}
	if err != nil {
		return nil, upstreamError(err)
	}
	return &logical.Response{
		Data: map[string]any{
			"client_secret_id":          res.ClientSecretID,
			"previous_client_secret_id": res.PreviousClientSecretID,
			"rotated_at":                res.RotatedAt.UTC().Format(time.RFC3339),
			"previous_deleted":          res.PreviousDeleted,
		},
		Warnings: res.Warnings,
	}, nil
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
func (b *backend) rotateRootIf(ctx context.Context, s logical.Storage, mount, trigger string, wanted func(*mapsConfig) bool) (*rotationResult, error) {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()

	stored, err := getConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	if stored == nil {
		return nil, userError{fmt.Sprintf("this mount has no config; write %sconfig first", mount)}
	}
	if wanted != nil && !wanted(stored) {
		return nil, nil
	}
	cfg := stored.resolved()
	if err := canRotate(cfg); err != nil {
		return nil, err
	}
	client, err := b.newClient(cfg.upstreamConfig())
	if err != nil {
		return nil, fmt.Errorf("build upstream client: %w", err)
	}
	log := b.Logger().With("mount", mount, "trigger", trigger)

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
		nextClient, err := b.newClient(next.upstreamConfig())
		if err == nil {
			err = withTimeoutErr(uctx, cfg.RequestTimeout, func(ctx context.Context) error {
				return nextClient.DeleteClientSecret(ctx, cfg.ClientSecretID)
			})
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
func canRotate(cfg *mapsConfig) error {
	if !providers[cfg.Provider].canRotate {
		return userError{fmt.Sprintf("provider %s has no client-secret API, so its credentials cannot be rotated by Vault", cfg.Provider)}
	}
	if cfg.GrantType != string(upstream.GrantClientCredentials) {
		return userError{"rotate-root rotates a client secret, and this config uses the " + cfg.GrantType + " grant"}
	}
	if cfg.RotationURL == "" {
		return userError{"rotation_url is not set; write it to config"}
	}
	if cfg.CustomerID == "" {
		return userError{"customer_id is required to rotate through the clientcredentials API; write it to config"}
	}
	return nil
}

// verifySecret logs in with a new secret. The upstream says a new secret
// works at once; a few short retries cover a replica that is a moment late.
func (b *backend) verifySecret(ctx context.Context, cfg *mapsConfig) error {
	client, err := b.newClient(cfg.upstreamConfig())
	if err != nil {
		return err
	}
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
func (b *backend) abandonRotation(ctx context.Context, s logical.Storage, client upstream.Client, cfg *mapsConfig, walID string, wal rotateWAL, log hclog.Logger) {
	if _, err := b.deleteOrphans(ctx, client, cfg, wal); err != nil {
		log.Warn("could not yet delete the client secret a failed rotation created; the write-ahead log rollback will retry",
			"marker", wal.Marker, "error", err)
		return
	}
	if err := framework.DeleteWAL(ctx, s, walID); err != nil {
		log.Warn("could not delete the write-ahead log entry of a failed rotation", "error", err)
	}
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
func (b *backend) deleteOrphans(ctx context.Context, client upstream.Client, cfg *mapsConfig, wal rotateWAL) ([]string, error) {
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
	client, err := b.newClient(cfg.upstreamConfig())
	if err != nil {
		return err
	}
	deleted, err := b.deleteOrphans(ctx, client, cfg, wal)
	if err != nil {
		log.Warn("rotation rollback could not finish; it is retried", "deleted", deleted, "error", err)
		return err
	}
	log.Info("rotation rollback done", "deleted_client_secret_ids", deleted)
	return nil
}

func withTimeout[T any](ctx context.Context, d time.Duration, fn func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return fn(ctx)
}

// withTimeoutErr is withTimeout for calls that return only an error.
func withTimeoutErr(ctx context.Context, d time.Duration, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return fn(ctx)
}

func newMarker() string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
