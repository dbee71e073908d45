package mapsindoors

import (
	"errors"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// Defect 3 of issue 16: the creds path remembered a refused password
// login, but verify, which the README tells monitoring to poll, did not:
// each verify read was one more password login with the refused password.
// Before the fix: "password logins with the refused password after 20
// verify reads (clock not moved): 21", `Not equal: expected: 1, actual: 21`.
func TestLoginMemory_VerifyPollsMakeNoLoginsWithARefusedPassword(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	clock := &fixedClock{t: time.Now()}
	e.b.now = clock.Now
	e.writeConfig(t, e.fake.PluginConfig("cameramanager"))
	e.writeConfig(t, map[string]any{"password": "wrong"})
	e.role(t, "cam", nil)

	_, err := e.do(t, logical.ReadOperation, "creds/cam", nil)
	requireCoded(t, err, http.StatusBadGateway, `"invalid_grant"`)
	for range 20 {
		resp := e.read(t, "verify")
		require.Equal(t, false, resp.Data["ok"])
		require.Contains(t, resp.Data["error"], "refused the password login")
		require.Equal(t, 400, resp.Data["upstream_status"], "verify still says what the upstream answered")
	}
	require.Equal(t, 1, e.fake.Grants(fakeupstream.EndpointCameraManagerToken, "password"), "one login, however often verify is read")

	// The other way round: a verify that is refused holds back creds.
	clock.Add(10*time.Second + time.Second)
	require.Equal(t, false, e.read(t, "verify").Data["ok"])
	require.Equal(t, 2, e.fake.Grants(fakeupstream.EndpointCameraManagerToken, "password"))
	_, err = e.do(t, logical.ReadOperation, "creds/cam", nil)
	requireCoded(t, err, http.StatusBadGateway, "refused the password login")
	require.Equal(t, 2, e.fake.Grants(fakeupstream.EndpointCameraManagerToken, "password"))

	// The right password is another credential, tried at once.
	e.writeConfig(t, map[string]any{"password": e.fake.Credentials().Password})
	require.Equal(t, true, e.read(t, "verify").Data["ok"])
}

// Defect 3, Retry-After: a 429 asking for 120 s of quiet was honored by
// the role that got it, while verify went on asking. Before the fix:
// "token endpoint hits: 1 after the 429 creds read, 11 after 10 verify
// reads". The memory is the credential's: every role, verify,
// client-secrets and rotate-root hold back alike, until the wait is over.
func TestLoginMemory_RetryAfterHoldsBackEveryPathOfTheCredential(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	clock := &fixedClock{t: time.Now()}
	e.b.now = clock.Now
	e.configure(t, nil)
	e.role(t, "app", nil)
	e.role(t, "other", map[string]any{"scopes": "other"})
	e.fake.InjectFault(fakeupstream.EndpointToken, fakeupstream.Fault{Status: 429, Code: "slow_down", RetryAfter: "120", Times: -1})
	_, err := e.do(t, logical.ReadOperation, "creds/app", nil)
	requireCoded(t, err, http.StatusBadGateway, "HTTP 429")
	hits := e.fake.Hits(fakeupstream.EndpointToken)

	for range 10 {
		resp := e.read(t, "verify")
		require.Equal(t, false, resp.Data["ok"])
		require.Contains(t, resp.Data["error"], "Retry-After")
	}
	_, err = e.do(t, logical.ReadOperation, "creds/other", nil)
	requireCoded(t, err, http.StatusBadGateway, "Retry-After")
	_, err = e.do(t, logical.ReadOperation, "client-secrets", nil)
	require.ErrorContains(t, err, "Retry-After")
	resp, err := e.do(t, logical.UpdateOperation, "rotate-root", nil)
	require.True(t, err != nil || resp.IsError(), "rotate-root logs in too")
	require.Equal(t, hits, e.fake.Hits(fakeupstream.EndpointToken), "no request while the upstream asked for quiet")
	require.Zero(t, e.fake.Hits(fakeupstream.EndpointCreateSecret))

	// 120 s on, the next request goes out.
	clock.Add(121 * time.Second)
	e.read(t, "verify")
	require.Greater(t, e.fake.Hits(fakeupstream.EndpointToken), hits)
}

// A Retry-After is honored up to 5 minutes, whatever the upstream asks:
// a broken or hostile upstream cannot shut the mount for hours. The
// figures are the promised ones, not read from the code.
func TestLoginMemory_RetryAfterIsCappedAtFiveMinutes(t *testing.T) {
	clock := &fixedClock{t: time.Now()}
	m := newLoginMemory(clock.Now)
	key := keyOf(upstream.Config{TokenURL: "https://a.example/token", ClientID: "c", ClientSecret: "s"})
	err := m.record(key, &upstream.Error{Op: "token request", StatusCode: 429, RetryAfter: 48 * time.Hour}, false)
	require.Error(t, err)
	clock.Add(5*time.Minute - time.Second)
	require.ErrorContains(t, m.held(key, false), "Retry-After", "held for the 5 minutes")
	clock.Add(2 * time.Second)
	require.NoError(t, m.held(key, false), "and no longer")
}

// A refused password is held back 10 s, doubling with each refusal in a
// row up to 10 minutes; a success forgets it. Figures as promised.
func TestLoginMemory_RefusedPasswordBacksOffFrom10sTo10min(t *testing.T) {
	clock := &fixedClock{t: time.Now()}
	m := newLoginMemory(clock.Now)
	key := keyOf(upstream.Config{TokenURL: "https://a.example/token", GrantType: upstream.GrantPassword, Username: "u", Password: "p"})
	refused := &upstream.Error{Op: "token request", StatusCode: 400, Code: "invalid_grant"}
	for i, want := range []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second,
		160 * time.Second, 320 * time.Second, 10 * time.Minute, 10 * time.Minute} {
		err := m.record(key, refused, true)
		require.ErrorContains(t, err, "refused the password login", "refusal %d", i+1)
		clock.Add(want - time.Second)
		require.Error(t, m.held(key, true), "refusal %d: held for %s", i+1, want)
		require.NoError(t, m.held(key, false), "a refused password does not hold back a refresh")
		clock.Add(time.Second)
		require.NoError(t, m.held(key, true), "refusal %d: and not longer than %s", i+1, want)
	}
	m.succeeded(key)
	require.NoError(t, m.record(key, nil, true))
	err := m.record(key, refused, true)
	clock.Add(11 * time.Second)
	require.NoError(t, m.held(key, true), "after a success the back-off starts again at 10 s")
	var b *backedOffError
	require.True(t, errors.As(err, &b))
}

// The memory holds at most 64 credentials, and no secret: its keys are
// hashes. What is dropped first is what holds nothing back any more.
func TestLoginMemory_IsBounded(t *testing.T) {
	clock := &fixedClock{t: time.Now()}
	m := newLoginMemory(clock.Now)
	refused := &upstream.Error{Op: "token request", StatusCode: 400, Code: "invalid_grant"}
	keyN := func(i int) credentialKey {
		return keyOf(upstream.Config{TokenURL: "https://a.example/token", Username: "u", Password: "p" + strconv.Itoa(i)})
	}
	lasting := keyN(-1)
	for range 5 {
		_ = m.record(lasting, refused, true) // 160 s
	}
	for i := range 1000 {
		_ = m.record(keyN(i), refused, true) // 10 s each
		clock.Add(time.Millisecond)
	}
	require.Len(t, m.entries, 64)
	require.Error(t, m.held(lasting, true), "the entry due last is kept")
	require.Error(t, m.held(keyN(999), true), "and the newest")
}
