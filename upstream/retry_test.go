package upstream_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// fakeClient is a client of the fake's MapsIndoors endpoints that retries
// as tune says, with a short backoff.
func fakeClient(t *testing.T, fake *fakeupstream.Server, tune func(*upstream.Config)) *upstream.HTTPClient {
	t.Helper()
	cr := fake.Credentials()
	cfg := upstream.Config{
		TokenURL: fake.TokenURL(), RotationURL: fake.RotationURL(), CACertPEM: fake.CACertPEM(),
		ClientID: cr.ClientID, ClientSecret: cr.ClientSecret, CustomerID: cr.CustomerID,
		GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost,
		MaxAttempts: 3, RetryBackoff: 20 * time.Millisecond,
	}
	if tune != nil {
		tune(&cfg)
	}
	return newClient(t, cfg)
}

// hitTimes records when each request to an endpoint arrived.
func hitTimes(fake *fakeupstream.Server, ep fakeupstream.Endpoint) func() []time.Time {
	var mu sync.Mutex
	var at []time.Time
	fake.OnRequest(func(got fakeupstream.Endpoint, _ *http.Request) {
		if got == ep {
			mu.Lock()
			at = append(at, time.Now())
			mu.Unlock()
		}
	})
	return func() []time.Time {
		mu.Lock()
		defer mu.Unlock()
		return append([]time.Time(nil), at...)
	}
}

// A failing upstream: token requests and lists are retried on 429, 5xx
// and a connection dropped without an answer, a bounded number of times,
// inside the caller's deadline, honoring Retry-After when it fits.
func TestRetry_TokenRequests(t *testing.T) {
	cases := []struct {
		name      string
		fault     fakeupstream.Fault
		dateIn    time.Duration // Retry-After as an HTTP date this far ahead
		tune      func(*upstream.Config)
		deadline  time.Duration
		wantHits  int
		wantErr   []string
		wantAfter time.Duration // the Error's RetryAfter, within two seconds
		minTime   time.Duration // how long the call takes at least
		maxTime   time.Duration // and at most
	}{
		{name: "503 once", fault: fakeupstream.Fault{Status: 503, Code: "temporarily_unavailable"}, wantHits: 2},
		{name: "500 once", fault: fakeupstream.Fault{Status: 500}, wantHits: 2},
		{name: "502 and 504", fault: fakeupstream.Fault{Status: 502, Times: 2}, wantHits: 3},
		{name: "429 once", fault: fakeupstream.Fault{Status: 429, Code: "slow_down"}, wantHits: 2},
		{name: "a connection dropped without an answer", fault: fakeupstream.Fault{DropAfterProcessing: true}, wantHits: 2},
		{name: "Retry-After in seconds that fits", fault: fakeupstream.Fault{Status: 429, RetryAfter: "1"},
			wantHits: 2, minTime: time.Second},
		{name: "Retry-After as a date that fits", fault: fakeupstream.Fault{Status: 503}, dateIn: 2 * time.Second,
			wantHits: 2, minTime: 900 * time.Millisecond},
		{name: "Retry-After beyond the deadline", fault: fakeupstream.Fault{Status: 429, Code: "slow_down", RetryAfter: "30"},
			deadline: 5 * time.Second, wantHits: 1, maxTime: 2 * time.Second,
			wantErr: []string{"HTTP 429", `"slow_down"`, "retry after 30s"}, wantAfter: 30 * time.Second},
		{name: "Retry-After as a date beyond the deadline", fault: fakeupstream.Fault{Status: 503}, dateIn: time.Hour,
			deadline: 5 * time.Second, wantHits: 1, maxTime: 2 * time.Second,
			wantErr: []string{"HTTP 503", "retry after ", "Retry-After"}, wantAfter: time.Hour},
		{name: "Retry-After with no retries left", fault: fakeupstream.Fault{Status: 503, RetryAfter: "7"},
			tune: func(c *upstream.Config) { c.MaxAttempts = 1 }, wantHits: 1,
			wantErr: []string{"HTTP 503", "retry after 7s"}, wantAfter: 7 * time.Second},
		{name: "503 every time", fault: fakeupstream.Fault{Status: 503, Times: -1}, wantHits: 3,
			wantErr: []string{"after 3 attempts", "HTTP 503"}, minTime: 30 * time.Millisecond},
		{name: "a backoff that does not fit the deadline", fault: fakeupstream.Fault{Status: 503, Times: -1},
			tune: func(c *upstream.Config) { c.RetryBackoff = time.Minute }, deadline: 2 * time.Second,
			wantHits: 1, wantErr: []string{"HTTP 503"}, maxTime: time.Second},
		{name: "attempts are capped", fault: fakeupstream.Fault{Status: 503, Times: -1},
			tune: func(c *upstream.Config) { c.MaxAttempts = 100 }, wantHits: 3, wantErr: []string{"after 3 attempts"}},
		{name: "no retries unless asked for", fault: fakeupstream.Fault{Status: 503},
			tune: func(c *upstream.Config) { c.MaxAttempts = 0 }, wantHits: 1, wantErr: []string{"HTTP 503"}},
		{name: "400 is not retried", fault: fakeupstream.Fault{Status: 400, Code: "invalid_request"}, wantHits: 1, wantErr: []string{"HTTP 400"}},
		{name: "401 is not retried", fault: fakeupstream.Fault{Status: 401, Code: "invalid_client"}, wantHits: 1, wantErr: []string{"HTTP 401"}},
		{name: "a redirect is not retried", fault: fakeupstream.Fault{Redirect: "https://elsewhere.example/"}, wantHits: 1, wantErr: []string{"HTTP 307"}},
		{name: "a malformed answer is not retried", fault: fakeupstream.Fault{Malformed: true}, wantHits: 1, wantErr: []string{"cannot parse"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake, err := fakeupstream.Start(fakeupstream.Options{})
			require.NoError(t, err)
			defer fake.Close()
			if tc.dateIn > 0 {
				// HTTP dates have whole seconds: the wait is up to one less.
				tc.fault.RetryAfter = time.Now().Add(tc.dateIn).UTC().Format(http.TimeFormat)
			}
			fake.InjectFault(fakeupstream.EndpointToken, tc.fault)
			c := fakeClient(t, fake, tc.tune)
			deadline := tc.deadline
			if deadline == 0 {
				deadline = 10 * time.Second
			}
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()

			start := time.Now()
			tok, err := c.Token(ctx, upstream.TokenRequest{})
			took := time.Since(start)
			require.Equal(t, tc.wantHits, fake.Hits(fakeupstream.EndpointToken), "attempts")
			require.GreaterOrEqual(t, took, tc.minTime)
			if tc.maxTime > 0 {
				require.Less(t, took, tc.maxTime)
			}
			if len(tc.wantErr) == 0 {
				require.NoError(t, err)
				require.True(t, fake.TokenLive(tok.AccessToken))
				return
			}
			for _, m := range tc.wantErr {
				require.ErrorContains(t, err, m)
			}
			var ue *upstream.Error
			require.True(t, errors.As(err, &ue))
			require.Equal(t, tc.wantHits, ue.Attempts)
			require.InDelta(t, tc.wantAfter.Seconds(), ue.RetryAfter.Seconds(), 2)
			require.Empty(t, fake.Unexpected())
		})
	}
}

