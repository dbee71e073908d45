package mapsindoors

import (
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// hookClockIn runs hook once, the first time the backend's clock is read
// from the function named fn (a suffix of its full name), so a test can put
// a config write at an exact step of a request.
func hookClockIn(e *testEnv, fn string, hook func()) {
	var once sync.Once
	e.b.now = func() time.Time {
		if pc, _, _, ok := runtime.Caller(1); ok {
			if f := runtime.FuncForPC(pc); f != nil && strings.HasSuffix(f.Name(), fn) {
				once.Do(hook)
			}
		}
		return time.Now()
	}
}

// A config writer moves a CameraManager mount to their host (with a
// password and API key of their own, as the trust rule asks) while a read
// that looked up the real config is on its way. That read logs in at the
// real server; its refresh token must not be kept for the moved config,
// or the next read would send it to the attacker's host.
func TestAttackConfigWriter_ARefreshTokenNeverOutlivesTheConfigItWasMadeWith(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.writeConfig(t, e.fake.PluginConfig("cameramanager"))
	e.role(t, "cam", nil)
	attacker := fakeupstream.StartRecorder(http.StatusBadRequest)
	t.Cleanup(attacker.Close)

	move := map[string]any{
		"token_url":         attacker.URL() + "/token",
		"revocation_url":    attacker.URL() + "/logout",
		"ca_cert":           attacker.CACertPEM(),
		"client_secret":     "attackers-own-api-key-secret",
		"username":          "attacker",
		"password":          "attackers-own-password",
		"verify_connection": false,
	}
	hookClockIn(e, ".(*backend).leaseToken", func() { e.writeConfig(t, move) })
	_, _ = e.do(t, "read", "creds/cam", nil)
	_, _ = e.do(t, "read", "creds/cam", nil) // on the moved config

	for _, c := range attacker.Received() {
		if rt := c.Form.Get("refresh_token"); rt != "" {
			require.False(t, e.fake.RefreshTokenLive(rt),
				"the attacker's host received a refresh token that is live at the real server")
		}
	}
}

// The same gap without an attacker: an operator replaces the CameraManager
// user while a read is on its way; later reads must log in as the new user,
// not keep refreshing the replaced user's session.
func TestAttackConfigWriter_AReplacedUsersSessionIsNotKeptAlive(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.writeConfig(t, e.fake.PluginConfig("cameramanager"))
	e.role(t, "cam", nil)

	hookClockIn(e, ".(*backend).leaseToken", func() {
		e.writeConfig(t, map[string]any{"username": "new-user", "password": "the-new-users-password", "verify_connection": false})
	})
	_, _ = e.do(t, "read", "creds/cam", nil)
	passwordLogins := e.fake.Grants(fakeupstream.EndpointCameraManagerToken, "password")

	for range 3 {
		resp, err := e.do(t, "read", "creds/cam", nil)
		// The new user is unknown upstream: a read must fail.
		require.True(t, err != nil || resp.IsError(), "a read after the user was replaced got a token of the replaced user")
	}
	require.Greater(t, e.fake.Grants(fakeupstream.EndpointCameraManagerToken, "password"), passwordLogins)
}
