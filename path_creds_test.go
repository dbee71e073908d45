package mapsindoors

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

func TestCreds_LeaseNeverOutlivesToken(t *testing.T) {
	cases := []struct {
		name      string
		lifetime  time.Duration
		roleTTL   string
		wantLease time.Duration
	}{
		{"hour token, no ttl", time.Hour, "0", time.Hour - time.Minute},
		{"hour token, 5m ttl", time.Hour, "5m", 5 * time.Minute},
		{"hour token, ttl longer than the token", time.Hour, "2h", time.Hour - time.Minute},
		{"40s token, no ttl", 40 * time.Second, "0", 36 * time.Second},
		{"40s token, 1h ttl", 40 * time.Second, "1h", 36 * time.Second},
		{"40s token, 10s ttl", 40 * time.Second, "10s", 10 * time.Second},
		{"10s token", 10 * time.Second, "0", 8 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, fakeupstream.Options{TokenLifetime: tc.lifetime})
			e.configure(t, nil)
			e.role(t, "app", map[string]any{"ttl": tc.roleTTL})

			resp := e.read(t, "creds/app")
			require.NotNil(t, resp.Secret)
			lease := resp.Secret.TTL
			require.False(t, resp.Secret.Renewable, "creds leases are not renewable")
			require.Equal(t, lease, resp.Secret.MaxTTL)
			require.Positive(t, lease)
			require.LessOrEqual(t, lease, tc.wantLease)
			require.GreaterOrEqual(t, lease, tc.wantLease-time.Second, "time passing in the test costs at most a second")
			require.Zero(t, lease%time.Second, "Vault counts leases in whole seconds")

			token := resp.Data["access_token"].(string)
			expiry, issued := e.fake.TokenExpiry(token)
			require.True(t, issued)
			require.True(t, time.Now().Add(lease).Before(expiry), "the lease ends before the token")

			require.Equal(t, "Bearer", resp.Data["token_type"])
			require.Equal(t, "app", resp.Data["role"])
			expiresIn := resp.Data["expires_in"].(int64)
			require.InDelta(t, tc.lifetime.Seconds(), float64(expiresIn), 1)
			at, err := time.Parse(time.RFC3339, resp.Data["expires_at"].(string))
			require.NoError(t, err)
			require.WithinDuration(t, expiry, at, time.Second)
			require.ElementsMatch(t, []string{"access_token", "token_type", "expires_in", "expires_at", "scope", "role"}, keys(resp.Data))
		})
	}
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestCreds_TokenTooShortToLease(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{TokenLifetime: 2 * time.Second})
	e.configure(t, nil)
	e.role(t, "app", nil)
	resp, err := e.do(t, logical.ReadOperation, "creds/app", nil)
	require.Nil(t, resp)
	requireCoded(t, err, http.StatusBadGateway, "too short to lease")
}

func TestCreds_ReusesTokenWhileItBacksAUsefulLease(t *testing.T) {
	cases := []struct {
		name     string
		roleTTL  string
		reuseAt  time.Duration // still the same token here
		refetchA time.Duration // a new token from here
		leaseAt  time.Duration // lease given at reuseAt
	}{
		// No ttl: reuse while at least half the hour is left as lease.
		{"no ttl", "0", 20 * time.Minute, 31 * time.Minute, 39 * time.Minute},
		// 5m ttl: reuse while a full 5m lease fits before the margin.
		{"5m ttl", "5m", 50 * time.Minute, 55*time.Minute + 30*time.Second, 5 * time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, fakeupstream.Options{TokenLifetime: time.Hour})
			clock := &fixedClock{t: time.Now()}
			e.b.now = clock.Now
			e.configure(t, nil)
			e.role(t, "app", map[string]any{"ttl": tc.roleTTL})

			first := e.read(t, "creds/app")
			clock.Add(tc.reuseAt)
			again := e.read(t, "creds/app")
			requireSameToken(t, first.Data["access_token"].(string), again.Data["access_token"], "a read before the refetch reuses the token")
			require.Equal(t, 1, e.fake.Hits(fakeupstream.EndpointToken))
			require.InDelta(t, tc.leaseAt.Seconds(), again.Secret.TTL.Seconds(), 1)
			require.InDelta(t, (time.Hour - tc.reuseAt).Seconds(), float64(again.Data["expires_in"].(int64)), 1)

			clock.Add(tc.refetchA - tc.reuseAt)
			fresh := e.read(t, "creds/app")
			requireNewToken(t, first.Data["access_token"], fresh.Data["access_token"], "a read after the refetch point gets a new token")
			require.Equal(t, 2, e.fake.Hits(fakeupstream.EndpointToken))
		})
	}
}

