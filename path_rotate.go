package mapsindoors

import (
	"context"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const (
	pathRotateHelpSyn  = "Rotate the root client secret through the clientcredentials API."
	pathRotateHelpDesc = `
Creates a new client secret upstream (logged in with the current one),
proves it by logging in with it, stores it, and then deletes the previous
secret by the id in client_secret_id. The old secret stays live until the
new one is stored, and a write-ahead log lets Vault delete a secret created
by a rotation that did not finish. Nothing secret is returned.
`
)

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
	// 1. Refuse before any upstream call where storage cannot be written,
	// so Vault forwards the request to the active node.
	if !b.WriteSafeReplicationState() {
		return nil, logical.ErrReadOnly
	}
	res, err := b.rotateRoot(ctx, req.Storage, req.MountPoint, triggerManual)
	if err != nil {
		return errorResponse(err)
	}
	if res.Keys != nil {
		return res.Keys.response(res.Warnings), nil
	}
	return &logical.Response{
		Data: map[string]any{
			"client_secret_id":          res.ClientSecretID,
			"previous_client_secret_id": res.PreviousClientSecretID,
			"rotated_at":                res.RotatedAt.UTC().Format(time.RFC3339),
			"previous_deleted":          res.PreviousDeleted,
			"previous_deletion_due":     formatTime(res.PreviousDeletionDue),
		},
		Warnings: res.Warnings,
	}, nil
}
