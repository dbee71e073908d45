package mapsindoors

import (
	"context"
	"net/http"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

func TestVerify_ReportsALoginWithTheStoredCredential(t *testing.T) {
	cases := []struct {
		name      string
		fault     *fakeupstream.Fault
		config    map[string]any
		ok        bool
		status    int
		code      string
		mentions  string
		lifetimeS int64
		// attempts is how many token requests the check makes: a 5xx is
		// retried.
		attempts int
	}{
		{name: "works", ok: true, lifetimeS: 600},
		{name: "refused client", fault: &fakeupstream.Fault{Status: 401, Code: "invalid_client"},
			status: 401, code: "invalid_client", mentions: "HTTP 401"},
		{name: "wrong secret", config: map[string]any{"client_secret": "not-the-secret", "client_secret_id": ""},
			status: 400, code: "invalid_client", mentions: "HTTP 400"},
		{name: "upstream down", fault: &fakeupstream.Fault{Status: 503, Code: "temporarily_unavailable", Times: -1},
			status: 503, code: "temporarily_unavailable", mentions: "HTTP 503", attempts: upstream.MaxAttemptsLimit},
		{name: "no answer in time", fault: &fakeupstream.Fault{Delay: 3 * time.Second}, config: map[string]any{"request_timeout": 1},
			status: 0, mentions: "timed out"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, fakeupstream.Options{TokenLifetime: 10 * time.Minute})
			e.configure(t, tc.config)
			if tc.fault != nil {
				e.fake.InjectFault(fakeupstream.EndpointToken, *tc.fault)
			}
			hits := e.fake.Hits(fakeupstream.EndpointToken)

			// A failed check is an answer, not an error: monitoring polls it.
			got := e.read(t, "verify").Data
			attempts := max(tc.attempts, 1) // a 5xx is retried
			require.Equal(t, hits+attempts, e.fake.Hits(fakeupstream.EndpointToken), "one fresh token request")
			require.Equal(t, tc.ok, got["ok"])
			require.Equal(t, "mapsindoors", got["provider"])
			require.Equal(t, e.fake.TokenURL(), got["token_url"])
			require.IsType(t, float64(0), got["latency_ms"])
			require.GreaterOrEqual(t, got["latency_ms"].(float64), 0.0)
			require.IsType(t, int64(0), got["client_secret_age"])
			require.GreaterOrEqual(t, got["client_secret_age"].(int64), int64(0))
			require.Equal(t, "none", got["last_rotation_outcome"])
			if tc.ok {
				require.Equal(t, tc.lifetimeS, got["token_lifetime"])
				require.Equal(t, "Bearer", got["token_type"])
				require.NotContains(t, got, "error")
				require.NotContains(t, got, "upstream_status")
				return
			}
			require.Equal(t, tc.status, got["upstream_status"])
			require.Equal(t, tc.code, got["oauth2_error"])
			require.Contains(t, got["error"], tc.mentions)
			require.NotContains(t, got, "token_lifetime")
		})
	}
}

func TestVerify_NoConfigIs400(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	resp, err := e.do(t, logical.ReadOperation, "verify", nil)
	requireBadRequest(t, resp, err, "write mapsindoors/config")
	require.Zero(t, e.fake.Hits(fakeupstream.EndpointToken))
}

// verify asks the upstream itself: a cached token does not answer for it,
// and it leaves the cached token alone for the next creds read.
func TestVerify_NeverUsesOrTouchesTheTokenCache(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	e.role(t, "app", nil)
	first := e.read(t, "creds/app").Data["access_token"]
	require.Equal(t, 1, e.fake.Hits(fakeupstream.EndpointToken))

	for i := range 3 {
		require.Equal(t, true, e.read(t, "verify").Data["ok"])
		require.Equal(t, 2+i, e.fake.Hits(fakeupstream.EndpointToken))
	}
	requireSameToken(t, first.(string), e.read(t, "creds/app").Data["access_token"], "the cached token is still the one handed out")
	require.Equal(t, 4, e.fake.Hits(fakeupstream.EndpointToken), "and the creds read was a cache hit")

	// The stored secret stops working: verify says so although a cached
	// token would still be handed out.
	e.fake.InjectFault(fakeupstream.EndpointToken, fakeupstream.Fault{Status: 401, Code: "invalid_client", Times: -1})
	require.Equal(t, false, e.read(t, "verify").Data["ok"])
	requireSameToken(t, first.(string), e.read(t, "creds/app").Data["access_token"], "a failing verify leaves the cached token")
}

