package upstream_test

import (
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

// captured is what a recording token endpoint saw.
type captured struct {
	auth string
	form url.Values
}

// recordingServer answers token requests with a fixed token and records
// the last one.
func recordingServer(t *testing.T, answer func(w http.ResponseWriter)) (*httptest.Server, *atomic.Pointer[captured]) {
	t.Helper()
	last := &atomic.Pointer[captured]{}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		require.NoError(t, r.ParseForm())
		last.Store(&captured{auth: r.Header.Get("Authorization"), form: r.PostForm})
		if answer != nil {
			answer(w)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprint(w, `{"access_token":"tok","token_type":"bearer","expires_in":120,"scope":"a  b "}`)
	}))
	t.Cleanup(srv.Close)
	return srv, last
}

func caPEM(srv *httptest.Server) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
}

func newClient(t *testing.T, cfg upstream.Config) *upstream.HTTPClient {
	t.Helper()
	c, err := upstream.New(cfg)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

func TestToken_AuthMethodsAndGrants(t *testing.T) {
	const secret = "s3cr+t/with&odd=chars"
	cases := []struct {
		name     string
		cfg      upstream.Config
		req      upstream.TokenRequest
		wantAuth string
		wantForm url.Values
	}{
		{
			name: "client_secret_post",
			cfg:  upstream.Config{ClientID: "id", ClientSecret: secret, GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost},
			req:  upstream.TokenRequest{Scopes: []string{"a", "b"}},
			wantForm: url.Values{"grant_type": {"client_credentials"}, "client_id": {"id"}, "client_secret": {secret},
				"scope": {"a b"}},
		},
		{
			name:     "client_secret_basic form-encodes both parts",
			cfg:      upstream.Config{ClientID: "id", ClientSecret: secret, GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretBasic},
			wantAuth: "Basic " + basic(url.QueryEscape("id"), url.QueryEscape(secret)),
			wantForm: url.Values{"grant_type": {"client_credentials"}},
		},
		{
			name: "password grant with extra parameters",
			cfg: upstream.Config{ClientID: "client", GrantType: upstream.GrantPassword, AuthMethod: upstream.AuthClientSecretPost,
				Username: "me", Password: "pw"},
			req: upstream.TokenRequest{Scopes: []string{"integration"}, Params: url.Values{"audience": {"api"}}},
			wantForm: url.Values{"grant_type": {"password"}, "client_id": {"client"}, "username": {"me"}, "password": {"pw"},
				"scope": {"integration"}, "audience": {"api"}},
		},
		{
			name: "client credentials with extra parameters",
			cfg:  upstream.Config{ClientID: "id", ClientSecret: "s", GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost},
			req:  upstream.TokenRequest{Params: url.Values{"resource": {"https://api.example"}}},
			wantForm: url.Values{"grant_type": {"client_credentials"}, "client_id": {"id"}, "client_secret": {"s"},
				"resource": {"https://api.example"}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, last := recordingServer(t, nil)
			tc.cfg.TokenURL = srv.URL + "/token"
			tc.cfg.CACertPEM = caPEM(srv)
			before := time.Now()
			tok, err := newClient(t, tc.cfg).Token(context.Background(), tc.req)
			require.NoError(t, err)
			require.Equal(t, "tok", tok.AccessToken)
			require.Equal(t, "a b", tok.Scope, "scope is normalized")
			require.Equal(t, 120*time.Second, tok.Lifetime())
			require.False(t, tok.IssuedAt.Before(before))

			got := last.Load()
			require.Equal(t, tc.wantAuth, got.auth)
			require.Equal(t, tc.wantForm, got.form)
		})
	}
}

func basic(user, pass string) string {
	r, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "https://x", nil)
	r.SetBasicAuth(user, pass)
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Basic ")
}

func TestToken_ExpiresInForms(t *testing.T) {
	cases := []struct {
		name, body, contentType string
		want                    time.Duration
		wantErr                 string
	}{
		{"number", `{"access_token":"t","expires_in":60}`, "application/json", time.Minute, ""},
		{"string", `{"access_token":"t","expires_in":"60"}`, "application/json", time.Minute, ""},
		{"form encoded", `access_token=t&expires_in=60`, "application/x-www-form-urlencoded", time.Minute, ""},
		{"missing", `{"access_token":"t"}`, "application/json", 0, "expires_in"},
		{"negative", `{"access_token":"t","expires_in":-5}`, "application/json", 0, "expires_in"},
		{"no token", `{"expires_in":60}`, "application/json", 0, "missing access_token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := recordingServer(t, func(w http.ResponseWriter) {
				w.Header().Set("Content-Type", tc.contentType)
				_, _ = fmt.Fprint(w, tc.body)
			})
			c := newClient(t, upstream.Config{TokenURL: srv.URL, CACertPEM: caPEM(srv), ClientID: "id", ClientSecret: "s",
				GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost})
			tok, err := c.Token(context.Background(), upstream.TokenRequest{})
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, tok.Lifetime())
		})
	}
}

