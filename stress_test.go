package mapsindoors

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// Hundreds of concurrent reads across roles and providers, while each
// mount's config is rewritten, its roles change and (for MapsIndoors)
// rotate-root runs and leases are revoked: every read returns a live token
// or a clean error (a 400 or a 502), and afterwards every mount is as its
// last writes left it and serves every role. Run it under -race.
func TestStress_ReadsWhileEverythingChanges(t *testing.T) {
	const (
		readers  = 200
		roles    = 5
		duration = 2 * time.Second
	)
	providers := fakeupstream.Providers()
	envs := make([]*testEnv, len(providers))
	for i, p := range providers {
		e := newTestEnv(t, fakeupstream.Options{})
		e.writeConfig(t, e.fake.PluginConfig(p))
		for r := range roles {
			e.role(t, fmt.Sprintf("r%d", r), map[string]any{"ttl": "5m"})
		}
		envs[i] = e
	}

	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	var wg sync.WaitGroup
	var served, refused atomic.Int64
	var mu sync.Mutex
	var problems []string
	problem := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	leases := make(chan *logical.Secret, 1000)

	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := rand.IntN(len(envs))
				e, role := envs[i], fmt.Sprintf("r%d", rand.IntN(roles))
				resp, err := e.b.HandleRequest(context.Background(), &logical.Request{
					Operation: logical.ReadOperation, Path: "creds/" + role, Storage: e.storage, MountPoint: "mapsindoors/",
				})
				switch {
				case err != nil:
					var coded logical.HTTPCodedError
					if !errors.As(err, &coded) || coded.Code() != http.StatusBadGateway {
						problem("%s creds/%s: an error that is not a 502: %T", providers[i], role, err)
					}
					refused.Add(1)
				case resp == nil:
					problem("%s creds/%s: no response", providers[i], role)
				case resp.IsError():
					if code, _ := logical.RespondErrorCommon(&logical.Request{}, resp, nil); code != http.StatusBadRequest {
						problem("%s creds/%s: an error response with status %d", providers[i], role, code)
					}
					refused.Add(1)
				default:
					token, _ := resp.Data["access_token"].(string)
					if !e.fake.TokenLive(token) {
						problem("%s creds/%s: a token that is not live", providers[i], role)
					}
					served.Add(1)
					if resp.Secret != nil && providers[i] == "cameramanager" {
						select {
						case leases <- asStored(t, resp.Secret):
						default:
						}
					}
				}
			}
		}()
	}

	// Per mount, one writer each for the config and the roles, so that the
	// last write of each is known.
	lastTimeout := make([]int, len(envs))
	lastTTL := make([][]int, len(envs))
	for i, e := range envs {
		lastTTL[i] = make([]int, roles)
		for r := range roles {
			lastTTL[i][r] = 300
		}
		wg.Add(2)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				timeout := 10 + rand.IntN(20)
				resp, err := e.do(t, logical.UpdateOperation, "config", map[string]any{"request_timeout": timeout})
				if err != nil || resp.IsError() {
					problem("%s config write failed", providers[i])
					continue
				}
				lastTimeout[i] = timeout
				time.Sleep(200 * time.Millisecond)
			}
		}()
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				r := rand.IntN(roles)
				ttl := 60 + rand.IntN(600)
				resp, err := e.do(t, logical.UpdateOperation, fmt.Sprintf("roles/r%d", r), map[string]any{"ttl": ttl, "scopes": fmt.Sprintf("s%d", rand.IntN(3))})
				if err != nil || resp.IsError() {
					problem("%s role write failed", providers[i])
					continue
				}
				lastTTL[i][r] = ttl
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	// rotate-root on the MapsIndoors mount, and revocations of the
	// CameraManager leases as they end.
	for i, p := range providers {
		switch p {
		case "mapsindoors":
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					resp, err := envs[i].do(t, logical.UpdateOperation, "rotate-root", nil)
					if err != nil || resp.IsError() {
						problem("rotate-root failed: %v", err)
					}
					time.Sleep(300 * time.Millisecond)
				}
			}()
		case "cameramanager":
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-ctx.Done():
						return
					case s := <-leases:
						if _, err := envs[i].revoke(t, s); err != nil {
							problem("revocation failed: %v", err)
						}
					}
				}
			}()
		}
	}
	wg.Wait()

	require.Empty(t, problems)
	require.Positive(t, served.Load())
	t.Logf("%d reads served a live token, %d were refused cleanly", served.Load(), refused.Load())

	// The final state: each mount as its last writes left it, and every role
	// of every mount served.
	for i, e := range envs {
		cfg := e.read(t, "config").Data
		require.Equal(t, int64(lastTimeout[i]), cfg["request_timeout"], providers[i])
		for r := range roles {
			role := fmt.Sprintf("r%d", r)
			require.Equal(t, int64(lastTTL[i][r]), e.read(t, "roles/"+role).Data["ttl"], "%s %s", providers[i], role)
			token := e.read(t, "creds/"+role).Data["access_token"].(string)
			require.True(t, e.fake.TokenLive(token), "%s %s", providers[i], role)
		}
		if providers[i] == "mapsindoors" {
			stored := e.storedConfig(t)
			require.True(t, e.fake.SecretWorks(stored.ClientSecret), "the stored secret works")
			require.Len(t, e.fake.Secrets(), 1, "rotation left no secret behind")
			require.Equal(t, stored.ClientSecretID, e.fake.Secrets()[0].ID)
			wals, err := framework.ListWAL(context.Background(), e.storage)
			require.NoError(t, err)
			require.Empty(t, wals)
		}
	}
}