func TestVerify_ShowsTheLastRotation(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	resp, err := e.rotate(t)
	require.NoError(t, err)
	require.False(t, resp.IsError())
	got := e.read(t, "verify").Data
	require.Equal(t, true, got["ok"])
	require.Equal(t, outcomeSucceeded, got["last_rotation_outcome"])
	require.Equal(t, resp.Data["rotated_at"], got["last_rotated"])
	require.Equal(t, "", got["last_rotation_error"])

	e.fake.InjectFault(fakeupstream.EndpointCreateSecret, fakeupstream.Fault{Status: 500})
	_, err = e.rotate(t)
	require.Error(t, err)
	got = e.read(t, "verify").Data
	require.Equal(t, true, got["ok"], "the stored secret still works")
	require.Equal(t, outcomeFailed, got["last_rotation_outcome"])
	require.Contains(t, got["last_rotation_error"], "HTTP 500")
	require.Equal(t, 1, got["consecutive_rotation_failures"])
}

// CameraManager sessions end with a logout: a check leaves none behind.
func TestVerify_LogsItsOwnTokenOutWhereTheProviderCan(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.writeConfig(t, e.fake.PluginConfig("cameramanager"))
	got := e.read(t, "verify").Data
	require.Equal(t, true, got["ok"])
	require.Equal(t, 1, e.fake.Grants(fakeupstream.EndpointCameraManagerToken, "password"))
	require.Equal(t, 1, e.fake.Hits(fakeupstream.EndpointCameraManagerLogout))
}

// verify neither waits for a rotation that holds the config's write lock
// nor changes what the rotation does.
func TestVerify_DoesNotWaitForOrDisturbARunningRotation(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	old := e.fake.Credentials()

	held := make(chan struct{})
	release := make(chan struct{})
	e.fake.OnRequest(func(ep fakeupstream.Endpoint, _ *http.Request) {
		if ep == fakeupstream.EndpointCreateSecret {
			close(held)
			<-release
		}
	})
	done := make(chan *logical.Response, 1)
	go func() {
		resp, err := e.b.HandleRequest(context.Background(), &logical.Request{
			Operation: logical.UpdateOperation, Path: "rotate-root", Storage: e.storage, MountPoint: "mapsindoors/",
		})
		if err != nil {
			resp = logical.ErrorResponse(err.Error())
		}
		done <- resp
	}()
	<-held

	verified := make(chan map[string]any, 1)
	go func() {
		resp, err := e.b.HandleRequest(context.Background(), &logical.Request{
			Operation: logical.ReadOperation, Path: "verify", Storage: e.storage, MountPoint: "mapsindoors/",
		})
		if err != nil || resp == nil {
			verified <- nil
			return
		}
		verified <- resp.Data
	}()
	select {
	case got := <-verified:
		require.NotNil(t, got)
		require.Equal(t, true, got["ok"])
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("verify waited for the rotation")
	}
	close(release)
	resp := <-done
	require.False(t, resp.IsError(), "the rotation went on: %v", resp.Data)
	require.Equal(t, old.ClientSecretID, resp.Data["previous_client_secret_id"])
	require.Equal(t, true, resp.Data["previous_deleted"])
	require.True(t, e.fake.SecretWorks(e.storedConfig(t).ClientSecret))
}

// A rotation that replaces and deletes the secret between verify's read of
// the config and its login does not make verify report a broken mount.
func TestVerify_ChecksAgainWhenARotationReplacedTheSecretMeanwhile(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	old := e.fake.Credentials()

	var rotated atomic.Bool
	e.fake.OnRequest(func(ep fakeupstream.Endpoint, r *http.Request) {
		// The first token request is verify's; rotate before it is served.
		if ep == fakeupstream.EndpointToken && rotated.CompareAndSwap(false, true) {
			_, err := e.b.rotateRoot(context.Background(), e.storage, "mapsindoors/", triggerManual)
			require.NoError(t, err)
		}
	})
	got := e.read(t, "verify").Data
	require.True(t, rotated.Load())
	require.False(t, e.fake.SecretWorks(old.ClientSecret), "the secret verify first read is gone")
	require.Equal(t, true, got["ok"], "%v", got["error"])
	require.Equal(t, outcomeSucceeded, got["last_rotation_outcome"])
}

