package mapsindoors

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const (
	pathConfigHelpSyn  = "Configure the root client credentials the engine gets tokens with."
	pathConfigHelpDesc = `
The config holds the root OAuth2 client credential (client_id and the
write-only client_secret, or username and write-only password for the
password grant), where to get tokens (token_url) and, for MapsIndoors, the
clientcredentials API used to rotate the secret (rotation_url, customer_id,
client_secret_id). Fields not written keep their stored values; fields never
written take the provider's defaults, and a read shows the effective values.
Secrets and passwords are never returned: a read says whether they are set.
`
)

func pathConfig(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern: "config",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
		},
		Fields:         configSchema(),
		ExistenceCheck: b.pathConfigExistenceCheck,
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback:     b.pathConfigRead,
				Summary:      "Read the config; secrets are never returned.",
				DisplayAttrs: &framework.DisplayAttributes{OperationSuffix: "configuration"},
			},
			logical.CreateOperation: &framework.PathOperation{
				Callback:     b.pathConfigWrite,
				Summary:      "Store the root credentials and upstream settings.",
				DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "configure"},
			},
			logical.UpdateOperation: &framework.PathOperation{
				Callback:     b.pathConfigWrite,
				Summary:      "Change some config fields; the others keep their values.",
				DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "configure"},
			},
			logical.DeleteOperation: &framework.PathOperation{
				Callback:     b.pathConfigDelete,
				Summary:      "Delete the config and drop cached tokens.",
				DisplayAttrs: &framework.DisplayAttributes{OperationSuffix: "configuration"},
			},
		},
		HelpSynopsis:    pathConfigHelpSyn,
		HelpDescription: strings.TrimSpace(pathConfigHelpDesc),
	}}
}

func (b *backend) pathConfigExistenceCheck(ctx context.Context, req *logical.Request, _ *framework.FieldData) (bool, error) {
	cfg, err := getConfig(ctx, req.Storage)
	return cfg != nil, err
}

func (b *backend) pathConfigRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	stored, err := getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if stored == nil {
		return nil, nil
	}
	c := stored.resolved()
	data := make(map[string]any, len(configFields)+len(rotationStateKeys))
	for _, f := range configFields {
		data[f.readKey()] = f.read(c)
	}
	for k, v := range c.rotationState(b.now()) {
		data[k] = v
	}
	keys, err := b.signingKeysState(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	maps.Copy(data, keys)
	return &logical.Response{Data: data}, nil
}

// formatTime is RFC 3339 in UTC, or "" for the zero time.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func (b *backend) pathConfigWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := refusePrivateKeys(req.MountPoint, req.Data); err != nil {
		return errorResponse(err)
	}
	if err := checkConfigInput(d); err != nil {
		return errorResponse(err)
	}
	unlock, err := b.lockWrites(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()

	stored, err := getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	cfg, warnings, err := mergeConfigWrite(stored, d, b.now().UTC())
	if err != nil {
		return errorResponse(err)
	}
	if err := b.checkAccountMove(ctx, req.Storage, req.MountPoint, stored, cfg); err != nil {
		return errorResponse(err)
	}
	// The key exists and is published before any request is signed with
	// it, verify_connection's login included; a key made just now cannot
	// log in anywhere yet.
	madeKey, keyWarnings, err := b.ensureSigningKey(ctx, req.Storage, stored, cfg.resolved())
	if err != nil {
		return nil, err
	}
	warnings = append(warnings, keyWarnings...)
	if madeKey {
		warnings = append(warnings, newKeyWarning(req.MountPoint))
	} else if resp, err := b.verifyNewConfig(ctx, d, stored, cfg); resp != nil || err != nil {
		return resp, err
	}
	if err := b.keepRevocationCAs(ctx, req.Storage, stored, cfg); err != nil {
		return nil, err
	}
	// A write that reports failure may have committed all the same (a
	// deadline after the commit, a leadership change during apply): the
	// node's caches are dropped either way, so it never keeps using a
	// config that storage no longer holds.
	err = putConfig(ctx, req.Storage, cfg)
	b.reset()
	if err != nil {
		return nil, err
	}
	if w := b.retireKeysMovedAway(ctx, req.Storage, stored, cfg); w != "" {
		warnings = append(warnings, w)
	}
	effective := cfg.resolved()
	b.Logger().Info("config written", "mount", req.MountPoint, "provider", effective.Provider, "client_id", effective.ClientID)

	// Answer with what a read shows (never a secret) rather than 204: the
	// framework adds its warning about unrecognized parameters, such as a
	// misspelled field, only to a response that is not nil.
	resp, err := b.pathConfigRead(ctx, req, d)
	if err != nil {
		return nil, err
	}
	if resp == nil {
		resp = &logical.Response{Data: map[string]any{}}
	}
	for _, w := range warnings {
		resp.AddWarning(w)
	}
	return resp, nil
}

