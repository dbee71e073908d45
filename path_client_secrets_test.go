package mapsindoors

import (
	"net/http"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

func TestClientSecrets_ListsWithoutValues(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	old := e.fake.Credentials()
	resp, err := e.do(t, logical.ListOperation, "client-secrets/", nil)
	require.NoError(t, err)
	require.Equal(t, []string{old.ClientSecretID}, resp.Data["keys"])
	info := resp.Data["key_info"].(map[string]any)[old.ClientSecretID].(map[string]any)
	require.Equal(t, true, info["current"])
	require.Equal(t, "initial secret", info["description"])
	require.Equal(t, old.ClientID, info["client_id"])
	require.NotEmpty(t, info["created_at"])

	read, err := e.do(t, logical.ReadOperation, "client-secrets", nil)
	require.NoError(t, err)
	require.Equal(t, resp.Data, read.Data)

	e.fake.InjectFault(fakeupstream.EndpointListSecrets, fakeupstream.Fault{Status: 403, Code: "forbidden"})
	_, err = e.do(t, logical.ListOperation, "client-secrets/", nil)
	requireCoded(t, err, http.StatusBadGateway, "HTTP 403")
}
