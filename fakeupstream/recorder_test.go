package fakeupstream

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRecorder_KeepsWhatEachRequestCarried(t *testing.T) {
	rec := StartRecorder(http.StatusBadRequest)
	defer rec.Close()
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM([]byte(rec.CACertPEM())))
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}

	form := url.Values{"client_assertion": {"a.b.c"}, "token": {"tok"}, "grant_type": {"client_credentials"}}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, rec.URL()+"/token?x=1", strings.NewReader(form.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("id", "secret")
	resp, err := hc.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)

	got := rec.Received()
	require.Len(t, got, 1)
	require.Equal(t, "/token", got[0].Path)
	require.Equal(t, "1", got[0].Form.Get("x"))
	require.Equal(t, []string{"a.b.c"}, rec.Assertions())
	require.ElementsMatch(t, []string{"client_assertion=a.b.c", "token=tok", "Authorization: Basic aWQ6c2VjcmV0"}, rec.Credentials())
}

func TestReplayAssertion_AJunkAssertionBuysNothing(t *testing.T) {
	s, err := Start(Options{})
	require.NoError(t, err)
	defer s.Close()
	live, err := s.ReplayAssertion(t.Context(), s.Credentials().ClientID, "not.an.assertion")
	require.NoError(t, err)
	require.False(t, live)
}