// mergeConfigWrite applies a write's fields to a copy of the stored config
// (nil when there is none) and checks the result, without touching storage:
// a refused write leaves what is stored as it was. The warnings are for the
// response.
func mergeConfigWrite(stored *config, d *framework.FieldData, now time.Time) (*config, []string, error) {
	cfg := &config{}
	if stored != nil {
		cp := *stored
		cfg = &cp
	}
	before := *cfg
	for _, f := range configFields {
		if v, ok := d.GetOk(f.name); ok {
			f.set(cfg, v)
		}
	}
	if err := readProviderInput(d, cfg); err != nil {
		return nil, nil, err
	}
	if cfg.RotationPeriod != before.RotationPeriod || cfg.RotationSchedule != before.RotationSchedule ||
		cfg.DisableAutomatedRotation != before.DisableAutomatedRotation {
		// A new schedule counts from now, not from the last rotation.
		cfg.ScheduleStart = now
	}
	if cfg.ClientSecret != before.ClientSecret || cfg.Password != before.Password {
		cfg.SecretSetAt = now
	}
	// Whatever made scheduled rotations fail, the operator may just have
	// fixed it: the next one need not wait out the backoff.
	cfg.Rotation.NextRetry = time.Time{}

	var warnings []string
	_, idGiven := d.GetOk("client_secret_id")
	if cfg.ClientSecret != before.ClientSecret && !idGiven && before.ClientSecretID != "" {
		// The stored id named the old secret. Keeping it would make the
		// next rotation delete a secret that may not be Vault's any more.
		cfg.ClientSecretID = ""
		cfg.PreviousClientSecretID = ""
		warnings = append(warnings, "client_secret changed without client_secret_id, so the stored client_secret_id was cleared; write the new secret's id so rotation can delete it when it is replaced")
	}

	warnings = append(warnings, suspendOrResumePending(cfg, before.ClientSecretID, now)...)

	if err := cfg.resolved().validate(); err != nil {
		return nil, nil, err
	}
	if err := checkConfigSize(cfg); err != nil {
		return nil, nil, err
	}
	if err := checkCredentialsCarried(stored, cfg, d); err != nil {
		return nil, nil, err
	}
	return cfg, warnings, nil
}