// The backoff grows between attempts, and is jittered: never less than
// half the doubled base.
func TestRetry_BackoffGrows(t *testing.T) {
	fake, err := fakeupstream.Start(fakeupstream.Options{})
	require.NoError(t, err)
	defer fake.Close()
	times := hitTimes(fake, fakeupstream.EndpointToken)
	fake.InjectFault(fakeupstream.EndpointToken, fakeupstream.Fault{Status: 503, Times: -1})
	c := fakeClient(t, fake, func(c *upstream.Config) { c.RetryBackoff = 100 * time.Millisecond })
	_, err = c.Token(context.Background(), upstream.TokenRequest{})
	require.ErrorContains(t, err, "HTTP 503")
	at := times()
	require.Len(t, at, 3)
	require.GreaterOrEqual(t, at[1].Sub(at[0]), 50*time.Millisecond)
	require.GreaterOrEqual(t, at[2].Sub(at[1]), 100*time.Millisecond)
	require.Less(t, at[2].Sub(at[0]), 2*time.Second)
}

// Refreshes are token requests too.
func TestRetry_Refresh(t *testing.T) {
	fake, err := fakeupstream.Start(fakeupstream.Options{})
	require.NoError(t, err)
	defer fake.Close()
	cr := fake.Credentials()
	c := newClient(t, upstream.Config{
		TokenURL: fake.CameraManagerTokenURL(), CACertPEM: fake.CACertPEM(),
		ClientID: cr.CameraManagerKeyID, ClientSecret: cr.CameraManagerKeySecret, Username: cr.Username, Password: cr.Password,
		GrantType: upstream.GrantPassword, AuthMethod: upstream.AuthClientSecretBasicRaw, MaxAttempts: 3, RetryBackoff: time.Millisecond,
	})
	login, err := c.Token(context.Background(), upstream.TokenRequest{})
	require.NoError(t, err)
	fake.InjectFault(fakeupstream.EndpointCameraManagerToken, fakeupstream.Fault{Status: 503})
	_, err = c.Refresh(context.Background(), login.RefreshToken, upstream.TokenRequest{})
	require.NoError(t, err)
	require.Equal(t, 3, fake.Hits(fakeupstream.EndpointCameraManagerToken))
}

