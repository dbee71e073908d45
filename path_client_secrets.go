package mapsindoors

import (
	"context"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

//nolint:gosec // G101: help text about client secrets, not a credential.
const (
	pathClientSecretsHelpSyn  = "List the client secrets live upstream, never their values."
	pathClientSecretsHelpDesc = `
Lists the account's active client secrets from the clientcredentials API:
id, description and creation time, and which one Vault holds (current) or
held before the last rotation (previous). Secret values are never listed;
the upstream does not keep them.
`
)

func pathClientSecrets(b *backend) []*framework.Path {
	op := &framework.PathOperation{
		Callback: b.pathClientSecretsList,
		Summary:  "List the upstream's active client secrets.",
	}
	// client-secrets/pending (path_pending_deletions.go) is registered
	// with the list, so the two read as one family of paths.
	return append([]*framework.Path{{
		Pattern: "client-secrets/?$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationSuffix: "client-secrets",
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ListOperation: op,
			logical.ReadOperation: op,
		},
		HelpSynopsis:    pathClientSecretsHelpSyn,
		HelpDescription: strings.TrimSpace(pathClientSecretsHelpDesc),
	}}, pathPendingDeletions(b)...)
}

func (b *backend) pathClientSecretsList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	cfg, client, err := b.upstreamClient(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return errorResponse(errNoConfig(req.MountPoint))
	}
	if err := canRotate(cfg); err != nil {
		return errorResponse(err)
	}
	list, err := withTimeout(ctx, cfg.RequestTimeout, client.ListClientSecrets)
	if err != nil {
		return errorResponse(err)
	}
	keys := make([]string, 0, len(list))
	info := make(map[string]any, len(list))
	for _, cs := range list {
		keys = append(keys, cs.ID)
		info[cs.ID] = map[string]any{
			"description": cs.Description,
			"client_id":   cs.ClientID,
			"created_at":  cs.CreatedAt.UTC().Format(time.RFC3339),
			"current":     cfg.ClientSecretID != "" && cs.ID == cfg.ClientSecretID,
			"previous":    cfg.PreviousClientSecretID != "" && cs.ID == cfg.PreviousClientSecretID,
		}
	}
	return logical.ListResponseWithInfo(keys, info), nil
}
