package fakeupstream_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

func TestMetapack_RawBasicOnly(t *testing.T) {
	fake := start(t, fakeupstream.Options{})
	c := client(t, fake)
	cr := fake.Credentials()
	require.True(t, strings.Contains(cr.MetapackKeySecret, "$") && strings.Contains(cr.MetapackKeySecret, "+"), "the key secret has $ and +")
	form := url.Values{"grant_type": {"client_credentials"}}

	status, body := post(t, c, fake.MetapackTokenURL(), form, cr.MetapackKeyID, cr.MetapackKeySecret)
	require.Equal(t, 200, status)
	require.Equal(t, "bearer", body["token_type"])
	require.True(t, strings.HasSuffix(body["scope"].(string), " "), "the page's scope has a trailing space")
	require.True(t, strings.HasPrefix(body["access_token"].(string), "eyJ"))
	require.True(t, fake.TokenLive(body["access_token"].(string)))

	status, _ = post(t, c, fake.MetapackTokenURL(), form, url.QueryEscape(cr.MetapackKeyID), url.QueryEscape(cr.MetapackKeySecret))
	require.Equal(t, 401, status, "form-encoded credentials are not the raw key")
	status, _ = post(t, c, fake.MetapackTokenURL(), url.Values{"grant_type": {"password"}}, cr.MetapackKeyID, cr.MetapackKeySecret)
	require.Equal(t, 400, status)
}
