package mapsindoors

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const (
	pathPendingHelpSyn  = "Replaced client secrets still to be deleted; delete them now."
	pathPendingHelpDesc = `
A read lists the replaced client secrets Vault is still to delete
(pending_deletions: id, due time, the account it belongs to, failed attempts
and their reason) and the rotations that stopped half way and are not
cleaned up yet (unsettled_rotations). Nothing secret is shown.

A write settles them now instead of waiting for the grace to end, logged in
with the stored credential: every pending deletion of the stored account is
deleted (or those named in ids), and the rotations' leftovers are looked up
by their marker and deleted. Run it before "vault secrets disable" or before
moving the config to another account. With forget=true the named ids are
dropped from the list without a delete upstream: for secrets removed by hand,
or of an account Vault no longer has a credential for.
`
)

func pathPendingDeletions(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern: "client-secrets/pending$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
		},
		Fields: map[string]*framework.FieldSchema{
			"ids": {
				Type:        framework.TypeCommaStringSlice,
				Description: "Pending deletions to settle, by client secret id; all of them (and the stopped rotations' leftovers) when empty.",
			},
			"forget": {
				Type:        framework.TypeBool,
				Description: "Drop the named ids from the list without deleting them upstream.",
			},
		},
		// A write settles what is there: always an update.
		ExistenceCheck: func(context.Context, *logical.Request, *framework.FieldData) (bool, error) { return true, nil },
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback:     b.pathPendingDeletionsRead,
				Summary:      "List the replaced client secrets still to be deleted.",
				DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read", OperationSuffix: "pending-client-secret-deletions"},
			},
			logical.UpdateOperation: &framework.PathOperation{
				Callback:                  b.pathPendingDeletionsWrite,
				Summary:                   "Delete the pending ones now, or forget named ones.",
				DisplayAttrs:              &framework.DisplayAttributes{OperationVerb: "settle", OperationSuffix: "pending-client-secret-deletions"},
				ForwardPerformanceStandby: true,
			},
		},
		HelpSynopsis:    pathPendingHelpSyn,
		HelpDescription: strings.TrimSpace(pathPendingHelpDesc),
	}}
}

func (b *backend) pathPendingDeletionsRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	stored, err := getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if stored == nil {
		return errorResponse(errNoConfig(req.MountPoint))
	}
	account := stored.account()
	fp := account.fingerprint()
	pending := make([]map[string]any, 0, len(stored.PendingDeletions))
	for _, p := range stored.PendingDeletions {
		pending = append(pending, p.view(fp))
	}
	wals, err := rotationWALs(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	rotations := make([]map[string]any, 0, len(wals))
	for _, w := range wals {
		rotations = append(rotations, map[string]any{
			"marker":                    w.wal.Marker,
			"description":               rotationDescriptionPrefix + w.wal.Marker,
			"started_at":                formatTime(w.wal.StartedAt),
			"previous_client_secret_id": w.wal.PreviousID,
			"account":                   w.wal.Account,
			"current_account":           belongsTo(w.wal.Account, fp),
			"rollback_after":            formatTime(w.createdAt.Add(walRollbackMinAge)),
		})
	}
	return &logical.Response{Data: map[string]any{
		"account":             fp,
		"account_description": account.describe(),
		"pending_deletions":   pending,
		"unsettled_rotations": rotations,
	}}, nil
}

