package mapsindoors

import (
	"testing"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// settlePending deletes every pending deletion now and settles stopped
// rotations, as an operator does before moving the mount or disabling it.
func (e *testEnv) settlePending(t testing.TB) *logical.Response {
	t.Helper()
	resp, err := e.write(t, "client-secrets/pending", nil)
	require.NoError(t, err)
	require.False(t, resp.IsError(), "settle: %v", resp.Error())
	return resp
}

// The review: disabling a mount during a grace left the replaced secrets
// live, and nothing let an operator delete them before the grace ended.
// client-secrets/pending deletes them now: the named ones, or all.
func TestPendingPath_DeletesNowWithoutWaitingForTheGrace(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, map[string]any{"previous_secret_grace": "24h"})
	s0 := e.fake.Credentials()
	_, err := e.rotate(t)
	require.NoError(t, err)
	s1 := e.storedConfig(t)
	_, err = e.rotate(t)
	require.NoError(t, err)

	read := e.read(t, "client-secrets/pending")
	require.Len(t, read.Data["pending_deletions"], 2)
	require.Equal(t, e.storedConfig(t).account().fingerprint(), read.Data["account"])

	resp, err := e.write(t, "client-secrets/pending", map[string]any{"ids": s0.ClientSecretID})
	require.NoError(t, err)
	require.Equal(t, []string{s0.ClientSecretID}, resp.Data["deleted"])
	require.Empty(t, resp.Data["settled_rotations"], "naming ids settles only those")
	require.False(t, e.fake.SecretWorks(s0.ClientSecret))
	require.True(t, e.fake.SecretWorks(s1.ClientSecret), "the other one keeps its grace")

	all := e.settlePending(t)
	require.Equal(t, []string{s1.ClientSecretID}, all.Data["deleted"])
	require.False(t, e.fake.SecretWorks(s1.ClientSecret))
	require.Empty(t, e.storedConfig(t).PendingDeletions)
	require.True(t, e.fake.SecretWorks(e.storedConfig(t).ClientSecret), "the stored secret is never deleted")
}

// A failed delete is reported with its reason and kept; ids that are not
// pending are a 400 that names them; forget needs ids.
func TestPendingPath_ReportsFailuresAndRefusesWhatItCannotDo(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, map[string]any{"previous_secret_grace": "24h"})
	s0 := e.fake.Credentials()
	_, err := e.rotate(t)
	require.NoError(t, err)

	before := e.storageDump(t)
	resp, err := e.write(t, "client-secrets/pending", map[string]any{"ids": "not-pending"})
	requireBadRequest(t, resp, err, "not pending deletion: not-pending")
	resp, err = e.write(t, "client-secrets/pending", map[string]any{"ids": "bad\"id"})
	requireBadRequest(t, resp, err, "ids has a character")
	requireQuietlyEqual(t, before, e.storageDump(t), "a refused settle changed storage")

	e.fake.InjectFault(fakeupstream.EndpointDeleteSecret, fakeupstream.Fault{Status: 503, Times: 100})
	resp = e.settlePending(t)
	e.fake.ClearFaults()
	require.Contains(t, resp.Data["failed"].(map[string]any)[s0.ClientSecretID], "HTTP 503")
	require.NotEmpty(t, resp.Warnings)
	pending := e.storedConfig(t).PendingDeletions
	require.Len(t, pending, 1, "kept")
	require.Equal(t, 1, pending[0].Attempts)
	require.True(t, e.fake.SecretWorks(s0.ClientSecret))
}

// Where storage cannot be written (a performance standby or secondary) the
// write is refused before any upstream call, so Vault forwards it; the
// read works there.
func TestPendingPath_RefusedWhereStorageIsReadOnly(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{}, func(c *logical.BackendConfig) {
		c.System = &logical.StaticSystemView{ReplicationStateVal: consts.ReplicationPerformanceStandby}
	})
	e.configure(t, nil)
	_, err := e.write(t, "client-secrets/pending", nil)
	require.ErrorIs(t, err, logical.ErrReadOnly)
	require.Zero(t, e.fake.Hits(fakeupstream.EndpointToken))
	e.read(t, "client-secrets/pending")
}