func TestConfigWrite_VerifiesConnectionBeforeStoring(t *testing.T) {
	cases := []struct {
		name string
		// first is written before the write under test (nil: none).
		first map[string]any
		write map[string]any
		fault *fakeupstream.Fault
		// stored says whether the write is stored; mentions is in its 400.
		stored   bool
		mentions []string
		logins   int
	}{
		{name: "new config that logs in", write: map[string]any{}, stored: true, logins: 1},
		{name: "new config with a wrong secret", write: map[string]any{"client_secret": "not-the-secret"},
			mentions: []string{"verify_connection", "HTTP 400", `"invalid_client"`, "check the client id and secret", "verify_connection=false"}, logins: 1},
		{name: "new secret that does not log in", first: map[string]any{}, write: map[string]any{"client_secret": "not-the-secret"},
			mentions: []string{"verify_connection", "invalid_client"}, logins: 1},
		{name: "token_url nothing answers at", first: map[string]any{},
			// Moving the token URL needs the credentials again, in the same write.
			write:    map[string]any{"token_url": "https://127.0.0.1:1/connect/token", "client_secret": "carried-again"},
			mentions: []string{"verify_connection", "token request to https://127.0.0.1:1/connect/token failed"}},
		{name: "upstream refuses for now", first: map[string]any{}, write: map[string]any{"client_id": "someone-else"},
			fault:    &fakeupstream.Fault{Status: 503, Code: "temporarily_unavailable", Times: -1},
			mentions: []string{"HTTP 503", `"temporarily_unavailable"`}, logins: upstream.MaxAttemptsLimit},
		{name: "wrong secret with verify_connection=false", write: map[string]any{"client_secret": "not-the-secret", "verify_connection": false},
			stored: true},
		{name: "a change that is not a login's needs none", first: map[string]any{},
			write: map[string]any{"rotation_period": "24h", "previous_secret_grace": 60},
			fault: &fakeupstream.Fault{Status: 503, Times: -1}, stored: true},
		{name: "rewriting the same credentials needs none", first: map[string]any{}, write: map[string]any{},
			fault: &fakeupstream.Fault{Status: 503, Times: -1}, stored: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, fakeupstream.Options{})
			e.verifyConfigWrites = true
			if tc.first != nil {
				e.configure(t, tc.first)
			}
			before, err := getConfig(t.Context(), e.storage)
			require.NoError(t, err)
			if tc.fault != nil {
				e.fake.InjectFault(fakeupstream.EndpointToken, *tc.fault)
			}
			hits := e.fake.Hits(fakeupstream.EndpointToken)

			data := e.fake.PluginConfig("mapsindoors")
			if tc.first != nil {
				data = map[string]any{}
			}
			for k, v := range tc.write {
				data[k] = v
			}
			resp, err := e.write(t, "config", data)
			require.Equal(t, hits+tc.logins, e.fake.Hits(fakeupstream.EndpointToken), "logins made")
			after, getErr := getConfig(t.Context(), e.storage)
			require.NoError(t, getErr)
			// Configs are compared, never printed: they hold the secret.
			if tc.stored {
				require.NoError(t, err)
				require.False(t, resp != nil && resp.IsError(), "%v", resp)
				require.NotNil(t, after)
				if secret, ok := tc.write["client_secret"].(string); ok {
					require.True(t, after.ClientSecret == secret, "the written secret is stored")
				}
				require.NotContains(t, e.read(t, "config").Data, verifyConnectionField, "verify_connection is not stored")
				return
			}
			for _, m := range tc.mentions {
				requireBadRequest(t, resp, err, m)
			}
			require.True(t, reflect.DeepEqual(before, after), "nothing was stored")
		})
	}
}

func TestConfigWrite_VerifyConnectionLogsCameraManagerOutAgain(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.verifyConfigWrites = true
	e.writeConfig(t, e.fake.PluginConfig("cameramanager"))
	require.Equal(t, 1, e.fake.Grants(fakeupstream.EndpointCameraManagerToken, "password"))
	require.Equal(t, 1, e.fake.Hits(fakeupstream.EndpointCameraManagerLogout))
}
