package mapsindoors

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// redirectServer answers every request with a redirect to target, over
// TLS with a certificate of its own, which it returns as PEM.
func redirectServer(t testing.TB, target string) (string, string) {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	return srv.URL + "/connect/token", string(ca)
}

// Whatever the upstream does wrong, reads fail cleanly (a 502 that names
// no secret, in bounded time, every concurrent reader answered), and once
// it is well again the next read gets a token: no poisoned cache, no stuck
// shared fetch, no memory that outlives the failure.
func TestFaults_EachIsFollowedByAHealthyRead(t *testing.T) {
	type fault struct {
		name string
		// inject breaks the upstream, or the config's view of it; it
		// returns what makes the upstream well again.
		inject   func(t *testing.T, e *testEnv, provider string) (heal func())
		mentions string
	}
	onToken := func(f fakeupstream.Fault) func(*testing.T, *testEnv, string) func() {
		return func(_ *testing.T, e *testEnv, provider string) func() {
			f.Times = -1
			e.fake.InjectFault(tokenEndpoint(provider), f)
			return e.fake.ClearFaults
		}
	}
	// reconfigure points the mount somewhere broken with a whole config,
	// as an operator would, and back again.
	reconfigure := func(change func(t *testing.T, e *testEnv, data map[string]any)) func(*testing.T, *testEnv, string) func() {
		return func(t *testing.T, e *testEnv, provider string) func() {
			data := e.fake.PluginConfig(provider)
			change(t, e, data)
			e.writeConfig(t, data)
			return func() { e.writeConfig(t, e.fake.PluginConfig(provider)) }
		}
	}
	huge := `{"access_token":"` + strings.Repeat("a", 3<<20) + `","token_type":"Bearer","expires_in":3600}`
	faults := []fault{
		{"timeout", onToken(fakeupstream.Fault{Delay: 2 * time.Second}), "timed out"},
		{"connection refused", reconfigure(func(t *testing.T, _ *testEnv, data map[string]any) {
			data["token_url"] = fmt.Sprintf("https://127.0.0.1:%d/connect/token", closedPort(t))
		}), "connection refused"},
		{"certificate the config does not trust", reconfigure(func(t *testing.T, _ *testEnv, data map[string]any) {
			data["ca_cert"] = startOtherFake(t).CACertPEM()
		}), "certificate"},
		{"malformed JSON", onToken(fakeupstream.Fault{Malformed: true}), "cannot parse"},
		{"200 without access_token", onToken(fakeupstream.Fault{Body: `{"token_type":"Bearer","expires_in":3600}`}), "access_token"},
		{"multi-megabyte body", onToken(fakeupstream.Fault{Body: huge}), "token request"},
		{"redirect", reconfigure(func(t *testing.T, e *testEnv, data map[string]any) {
			data["token_url"], data["ca_cert"] = redirectServer(t, data["token_url"].(string))
		}), "HTTP 307"},
		{"OAuth error body", onToken(fakeupstream.Fault{Status: 400, Body: `{"error":"invalid_scope","error_description":"not for you"}`}), `"invalid_scope"`},
		{"HTML error page", onToken(fakeupstream.Fault{Status: 500, Body: "<html><body>Internal Server Error</body></html>"}), "HTTP 500"},
	}
	for _, provider := range []string{"mapsindoors", "cameramanager"} {
		for _, f := range faults {
			t.Run(provider+"/"+f.name, func(t *testing.T) {
				e := newTestEnv(t, fakeupstream.Options{})
				clock := &fixedClock{t: time.Now()}
				e.b.now = clock.Now
				e.writeConfig(t, e.fake.PluginConfig(provider))
				e.writeConfig(t, map[string]any{"request_timeout": "1s"})
				e.role(t, "app", nil)

				heal := f.inject(t, e, provider)
				start := time.Now()
				errs := e.concurrentReadErrors(t, "app", 20)
				require.Less(t, time.Since(start), 5*time.Second, "a reader was stuck")
				for _, err := range errs {
					requireCoded(t, err, http.StatusBadGateway, f.mentions)
					for _, s := range e.fake.Sensitive() {
						requireNoSecretIn(t, err.Error(), s, "the error holds a secret or token")
					}
				}

				heal()
				clock.Add(outageMemoryMax)
				token := e.read(t, "creds/app").Data["access_token"].(string)
				require.True(t, e.fake.TokenLive(token))
			})
		}
	}
}

func tokenEndpoint(provider string) fakeupstream.Endpoint {
	switch provider {
	case "cameramanager":
		return fakeupstream.EndpointCameraManagerToken
	case "metapack":
		return fakeupstream.EndpointMetapackToken
	}
	return fakeupstream.EndpointToken
}

// concurrentReadErrors reads creds/<role> from n goroutines at once and
// returns each read's error (nil for a token).
func (e *testEnv) concurrentReadErrors(t testing.TB, role string, n int) []error {
	t.Helper()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := e.b.HandleRequest(context.Background(), &logical.Request{
				Operation: logical.ReadOperation, Path: "creds/" + role, Storage: e.storage, MountPoint: "mapsindoors/",
			})
			switch {
			case err != nil:
				errs[i] = err
			case resp == nil:
				errs[i] = errors.New("read answered nothing")
			case resp.IsError():
				errs[i] = fmt.Errorf("read refused: %w", resp.Error())
			}
		}()
	}
	wg.Wait()
	return errs
}
