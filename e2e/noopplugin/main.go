// Command noopplugin is a secrets engine that does nothing but return a
// leased, non-renewable secret shaped like a creds answer (creds/<name>),
// and the same fields with static-creds' ttl, rotation_period and
// last_vault_rotation and no lease (static-creds/<name>). The e2e
// benchmark reads it beside the real plugin to tell Vault's cost of a
// plugin read (the gRPC hop, and for creds the lease write) from the
// plugin's own.
package main

import (
	"context"
	"os"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/plugin"
)

func main() {
	if err := plugin.ServeMultiplex(&plugin.ServeOpts{BackendFactoryFunc: factory}); err != nil {
		os.Exit(1)
	}
}

func factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	secret := &framework.Secret{
		Type: "noop",
		Revoke: func(context.Context, *logical.Request, *framework.FieldData) (*logical.Response, error) {
			return nil, nil
		},
	}
	b := &framework.Backend{
		BackendType:    logical.TypeLogical,
		RunningVersion: "v0.0.1",
		Secrets:        []*framework.Secret{secret},
		Paths: []*framework.Path{{
			Pattern: "creds/" + framework.GenericNameRegex("name"),
			Fields:  map[string]*framework.FieldSchema{"name": {Type: framework.TypeString}},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback: func(_ context.Context, _ *logical.Request, d *framework.FieldData) (*logical.Response, error) {
						exp := time.Now().Add(time.Hour)
						resp := secret.Response(map[string]any{
							"access_token": "noop-token-value-of-typical-length",
							"token_type":   "Bearer",
							"expires_in":   int64(3600),
							"expires_at":   exp.UTC().Format(time.RFC3339),
							"scope":        "",
							"role":         d.Get("name"),
						}, map[string]any{"role": d.Get("name")})
						resp.Secret.TTL = 5 * time.Minute
						resp.Secret.MaxTTL = 5 * time.Minute
						return resp, nil
					},
				},
			},
		}},
	}
	b.Paths = append(b.Paths, &framework.Path{
		Pattern: "static-creds/" + framework.GenericNameRegex("name"),
		Fields:  map[string]*framework.FieldSchema{"name": {Type: framework.TypeString}},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback: func(_ context.Context, _ *logical.Request, d *framework.FieldData) (*logical.Response, error) {
					now := time.Now()
					return &logical.Response{Data: map[string]any{
						"access_token":        "noop-token-value-of-typical-length",
						"token_type":          "Bearer",
						"expires_in":          int64(3600),
						"expires_at":          now.Add(time.Hour).UTC().Format(time.RFC3339),
						"scope":               "",
						"role":                d.Get("name"),
						"ttl":                 int64(1740),
						"rotation_period":     int64(1740),
						"last_vault_rotation": now.UTC().Format(time.RFC3339Nano),
					}}, nil
				},
			},
		},
	})
	if err := b.Setup(ctx, conf); err != nil {
		return nil, err
	}
	return b, nil
}
