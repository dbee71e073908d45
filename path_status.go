package mapsindoors

import (
	"context"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const (
	pathStatusHelpSyn  = "Counters of this mount since its plugin started: upstream requests, cache, rotations, revocations."
	pathStatusHelpDesc = `
Reading status returns in-memory counters of this mount since its plugin
started (or was reloaded): upstream requests and failures by status, token
request latency (p50 and p99 of the last 1024), token cache hits and misses,
tokens issued, reads by path (creds, static-creds), reads that waited on the
upstream for a role's token (reads_waited_on_upstream: the role had a token
on this node but it was spent; cold_reads: it had none), the next tokens
fetched ahead and how many of those fetches failed, rotations, revocations
and verifications by outcome, replaced secrets deleted, and the pending
deletions in the stored config. Nothing secret. Counters start again at zero when the plugin restarts, and each node
that runs the plugin counts its own.
`
)

func pathStatus(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern: "status",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationVerb:   "read",
			OperationSuffix: "status",
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback: b.pathStatusRead,
				Summary:  "Read this mount's counters since the plugin started.",
			},
		},
		HelpSynopsis:    pathStatusHelpSyn,
		HelpDescription: strings.TrimSpace(pathStatusHelpDesc),
	}}
}

func (b *backend) pathStatusRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	data := b.metrics.snapshot()
	stored, err := getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	pending, due := 0, 0
	if stored != nil {
		now := b.now()
		pending = len(stored.PendingDeletions)
		for _, p := range stored.PendingDeletions {
			if !stored.suspends(p) && !now.Before(p.DueAt) {
				due++
			}
		}
	}
	data["configured"] = stored != nil
	data["pending_deletions"] = pending
	data["pending_deletions_due"] = due
	data["events_dropped"] = b.events.droppedCount()
	return &logical.Response{Data: data}, nil
}