func TestCreds_ConcurrentColdReadsMakeOneUpstreamRequest(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	e.role(t, "app", nil)
	// Hold the token answer so that every reader arrives while it is out.
	e.fake.InjectFault(fakeupstream.EndpointToken, fakeupstream.Fault{Delay: 300 * time.Millisecond})

	const readers = 32
	tokens := make([]string, readers)
	errs := make([]error, readers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := e.b.HandleRequest(context.Background(), &logical.Request{
				Operation: logical.ReadOperation, Path: "creds/app", Storage: e.storage, MountPoint: "mapsindoors/",
			})
			errs[i] = err
			if err == nil && resp != nil && !resp.IsError() {
				tokens[i] = resp.Data["access_token"].(string)
			}
		}()
	}
	close(start)
	wg.Wait()

	for i := range readers {
		require.NoError(t, errs[i])
		require.NotEmpty(t, tokens[i])
		requireSameToken(t, tokens[0], tokens[i], "concurrent readers share one token")
	}
	require.Equal(t, 1, e.fake.Hits(fakeupstream.EndpointToken))
}

func TestCreds_UnknownRoleAndMissingConfigAre400(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.role(t, "app", nil)
	resp, err := e.do(t, logical.ReadOperation, "creds/app", nil)
	requireBadRequest(t, resp, err, "write mapsindoors/config")

	e.configure(t, nil)
	resp, err = e.do(t, logical.ReadOperation, "creds/nope", nil)
	requireBadRequest(t, resp, err, `role "nope" does not exist`)
	require.Equal(t, 0, e.fake.Hits(fakeupstream.EndpointToken))
}

func TestCreds_UpstreamFailureNamesStatusAndCode(t *testing.T) {
	cases := []struct {
		name     string
		fault    fakeupstream.Fault
		config   map[string]any
		mentions []string
	}{
		{"refused client", fakeupstream.Fault{Status: 401, Code: "invalid_client"}, nil,
			[]string{"HTTP 401", `"invalid_client"`, "check client_id and client_secret"}},
		{"unavailable", fakeupstream.Fault{Status: 503, Code: "temporarily_unavailable", Times: -1}, nil,
			[]string{"HTTP 503", `"temporarily_unavailable"`}},
		{"malformed answer", fakeupstream.Fault{Malformed: true}, nil,
			[]string{"token request", "cannot parse"}},
		{"no expires_in", fakeupstream.Fault{Body: `{"access_token":"abc","token_type":"Bearer"}`}, nil,
			[]string{"expires_in"}},
		{"slow upstream", fakeupstream.Fault{Delay: 3 * time.Second}, map[string]any{"request_timeout": 1},
			[]string{"token request", "timed out"}},
		{"3xx answer", fakeupstream.Fault{Status: 302, Code: "moved"}, nil,
			[]string{"HTTP 302"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, fakeupstream.Options{})
			clock := &fixedClock{t: time.Now()}
			e.b.now = clock.Now
			e.configure(t, tc.config)
			e.role(t, "app", nil)
			e.fake.InjectFault(fakeupstream.EndpointToken, tc.fault)

			resp, err := e.do(t, logical.ReadOperation, "creds/app", nil)
			require.Nil(t, resp)
			for _, m := range tc.mentions {
				requireCoded(t, err, http.StatusBadGateway, m)
			}
			for _, s := range e.fake.Sensitive() {
				requireNoSecretIn(t, err.Error(), s, "the error holds a secret or token")
			}
			// The next read, with the upstream well again and the failure
			// no longer remembered, works.
			e.fake.ClearFaults()
			clock.Add(outageMemoryMin)
			e.read(t, "creds/app")
		})
	}
}

func TestCreds_WrongSecretIsRefusedByTheFake(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, map[string]any{"client_secret": "not-the-secret", "client_secret_id": ""})
	e.role(t, "app", nil)
	_, err := e.do(t, logical.ReadOperation, "creds/app", nil)
	requireCoded(t, err, http.StatusBadGateway, `HTTP 400, OAuth2 error "invalid_client"`)
	require.NotContains(t, err.Error(), "not-the-secret")
}

// readOnlyStorage fails every write, as a performance standby's storage
// does, and counts the attempts.
type readOnlyStorage struct {
	logical.Storage
	mu     sync.Mutex
	writes int
}

func (s *readOnlyStorage) Put(context.Context, *logical.StorageEntry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	return logical.ErrReadOnly
}

func (s *readOnlyStorage) Delete(context.Context, string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	return logical.ErrReadOnly
}

func TestCreds_ReadPathNeverWritesStorage(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	e.role(t, "app", nil)
	ro := &readOnlyStorage{Storage: e.storage}
	e.storage = ro
	e.b.reset() // cold: config and role come from storage again

	e.read(t, "creds/app")
	e.read(t, "creds/app")
	require.Zero(t, ro.writes)
}

