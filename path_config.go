package mapsindoors

import (
	"context"
	"fmt"
	"maps"
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
	// The key exists and is published before any request is signed with
	// it, verify_connection's login included; a key made just now cannot
	// log in anywhere yet.
	madeKey, err := b.ensureSigningKey(ctx, req.Storage, cfg.resolved())
	if err != nil {
		return nil, err
	}
	if madeKey {
		warnings = append(warnings, newKeyWarning(req.MountPoint))
	} else if resp, err := b.verifyNewConfig(ctx, d, stored, cfg); resp != nil || err != nil {
		return resp, err
	}
	if err := b.keepRevocationCAs(ctx, req.Storage, stored, cfg); err != nil {
		return nil, err
	}
	if err := putConfig(ctx, req.Storage, cfg); err != nil {
		return nil, err
	}
	b.reset()
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

	if err := cfg.resolved().validate(); err != nil {
		return nil, nil, err
	}
	if err := checkCredentialsCarried(stored, cfg, d); err != nil {
		return nil, nil, err
	}
	if err := checkAssertionAudienceCarried(stored, cfg, d); err != nil {
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
	if err := b.keepRevocationCAs(ctx, req.Storage, stored); err != nil {
		return nil, err
	}
	if err := req.Storage.Delete(ctx, configStoragePath); err != nil {
		return nil, fmt.Errorf("delete config: %w", err)
	}
	b.reset()
	b.Logger().Info("config deleted", "mount", req.MountPoint)
	if stored == nil || len(stored.PendingDeletions) == 0 {
		return nil, nil
	}
	// Vault no longer has a credential to delete them with.
	ids := make([]string, len(stored.PendingDeletions))
	for i, p := range stored.PendingDeletions {
		ids[i] = p.ID
	}
	b.Logger().Warn("config deleted with replaced client secrets still live upstream", "mount", req.MountPoint, "client_secret_ids", ids)
	return &logical.Response{Warnings: []string{fmt.Sprintf(
		"the config held replaced client secrets that were still to be deleted and now stay live upstream: %s; "+
			"delete them through the clientcredentials API (DELETE ?customerId=...&id=...) once nothing uses them",
		strings.Join(ids, ", "))}}, nil
}
