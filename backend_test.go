package mapsindoors

import (
	"context"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

func TestFactory_NoNetworkNoStorage(t *testing.T) {
	// Vault runs the factory in metadata mode with no storage at all.
	conf := logical.TestBackendConfig()
	conf.StorageView = nil
	b, err := Factory(context.Background(), conf)
	require.NoError(t, err)
	require.Equal(t, Version, b.(*backend).RunningVersion)
	require.True(t, strings.HasPrefix(Version, "v"))
}

func TestInvalidate_ConfigDropsCachedClientAndTokens(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	e.role(t, "app", nil)
	first := e.read(t, "creds/app").Data["access_token"]
	require.Equal(t, 1, e.fake.Hits(fakeupstream.EndpointToken))

	e.b.invalidate(context.Background(), configStoragePath)
	second := e.read(t, "creds/app").Data["access_token"]
	require.Equal(t, 2, e.fake.Hits(fakeupstream.EndpointToken))
	requireNewToken(t, first, second, "a config change drops the cached token")
}