func TestCreds_LogsNameRoleAndNoSecrets(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	e.role(t, "app", nil)
	e.read(t, "creds/app")
	e.fake.InjectFault(fakeupstream.EndpointToken, fakeupstream.Fault{Status: 401, Code: "invalid_client"})
	e.b.tokens.reset()
	_, err := e.do(t, logical.ReadOperation, "creds/app", nil)
	require.Error(t, err)
	logs := e.logs.String()
	require.Contains(t, logs, "token request failed")
	require.Contains(t, logs, "role=app")
	require.Contains(t, logs, "mount=mapsindoors/")
	// newTestEnv's cleanup checks the log and every response for secrets.
}

func TestCreds_RevokeSucceeds(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	e.role(t, "app", nil)
	resp := e.read(t, "creds/app")
	revoke, err := e.b.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.RevokeOperation,
		Storage:   e.storage,
		Secret:    resp.Secret,
	})
	require.NoError(t, err)
	require.Nil(t, revoke)
}

func requireCoded(t testing.TB, err error, status int, mentions string) {
	t.Helper()
	require.Error(t, err)
	var coded logical.HTTPCodedError
	require.True(t, errors.As(err, &coded), "want a coded error, got %T: %v", err, err)
	require.Equal(t, status, coded.Code())
	require.Contains(t, err.Error(), mentions)
}

// An upstream that issues tokens too short to lease (2 s: the 2 s safety
// margin leaves nothing) must not be asked again on every read: the token
// is remembered for its life, and the reads meanwhile get the same clear
// 502 without a request of their own.
func TestCreds_TooShortTokenIsRememberedForItsLife(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{TokenLifetime: 2 * time.Second})
	clock := &fixedClock{t: time.Now()}
	e.b.now = clock.Now
	e.configure(t, nil)
	e.role(t, "app", nil)
	for range 20 {
		_, err := e.do(t, logical.ReadOperation, "creds/app", nil)
		requireCoded(t, err, http.StatusBadGateway, "too short to lease")
	}
	require.Equal(t, 1, e.fake.Hits(fakeupstream.EndpointToken), "20 reads of a 2 s token that cannot be leased")
	// Once it has expired, the next read asks again.
	clock.Add(3 * time.Second)
	_, err := e.do(t, logical.ReadOperation, "creds/app", nil)
	requireCoded(t, err, http.StatusBadGateway, "too short to lease")
	require.Equal(t, 2, e.fake.Hits(fakeupstream.EndpointToken))
}

// moveDuringFetch starts a creds read whose token request the first fake
// holds, moves the config to a second fake while it is held, and returns
// the second fake, a func that lets the held request go, and the held
// read's result.
func moveDuringFetch(t *testing.T, e *testEnv) (*fakeupstream.Server, func(), <-chan string) {
	t.Helper()
	other, err := fakeupstream.Start(fakeupstream.Options{})
	require.NoError(t, err)
	t.Cleanup(other.Close)
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	e.fake.OnRequest(func(ep fakeupstream.Endpoint, _ *http.Request) {
		if ep == fakeupstream.EndpointToken {
			once.Do(func() { close(held) })
			<-release
		}
	})
	first := make(chan string, 1)
	go func() {
		resp, err := e.b.HandleRequest(context.Background(), credsRequest(e, "app"))
		if err != nil || resp.IsError() {
			first <- ""
			return
		}
		first <- resp.Data["access_token"].(string)
	}()
	<-held
	e.writeConfig(t, other.PluginConfig("mapsindoors"))
	var releaseOnce sync.Once
	return other, func() { releaseOnce.Do(func() { close(release) }) }, first
}

// A read that comes after a config write never joins a token request made
// with the config it replaced (the config generation in the shared
// fetch's key): it gets a token of the new upstream.
func TestCreds_ReadAfterAConfigMoveNeverJoinsTheOldConfigsFetch(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	e.role(t, "app", nil)
	other, release, first := moveDuringFetch(t, e)
	defer release()
	second := make(chan string, 1)
	go func() {
		resp, err := e.b.HandleRequest(context.Background(), credsRequest(e, "app"))
		if err != nil || resp.IsError() {
			second <- ""
			return
		}
		second <- resp.Data["access_token"].(string)
	}()
	var token string
	select {
	case token = <-second:
	case <-time.After(10 * time.Second):
		release()
		token = <-second
	}
	release()
	require.True(t, other.TokenLive(token), "the read after the move got a token of the new upstream")
	require.True(t, e.fake.TokenLive(<-first), "the held read got the old upstream's token")
}

// A token request made with the old config that lands after a config
// write is not cached (the generation in the token cache's install): the
// next read gets a token of the new upstream.
func TestCreds_TokenOfTheOldConfigIsNotCachedAfterAMove(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	e.role(t, "app", nil)
	other, release, first := moveDuringFetch(t, e)
	release()
	require.True(t, e.fake.TokenLive(<-first))
	token := e.read(t, "creds/app").Data["access_token"].(string)
	require.True(t, other.TokenLive(token), "the next read got a token of the new upstream, not the old config's")
	require.Equal(t, 1, other.Hits(fakeupstream.EndpointToken))
}