func (b *backend) pathPendingDeletionsWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	// It deletes upstream and writes storage: only where storage can be
	// written, so Vault forwards it to the active node.
	if !b.WriteSafeReplicationState() {
		return nil, logical.ErrReadOnly
	}
	ids, err := pendingIDsInput(d)
	if err != nil {
		return errorResponse(err)
	}
	forget := d.Get("forget").(bool)
	if forget && len(ids) == 0 {
		return errorResponse(userErrorf("forget drops pending deletions without deleting them upstream, so it takes the ids to drop: write ids=<id>,..."))
	}
	unlock, err := b.lockWrites(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.rotationTimeout+settleTimeout)
	defer cancel()
	log := b.Logger().With("mount", req.MountPoint)

	stored, err := getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if stored == nil {
		return errorResponse(errNoConfig(req.MountPoint))
	}
	var unknown []string
	for _, id := range ids {
		if !slices.ContainsFunc(stored.PendingDeletions, func(p pendingDeletion) bool { return p.ID == id }) {
			unknown = append(unknown, id)
		}
	}
	if len(unknown) > 0 {
		return errorResponse(userErrorf("not pending deletion: %s; read %sclient-secrets/pending for the list", strings.Join(unknown, ", "), req.MountPoint))
	}
	if forget {
		return b.forgetPending(ctx, req, stored, ids, log)
	}

	account := stored.account()
	fp := account.fingerprint()
	var otherAccount []string
	for _, p := range stored.PendingDeletions {
		if !belongsTo(p.Account, fp) && (len(ids) == 0 || slices.Contains(ids, p.ID)) {
			otherAccount = append(otherAccount, p.ID)
		}
	}
	if len(ids) > 0 && len(otherAccount) > 0 {
		return errorResponse(userErrorf("%s belong to another account than the config's (%s), and Vault never deletes a secret with another account's credential: "+
			"delete them there, then drop them with forget=true", strings.Join(otherAccount, ", "), account.describe()))
	}
	rep, err := b.settlePendingLocked(ctx, req.Storage, log, func(p pendingDeletion, _ string) bool {
		return len(ids) == 0 || slices.Contains(ids, p.ID)
	})
	if err != nil {
		return errorResponse(err)
	}
	resp := &logical.Response{Data: map[string]any{"deleted": nonNil(rep.deletedIDs()), "readopted": nonNil(rep.readopted)}}
	failed := map[string]any{}
	for _, f := range rep.failed {
		failed[f.p.ID] = boundedReason(f.err)
		resp.AddWarning(fmt.Sprintf("could not delete %s, which stays live upstream and pending deletion: %v", f.p.ID, f.err))
	}
	resp.Data["failed"] = failed
	if len(otherAccount) > 0 {
		resp.AddWarning(fmt.Sprintf("%s belong to another account than the config's and were not tried: delete them there, then drop them with forget=true",
			strings.Join(otherAccount, ", ")))
	}
	resp.Data["other_account"] = nonNil(otherAccount)
	settled := []string{}
	if len(ids) == 0 {
		markers, err := b.settleWALsLocked(ctx, req.Storage, stored, log)
		settled = append(settled, markers...)
		if err != nil {
			resp.AddWarning(fmt.Sprintf("the stopped rotations are not all settled; Vault's rollback tries again: %v", err))
		}
	}
	resp.Data["settled_rotations"] = settled
	return resp, nil
}

// forgetPending drops named pending deletions without deleting them.
func (b *backend) forgetPending(ctx context.Context, req *logical.Request, stored *config, ids []string, log hclog.Logger) (*logical.Response, error) {
	updated := stored.clone()
	updated.PendingDeletions = slices.DeleteFunc(updated.PendingDeletions, func(p pendingDeletion) bool { return slices.Contains(ids, p.ID) })
	err := putConfig(ctx, req.Storage, updated)
	b.reset()
	if err != nil {
		return nil, err
	}
	log.Warn("pending deletions dropped without a delete upstream, at the operator's request", "client_secret_ids", ids)
	return &logical.Response{
		Data:     map[string]any{"forgotten": ids},
		Warnings: []string{"Vault no longer tracks " + strings.Join(ids, ", ") + "; if any is still live upstream, delete it there"},
	}, nil
}

// pendingIDsInput is the ids a write names, trimmed, each once.
func pendingIDsInput(d *framework.FieldData) ([]string, error) {
	raw := d.Get("ids").([]string)
	if len(raw) > maxPendingDeletions {
		return nil, userErrorf("ids names %d secrets; a mount keeps at most %d pending deletions", len(raw), maxPendingDeletions)
	}
	var ids []string
	for _, id := range raw {
		id = strings.TrimSpace(id)
		if id == "" || slices.Contains(ids, id) {
			continue
		}
		if err := checkSecretID("ids", id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