func TestToken_RedirectIsNotFollowed(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { elsewhere.Add(1) }))
	defer other.Close()
	srv, _ := recordingServer(t, func(w http.ResponseWriter) {
		w.Header().Set("Location", other.URL+"/steal")
		w.WriteHeader(http.StatusTemporaryRedirect)
	})
	c := newClient(t, upstream.Config{TokenURL: srv.URL, CACertPEM: caPEM(srv), ClientID: "id", ClientSecret: "s",
		GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost})
	_, err := c.Token(context.Background(), upstream.TokenRequest{})
	require.ErrorContains(t, err, "HTTP 307")
	require.Zero(t, elsewhere.Load())
}

func TestToken_BodyIsBounded(t *testing.T) {
	srv, _ := recordingServer(t, func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"access_token":"%s","expires_in":60}`, strings.Repeat("x", 2<<20))
	})
	c := newClient(t, upstream.Config{TokenURL: srv.URL, CACertPEM: caPEM(srv), ClientID: "id", ClientSecret: "s",
		GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost})
	_, err := c.Token(context.Background(), upstream.TokenRequest{})
	require.Error(t, err)
}

func TestToken_UntrustedCertificateFails(t *testing.T) {
	srv, last := recordingServer(t, nil)
	c := newClient(t, upstream.Config{TokenURL: srv.URL, ClientID: "id", ClientSecret: "s",
		GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost})
	_, err := c.Token(context.Background(), upstream.TokenRequest{})
	require.ErrorContains(t, err, "certificate")
	require.Nil(t, last.Load(), "no credentials reached an untrusted server")
}

func TestToken_ErrorNeverEchoesSecrets(t *testing.T) {
	const secret = "super-secret-value"
	srv, _ := recordingServer(t, func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = fmt.Fprintf(w, `{"error":"invalid_client","error_description":"bad secret %s\n"}`, secret)
	})
	c := newClient(t, upstream.Config{TokenURL: srv.URL + "/token?tenant=x", CACertPEM: caPEM(srv), ClientID: "id", ClientSecret: secret,
		GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost})
	_, err := c.Token(context.Background(), upstream.TokenRequest{})
	require.Error(t, err)
	require.False(t, strings.Contains(err.Error(), secret), "the error holds the secret") // not NotContains: it would print it
	require.NotContains(t, err.Error(), "tenant=x", "the query string is left out")
	require.Contains(t, err.Error(), `HTTP 400, OAuth2 error "invalid_client": bad secret [redacted]`)
	require.True(t, upstream.IsInvalidClient(err))
}

func TestToken_ContextCancels(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	srv, _ := recordingServer(t, func(http.ResponseWriter) { <-release })
	c := newClient(t, upstream.Config{TokenURL: srv.URL, CACertPEM: caPEM(srv), ClientID: "id", ClientSecret: "s",
		GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.Token(ctx, upstream.TokenRequest{})
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestCertPool(t *testing.T) {
	srv, _ := recordingServer(t, nil)
	_, err := upstream.CertPool(caPEM(srv))
	require.NoError(t, err)
	for name, bad := range map[string]string{
		"empty":      "",
		"text":       "hello",
		"trailing":   caPEM(srv) + "junk",
		"key":        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
		"broken DER": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
	} {
		_, err := upstream.CertPool(bad)
		require.Error(t, err, name)
	}
}

func TestNew_RejectsUnknownSettings(t *testing.T) {
	_, err := upstream.New(upstream.Config{TokenURL: "https://x", GrantType: "implicit", AuthMethod: upstream.AuthClientSecretPost})
	require.ErrorContains(t, err, "grant type")
	_, err = upstream.New(upstream.Config{TokenURL: "https://x", GrantType: upstream.GrantClientCredentials, AuthMethod: "none"})
	require.ErrorContains(t, err, "auth method")
	_, err = upstream.New(upstream.Config{GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost})
	require.ErrorContains(t, err, "token URL")
}

// The clientcredentials API, against the fake that follows the vendor's page.
func TestClientSecrets_CreateListDelete(t *testing.T) {
	fake, err := fakeupstream.Start(fakeupstream.Options{})
	require.NoError(t, err)
	defer fake.Close()
	creds := fake.Credentials()
	cfg := upstream.Config{
		TokenURL: fake.TokenURL(), RotationURL: fake.RotationURL(), CACertPEM: fake.CACertPEM(),
		ClientID: creds.ClientID, ClientSecret: creds.ClientSecret, CustomerID: creds.CustomerID,
		GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost,
	}
	c := newClient(t, cfg)
	ctx := context.Background()

	created, err := c.CreateClientSecret(ctx, "vault rotation")
	require.NoError(t, err)
	require.NotEmpty(t, created.ID)
	require.NotEmpty(t, created.Secret)
	require.Equal(t, "vault rotation", created.Description)
	require.True(t, fake.SecretWorks(created.Secret), "a new secret works at once")
	require.True(t, fake.SecretWorks(creds.ClientSecret), "and the old one keeps working")

	list, err := c.ListClientSecrets(ctx)
	require.NoError(t, err)
	require.Len(t, list, 2)
	for _, s := range list {
		require.True(t, s.Secret == "", "a listed secret has no value")
		require.Equal(t, creds.ClientID, s.ClientID)
		require.False(t, s.CreatedAt.IsZero())
	}

	next := cfg
	next.ClientSecret = created.Secret
	withNew := newClient(t, next)
	require.NoError(t, withNew.DeleteClientSecret(ctx, creds.ClientSecretID))
	require.False(t, fake.SecretWorks(creds.ClientSecret), "a deleted secret stops working")
	_, err = c.Token(ctx, upstream.TokenRequest{})
	require.True(t, upstream.IsInvalidClient(err), "%v", err)

	err = withNew.DeleteClientSecret(ctx, "no-such-id")
	require.ErrorContains(t, err, "HTTP 404")
	require.Empty(t, fake.Unexpected())
}

func TestClientSecrets_BoundedAndChecked(t *testing.T) {
	var big atomic.Bool
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = fmt.Fprint(w, `{"access_token":"t","expires_in":60}`)
			return
		}
		require.Equal(t, "Bearer t", r.Header.Get("Authorization"))
		if big.Load() {
			_, _ = io.WriteString(w, "["+strings.Repeat(" ", 2<<20)+"]")
			return
		}
		_, _ = io.WriteString(w, `not json`)
	}))
	defer srv.Close()
	c := newClient(t, upstream.Config{TokenURL: srv.URL + "/token", RotationURL: srv.URL + "/api", CACertPEM: caPEM(srv),
		ClientID: "id", ClientSecret: "s", CustomerID: "c", GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost})
	_, err := c.ListClientSecrets(context.Background())
	require.ErrorContains(t, err, "not the JSON")
	big.Store(true)
	_, err = c.ListClientSecrets(context.Background())
	require.ErrorContains(t, err, "larger than")
	_, err = c.CreateClientSecret(context.Background(), "x")
	require.Error(t, err)
}

func TestToken_RawBasicSendsCredentialsAsTheyAre(t *testing.T) {
	const secret = "wqe34tyyh7679jokkDa$7df46bbbbjui+b7-sdfsdfY"
	srv, last := recordingServer(t, nil)
	c := newClient(t, upstream.Config{TokenURL: srv.URL, CACertPEM: caPEM(srv), ClientID: "1DR3434KDFJLR32L53L4235J6", ClientSecret: secret,
		GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretBasicRaw})
	_, err := c.Token(context.Background(), upstream.TokenRequest{})
	require.NoError(t, err)
	// The worked example on Metapack's page.
	require.Equal(t, "Basic MURSMzQzNEtERkpMUjMyTDUzTDQyMzVKNjp3cWUzNHR5eWg3Njc5am9ra0RhJDdkZjQ2YmJiYmp1aStiNy1zZGZzZGZZ", last.Load().auth)
	require.Equal(t, url.Values{"grant_type": {"client_credentials"}}, last.Load().form)
}

func TestRefreshAndLogout_AgainstTheCameraManagerFake(t *testing.T) {
	fake, err := fakeupstream.Start(fakeupstream.Options{})
	require.NoError(t, err)
	defer fake.Close()
	cr := fake.Credentials()
	c := newClient(t, upstream.Config{
		TokenURL: fake.CameraManagerTokenURL(), RevocationURL: fake.CameraManagerLogoutURL(), CACertPEM: fake.CACertPEM(),
		ClientID: cr.CameraManagerKeyID, ClientSecret: cr.CameraManagerKeySecret, Username: cr.Username, Password: cr.Password,
		GrantType: upstream.GrantPassword, AuthMethod: upstream.AuthClientSecretBasicRaw,
	})
	ctx := context.Background()
	req := upstream.TokenRequest{Scopes: []string{"write"}}
	login, err := c.Token(ctx, req)
	require.NoError(t, err)
	require.NotEmpty(t, login.RefreshToken)

	refreshed, err := c.Refresh(ctx, login.RefreshToken, req)
	require.NoError(t, err)
	require.True(t, login.AccessToken != refreshed.AccessToken, "the refresh brought a new access token") // not NotEqual: it would print them
	require.True(t, login.RefreshToken == refreshed.RefreshToken, "the server kept the refresh token")
	require.Equal(t, "write", refreshed.Scope)
	form := fake.LastForm(fakeupstream.EndpointCameraManagerToken)
	require.Equal(t, "refresh_token", form.Get("grant_type"))
	require.Equal(t, "write", form.Get("scope"))

	require.NoError(t, c.Logout(ctx, refreshed.AccessToken))
	require.False(t, fake.TokenLive(refreshed.AccessToken))
	require.False(t, fake.RefreshTokenLive(login.RefreshToken), "logout ends the refresh token too")
	require.True(t, fake.TokenLive(login.AccessToken))
	require.NoError(t, c.Logout(ctx, refreshed.AccessToken), "a token that is already gone is logged out")

	_, err = c.Refresh(ctx, login.RefreshToken, req)
	require.ErrorContains(t, err, `token refresh to `+fake.CameraManagerTokenURL()+` failed: HTTP 400, OAuth2 error "invalid_grant"`)

	fake.InjectFault(fakeupstream.EndpointCameraManagerLogout, fakeupstream.Fault{Status: 503})
	require.ErrorContains(t, c.Logout(ctx, login.AccessToken), "logout to "+fake.CameraManagerLogoutURL()+" failed: HTTP 503")
	require.Empty(t, fake.Unexpected())
}

// The answer forms x/oauth2 reads: JSON under any content type but
// text/plain and application/x-www-form-urlencoded, which it reads as a
// form; nothing after the JSON object. What it cannot read is refused,
// saying why.
func TestToken_AnswerForms(t *testing.T) {
	cases := []struct {
		name, body, contentType string
		wantErr                 string
	}{
		{"JSON as text/plain, which x/oauth2 reads as a form", `{"access_token":"t","expires_in":60}`, "text/plain",
			"it is JSON sent as text/plain, which x/oauth2 reads as form-encoded"},
		{"JSON with no content type", ` {"access_token":"t","expires_in":60}`, "", ""},
		{"form as text/plain", `access_token=t&expires_in=60`, "text/plain; charset=utf-8", ""},
		{"JSON and then more", `{"access_token":"t","expires_in":60} {}`, "application/json", "cannot parse"},
		{"a JSON array", `[{"access_token":"t","expires_in":60}]`, "application/json", "cannot parse"},
		{"HTML", `<html>maintenance</html>`, "text/html", "cannot parse"},
		{"an error in a 200", `{"error":"invalid_scope","error_description":"no"}`, "application/json", `HTTP 200, OAuth2 error "invalid_scope": no`},
		{"access_token not a string", `{"access_token":5,"expires_in":60}`, "application/json", "missing access_token"},
		{"another field of the wrong type", `{"access_token":"t","expires_in":60,"token_type":5}`, "application/json",
			"one of its fields is not of the type RFC 6749 §5.1 gives it"},
		{"a form that does not parse", `access_token=t&expires_in=60&%zz`, "application/x-www-form-urlencoded", "not form-encoded"},
		{"no access_token in a form", `expires_in=60`, "application/x-www-form-urlencoded", "missing access_token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := recordingServer(t, func(w http.ResponseWriter) {
				w.Header().Set("Content-Type", tc.contentType)
				_, _ = fmt.Fprint(w, tc.body)
			})
			c := newClient(t, upstream.Config{TokenURL: srv.URL, CACertPEM: caPEM(srv), ClientID: "id", ClientSecret: "secret",
				GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost})
			tok, err := c.Token(context.Background(), upstream.TokenRequest{})
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, "t", tok.AccessToken)
			require.Equal(t, time.Minute, tok.Lifetime())
		})
	}
}

// RFC 6749 §6: a refresh answer without a refresh_token leaves the one
// sent in force.
func TestRefresh_KeepsTheRefreshTokenTheServerDidNotReplace(t *testing.T) {
	srv, last := recordingServer(t, nil)
	c := newClient(t, upstream.Config{TokenURL: srv.URL, CACertPEM: caPEM(srv), ClientID: "id", ClientSecret: "secret",
		GrantType: upstream.GrantPassword, AuthMethod: upstream.AuthClientSecretBasicRaw})
	tok, err := c.Refresh(context.Background(), "rt-1", upstream.TokenRequest{Scopes: []string{"write"}, Params: url.Values{"refresh_token": {"other"}}})
	require.NoError(t, err)
	require.Equal(t, "rt-1", tok.RefreshToken)
	require.Equal(t, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"rt-1"}, "scope": {"write"}}, last.Load().form,
		"an extra parameter never replaces the grant's own")
}

// Extra parameters never replace the grant's own, with client credentials
// (x/oauth2's EndpointParams, which would let grant_type be replaced and
// refuse the request for a second scope) as with the other grants.
func TestToken_ExtraParametersNeverReplaceTheGrants(t *testing.T) {
	srv, last := recordingServer(t, nil)
	c := newClient(t, upstream.Config{TokenURL: srv.URL, CACertPEM: caPEM(srv), ClientID: "id", ClientSecret: "s",
		GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost})
	_, err := c.Token(context.Background(), upstream.TokenRequest{Scopes: []string{"a"},
		Params: url.Values{"grant_type": {"password"}, "scope": {"everything"}, "client_id": {"other"}, "audience": {"api"}}})
	require.NoError(t, err)
	require.Equal(t, url.Values{"grant_type": {"client_credentials"}, "scope": {"a"}, "client_id": {"id"}, "client_secret": {"s"},
		"audience": {"api"}}, last.Load().form)
}

// x/oauth2's *RetrieveError keeps the whole answer in Body, and its text
// prints it when there is no error code: an Error never carries either,
// for any grant.
func TestToken_ErrorNeverCarriesTheAnswerBody(t *testing.T) {
	token := func(c *upstream.HTTPClient) error {
		_, err := c.Token(context.Background(), upstream.TokenRequest{})
		return err
	}
	grants := map[upstream.GrantType]func(c *upstream.HTTPClient) error{
		upstream.GrantClientCredentials: token,
		upstream.GrantPassword:          token,
		"refresh_token": func(c *upstream.HTTPClient) error {
			_, err := c.Refresh(context.Background(), "rt", upstream.TokenRequest{})
			return err
		},
	}
	answers := []struct {
		name, contentType, body string
		status                  int
		want                    string
	}{
		{"HTML with no code", "text/html", "<html>internal detail</html>", http.StatusServiceUnavailable, "HTTP 503"},
		{"JSON with a code", "application/json", `{"error":"invalid_grant","error_uri":"https://internal/detail","x":"internal detail"}`,
			http.StatusBadRequest, `HTTP 400, OAuth2 error "invalid_grant"`},
	}
	for grant, call := range grants {
		for _, a := range answers {
			t.Run(string(grant)+"/"+a.name, func(t *testing.T) {
				srv, _ := recordingServer(t, func(w http.ResponseWriter) {
					w.Header().Set("Content-Type", a.contentType)
					w.WriteHeader(a.status)
					_, _ = io.WriteString(w, a.body)
				})
				cfg := upstream.Config{TokenURL: srv.URL, CACertPEM: caPEM(srv), ClientID: "id", ClientSecret: "s",
					GrantType: upstream.GrantPassword, Username: "me", Password: "pw", AuthMethod: upstream.AuthClientSecretBasic}
				if grant == upstream.GrantClientCredentials {
					cfg.GrantType = grant
				}
				err := call(newClient(t, cfg))
				require.ErrorContains(t, err, a.want)
				require.NotContains(t, err.Error(), "internal")
				var ue *upstream.Error
				require.ErrorAs(t, err, &ue)
				require.Equal(t, a.status, ue.StatusCode)
				require.Equal(t, 1, ue.Attempts)
			})
		}
	}
}

// An answer cut short keeps its cause: x/oauth2 keeps only the text of
// why reading it failed.
func TestToken_AnswerCutShortKeepsItsCause(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	srv, _ := recordingServer(t, func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"access_token":"t",`)
		w.(http.Flusher).Flush()
		<-release
	})
	c := newClient(t, upstream.Config{TokenURL: srv.URL, CACertPEM: caPEM(srv), ClientID: "id", ClientSecret: "s",
		GrantType: upstream.GrantClientCredentials, AuthMethod: upstream.AuthClientSecretPost})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := c.Token(ctx, upstream.TokenRequest{})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	var ue *upstream.Error
	require.ErrorAs(t, err, &ue)
	require.Equal(t, http.StatusOK, ue.StatusCode)
}