func (b *backend) pathConfigDelete(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	unlock, err := b.lockWrites(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	stored, err := getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	var warnings []string
	if stored != nil {
		if warnings, err = b.leftLiveUpstream(ctx, req.Storage, req.MountPoint, stored); err != nil {
			return nil, err
		}
	}
	if err := b.keepRevocationCAs(ctx, req.Storage, stored); err != nil {
		return nil, err
	}
	// As with a write: a delete that reports failure may have happened.
	err = req.Storage.Delete(ctx, configStoragePath)
	b.reset()
	if err != nil {
		return nil, fmt.Errorf("delete config: %w", err)
	}
	b.Logger().Info("config deleted", "mount", req.MountPoint)
	// The signing keys belong to the config and go with it. The config is
	// gone either way: keys left by a failed retirement sign nothing, and
	// the next config (or the periodic function) retires them.
	if w, err := b.retireSigningKeys(ctx, req.Storage); err != nil {
		b.Logger().Warn("config deleted, but its signing keys could not be retired yet", "mount", req.MountPoint, "error", err)
		warnings = append(warnings, "the config is deleted, but its private_key_jwt signing keys could not be retired yet: nothing signs with them, "+
			"and they stay in the JWKS until the next config write retires them; delete the config again to retry")
	} else if w != "" {
		warnings = append(warnings, w)
	}
	for _, w := range warnings {
		b.Logger().Warn("config deleted: "+w, "mount", req.MountPoint)
	}
	if len(warnings) == 0 {
		return nil, nil
	}
	return &logical.Response{Warnings: warnings}, nil
}

// leftLiveUpstream is what a config delete leaves live upstream that Vault
// was still to delete, as warnings that say how to settle it: replaced
// secrets pending deletion, and secrets that rotations which stopped half
// way may have created (their write-ahead log entries). Without the config
// nothing can log in to delete them.
func (b *backend) leftLiveUpstream(ctx context.Context, s logical.Storage, mount string, stored *config) ([]string, error) {
	var warnings []string
	account := stored.account()
	settle := fmt.Sprintf("to settle them first, write the config back and run `vault write %sclient-secrets/pending`, "+
		"or delete them in the vendor's portal or through the clientcredentials API (DELETE ?customerId=...&id=...)", mount)
	if len(stored.PendingDeletions) > 0 {
		ids := make([]string, len(stored.PendingDeletions))
		for i, p := range stored.PendingDeletions {
			ids[i] = p.ID
		}
		warnings = append(warnings, fmt.Sprintf("the config held replaced client secrets that were still to be deleted and now stay live upstream: %s "+
			"(at %s); %s", strings.Join(ids, ", "), account.describe(), settle))
	}
	wals, err := rotationWALs(ctx, s)
	if err != nil {
		return nil, err
	}
	fp := account.fingerprint()
	for _, w := range wals {
		if !belongsTo(w.wal.Account, fp) {
			continue
		}
		warnings = append(warnings, fmt.Sprintf("a rotation that began at %s stopped before it was cleaned up, and the secret it may have created "+
			"(description %q) stays live upstream at %s: Vault's rollback can no longer log in to delete it; %s",
			formatTime(w.wal.StartedAt), rotationDescriptionPrefix+w.wal.Marker, account.describe(), settle))
	}
	return warnings, nil
}

// checkAccountMove refuses a config write that moves the mount to another
// account (rotation_account.go) while the current account still has
// secrets Vault is to delete: pending deletions, or secrets of rotations
// that stopped half way. Vault deletes them only logged in as their own
// account, and after the move it could not: they would stay live, tracked
// by nothing. The write is refused rather than settled for the operator:
// deleting them would cut short the grace promised to whoever still uses
// them, from a request that only meant to change the config, and a write
// that fails half way through upstream deletes leaves neither state. The
// message says how to settle them (client-secrets/pending), and a move
// with nothing left to settle goes through.
func (b *backend) checkAccountMove(ctx context.Context, s logical.Storage, mount string, stored, next *config) error {
	if stored == nil {
		return nil
	}
	was, now := stored.account(), next.account()
	if was == now {
		return nil
	}
	fp := was.fingerprint()
	var ids []string
	for _, p := range stored.PendingDeletions {
		if belongsTo(p.Account, fp) {
			ids = append(ids, p.ID)
		}
	}
	wals, err := rotationWALs(ctx, s)
	if err != nil {
		return err
	}
	var markers []string
	for _, w := range wals {
		if belongsTo(w.wal.Account, fp) {
			markers = append(markers, w.wal.Marker)
		}
	}
	if len(ids) == 0 && len(markers) == 0 {
		next.PreviousClientSecretID = "" // it names the old account's secret
		return nil
	}
	var left []string
	if len(ids) > 0 {
		pending := fmt.Sprintf("replaced client secrets pending deletion (%s)", strings.Join(ids, ", "))
		if slices.Contains(ids, stored.ClientSecretID) {
			// Suspended (suspendOrResumePending): a settle skips it.
			pending += fmt.Sprintf(", of which %s is the stored secret again, which Vault does not delete: if it is to stay live, "+
				"drop it with forget=true ids=%s", stored.ClientSecretID, stored.ClientSecretID)
		}
		left = append(left, pending)
	}
	if len(markers) > 0 {
		left = append(left, fmt.Sprintf("secrets that %d rotations which stopped half way may have created", len(markers)))
	}
	return userErrorf("this write changes %s, which moves the mount to another account, and the current account (%s) still has %s: "+
		"Vault deletes those only logged in as that account. Settle them first, then write the config again: "+
		"`vault write %sclient-secrets/pending` deletes them now with the current credential (cutting their grace short), "+
		"or, if you delete them upstream yourself, `vault write %sclient-secrets/pending forget=true ids=<id>,...` drops them from Vault's list",
		strings.Join(was.movedFields(now), ", "), was.describe(), strings.Join(left, " and "), mount, mount)
}