// The clientcredentials API: a list (a GET) is retried; a create never
// is, as a create that took effect and is tried again makes a second
// secret; a delete and a logout neither (a retried delete that took
// effect answers 404, and Vault retries a revocation itself).
func TestRetry_ClientCredentialsAPI(t *testing.T) {
	type call func(c *upstream.HTTPClient, fake *fakeupstream.Server) error
	var (
		listCall call = func(c *upstream.HTTPClient, _ *fakeupstream.Server) error {
			_, err := c.ListClientSecrets(context.Background())
			return err
		}
		createCall call = func(c *upstream.HTTPClient, _ *fakeupstream.Server) error {
			_, err := c.CreateClientSecret(context.Background(), "x")
			return err
		}
		deleteCall call = func(c *upstream.HTTPClient, fake *fakeupstream.Server) error {
			return c.DeleteClientSecret(context.Background(), fake.Credentials().ClientSecretID)
		}
		logoutCall call = func(c *upstream.HTTPClient, _ *fakeupstream.Server) error {
			return c.Logout(context.Background(), "some-token")
		}
	)
	cases := []struct {
		name     string
		ep       fakeupstream.Endpoint
		fault    fakeupstream.Fault
		call     call
		wantHits int
		wantErr  string
	}{
		{"list after a 503", fakeupstream.EndpointListSecrets, fakeupstream.Fault{Status: 503},
			listCall, 2, ""},
		{"list after a dropped connection", fakeupstream.EndpointListSecrets, fakeupstream.Fault{DropAfterProcessing: true},
			listCall, 2, ""},
		{"list after a 429", fakeupstream.EndpointListSecrets, fakeupstream.Fault{Status: 429, RetryAfter: "0"},
			listCall, 2, ""},
		{"create after a 503", fakeupstream.EndpointCreateSecret, fakeupstream.Fault{Status: 503},
			createCall, 1, "HTTP 503"},
		{"create after a dropped connection", fakeupstream.EndpointCreateSecret, fakeupstream.Fault{DropAfterProcessing: true},
			createCall, 1, "create client secret"},
		{"delete after a 503", fakeupstream.EndpointDeleteSecret, fakeupstream.Fault{Status: 503},
			deleteCall, 1, "HTTP 503"},
		{"logout after a 503", fakeupstream.EndpointCameraManagerLogout, fakeupstream.Fault{Status: 503},
			logoutCall, 1, "HTTP 503"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake, err := fakeupstream.Start(fakeupstream.Options{})
			require.NoError(t, err)
			defer fake.Close()
			c := fakeClient(t, fake, func(c *upstream.Config) { c.RevocationURL = fake.CameraManagerLogoutURL() })
			fake.InjectFault(tc.ep, tc.fault)
			secretsBefore := len(fake.Secrets())

			err = tc.call(c, fake)
			require.Equal(t, tc.wantHits, fake.Hits(tc.ep))
			if tc.wantErr == "" {
				require.NoError(t, err)
			} else {
				require.ErrorContains(t, err, tc.wantErr)
			}
			if tc.ep == fakeupstream.EndpointCreateSecret {
				require.LessOrEqual(t, len(fake.Secrets()), secretsBefore+1, "one create makes one secret at most")
			}
			require.Empty(t, fake.Unexpected())
		})
	}
}

// Every attempt sends the whole form again, the third as the first.
func TestRetry_EveryAttemptSendsTheWholeBody(t *testing.T) {
	var bodies []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies = append(bodies, string(b))
		if len(bodies) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"access_token":"tok","token_type":"bearer","expires_in":120}`)
	}))
	t.Cleanup(srv.Close)
	c := newClient(t, upstream.Config{TokenURL: srv.URL, CACertPEM: caPEM(srv), ClientID: "id", ClientSecret: "s",
		GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost, MaxAttempts: 3, RetryBackoff: time.Millisecond})
	_, err := c.Token(context.Background(), upstream.TokenRequest{})
	require.NoError(t, err)
	require.Len(t, bodies, 3)
	require.Contains(t, bodies[0], "grant_type=client_credentials")
	require.Equal(t, []string{bodies[0], bodies[0], bodies[0]}, bodies)
}
