package mapsindoors

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// Attacks (and mistakes) of an operator with update on config that moves
// the mount to another account while the current one still has secrets
// Vault is to delete. What must never happen: a pending deletion or a
// stopped rotation's secret is "deleted" (or looked for) with the other
// account's credential, so that a 404 there passes for proof and the
// secret stays live, tracked by nothing; or a move that drops them
// silently.

// Was TestReview_PendingDeletionForgottenAfterTheMountMovesToAnotherAccount
// (defect 9): the move was accepted, the periodic function "deleted" S0 at
// the new account (404), logged it as deleted, and S0 stayed live.
func TestAttackConfigWriterAccount_AMoveWithPendingDeletionsIsRefusedUntilTheyAreSettled(t *testing.T) {
	e, clock, s0 := rotatedOnce(t, "1h")
	require.Len(t, e.storedConfig(t).PendingDeletions, 1)

	other := startOtherFake(t)
	before := e.storageDump(t)
	resp, err := e.write(t, "config", other.PluginConfig("mapsindoors"))
	requireBadRequest(t, resp, err, "moves the mount to another account")
	require.Contains(t, resp.Error().Error(), s0.ClientSecretID, "the message names what is left")
	require.Contains(t, resp.Error().Error(), "mapsindoors/client-secrets/pending", "and says how to settle it")
	requireQuietlyEqual(t, before, e.storageDump(t), "a refused move changes nothing")

	// The periodic function after the grace, still on the old account,
	// deletes S0 there.
	clock.Add(2 * time.Hour)
	e.rollback(t)
	require.False(t, e.fake.SecretWorks(s0.ClientSecret), "S0 is deleted at its own account")
	require.Empty(t, e.storedConfig(t).PendingDeletions)

	// Now nothing is left: the move goes through, and the new account
	// never sees a delete.
	e.writeConfig(t, other.PluginConfig("mapsindoors"))
	require.Empty(t, e.storedConfig(t).PreviousClientSecretID, "the old account's id is not shown as the new one's previous")
	clock.Add(2 * time.Hour)
	e.rollback(t)
	require.Zero(t, other.Hits(fakeupstream.EndpointDeleteSecret))
}

// The operator settles now: the pending deletions are deleted at once with
// the current credential, and then the move goes through.
func TestAttackConfigWriterAccount_SettlingNowThenMovingDeletesAtTheOldAccount(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, map[string]any{"previous_secret_grace": "24h"})
	s0 := e.fake.Credentials()
	_, err := e.rotate(t)
	require.NoError(t, err)

	settled := e.settlePending(t)
	require.Equal(t, []string{s0.ClientSecretID}, settled.Data["deleted"])
	require.False(t, e.fake.SecretWorks(s0.ClientSecret))

	other := startOtherFake(t)
	e.writeConfig(t, other.PluginConfig("mapsindoors"))
	require.Equal(t, other.Credentials().ClientSecretID, e.storedConfig(t).ClientSecretID)
}

// Or the operator takes them over (deletes them by hand): forget drops
// them from the list, named, with a warning; nothing is deleted upstream.
func TestAttackConfigWriterAccount_ForgetIsExplicitAndDeletesNothing(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, map[string]any{"previous_secret_grace": "24h"})
	s0 := e.fake.Credentials()
	_, err := e.rotate(t)
	require.NoError(t, err)

	resp, err := e.write(t, "client-secrets/pending", map[string]any{"forget": true})
	requireBadRequest(t, resp, err, "takes the ids")
	resp, err = e.write(t, "client-secrets/pending", map[string]any{"forget": true, "ids": s0.ClientSecretID})
	require.NoError(t, err)
	require.False(t, resp.IsError())
	require.Equal(t, []string{s0.ClientSecretID}, resp.Data["forgotten"])
	require.NotEmpty(t, resp.Warnings)
	require.True(t, e.fake.SecretWorks(s0.ClientSecret), "forget deletes nothing upstream")
	require.Contains(t, e.logs.String(), "pending deletions dropped without a delete upstream")
	e.writeConfig(t, startOtherFake(t).PluginConfig("mapsindoors"))
}

// A stopped rotation's secret (tracked by the WAL only) blocks a move too,
// and settling finds it by its marker at the old account.
func TestAttackConfigWriterAccount_AStoppedRotationBlocksTheMoveUntilSettled(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	crashNextCreate(e)
	_, err := e.rotate(t)
	require.Error(t, err)
	require.Len(t, e.fake.Secrets(), 2, "the create happened upstream")

	other := startOtherFake(t)
	resp, err := e.write(t, "config", other.PluginConfig("mapsindoors"))
	requireBadRequest(t, resp, err, "rotations which stopped half way")

	read := e.read(t, "client-secrets/pending")
	require.Len(t, read.Data["unsettled_rotations"], 1)
	settled := e.settlePending(t)
	require.Len(t, settled.Data["settled_rotations"], 1)
	require.Equal(t, []string{e.fake.Credentials().ClientSecretID}, secretIDs(e.fake), "the orphan is deleted at the old account")
	require.Empty(t, e.wals(t))
	e.writeConfig(t, other.PluginConfig("mapsindoors"))
}

// A pending deletion recorded for another account (kept from a config
// Vault no longer holds the credential of) is never sent to this one's
// API: not by the periodic function, not by a rotation, not by a settle.
func TestAttackConfigWriterAccount_AnotherAccountsEntryIsNeverDeletedWithThisCredential(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	stored := e.storedConfig(t)
	hourAgo := time.Now().UTC().Add(-time.Hour)
	foreign := pendingDeletion{ID: "foreign-id", ReplacedAt: hourAgo, DueAt: hourAgo,
		Account: accountID{Provider: "mapsindoors", ClientID: "someone-else"}.fingerprint()}
	stored.PendingDeletions = append(stored.PendingDeletions, foreign)
	require.NoError(t, putConfig(context.Background(), e.storage, stored))

	e.rollback(t)
	_, err := e.rotate(t)
	require.NoError(t, err)
	resp, err := e.write(t, "client-secrets/pending", map[string]any{"ids": "foreign-id"})
	requireBadRequest(t, resp, err, "another account")
	all := e.settlePending(t)
	require.Equal(t, []string{"foreign-id"}, all.Data["other_account"])

	require.Equal(t, 1, e.fake.Hits(fakeupstream.EndpointDeleteSecret), "only the replaced secret of this account was deleted")
	require.Equal(t, []pendingDeletion{foreign}, e.storedConfig(t).PendingDeletions, "the foreign entry is kept, untried")
	view := e.read(t, "client-secrets/pending").Data["pending_deletions"].([]map[string]any)
	require.Equal(t, false, view[0]["current_account"])
}

// A WAL entry of another account (the config was deleted and written for
// another account within the rollback's age) is never rolled back with
// the new credential: nothing is listed or deleted there.
func TestAttackConfigWriterAccount_ARollbackNeverLooksAtAnotherAccount(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	crashNextCreate(e)
	_, err := e.rotate(t)
	require.Error(t, err)

	resp, err := e.do(t, logical.DeleteOperation, "config", nil)
	require.NoError(t, err)
	require.NotEmpty(t, resp.Warnings, "the delete says what stays live")
	other := startOtherFake(t)
	e.writeConfig(t, other.PluginConfig("mapsindoors"))
	e.ageWALs(t)
	e.rollback(t)
	require.Zero(t, other.Hits(fakeupstream.EndpointListSecrets))
	require.Zero(t, other.Hits(fakeupstream.EndpointDeleteSecret))
	require.Contains(t, e.logs.String(), "dropping a rotation write-ahead log entry of another account")
}

// What counts as another account: a change of client_id, customer_id,
// provider or either URL (its path included: multi-tenant servers put the
// tenant there), but not a new secret, a default port written out, or a
// host's case.
func TestAccount_WhatIdentifiesAnAccount(t *testing.T) {
	base := &config{Provider: "mapsindoors", ClientID: "c", CustomerID: "k",
		TokenURL: "https://auth.mapsindoors.com/connect/token", RotationURL: "https://auth.mapsindoors.com/api/clientcredentials"}
	same := func(edit func(c *config)) bool {
		c := base.clone()
		edit(c)
		return c.account().fingerprint() == base.account().fingerprint()
	}
	require.True(t, same(func(c *config) { c.ClientSecret, c.ClientSecretID = "other", "id2" }))
	require.True(t, same(func(c *config) { c.TokenURL = "https://AUTH.mapsindoors.com:443/connect/token" }))
	require.True(t, same(func(c *config) { c.RotationURL = "" }), "the provider's default rotation_url is the one written")
	require.False(t, same(func(c *config) { c.ClientID = "c2" }))
	require.False(t, same(func(c *config) { c.CustomerID = "k2" }))
	require.False(t, same(func(c *config) { c.TokenURL = "https://auth.mapsindoors.com/realms/b/connect/token" }))
	require.False(t, same(func(c *config) { c.RotationURL = "https://auth.mapsindoors.com:8443/api/clientcredentials" }))
	require.False(t, same(func(c *config) { c.Provider = "oauth2" }))
	require.Equal(t, []string{"client_id"}, base.account().movedFields(accountID{
		Provider: "mapsindoors", ClientID: "c2", CustomerID: "k",
		TokenURL: base.account().TokenURL, RotationURL: base.account().RotationURL,
	}))
}

// Was TestReview_AConfigWriterCancelsAPendingDeletionByNamingItsID
// (review finding 5): a config writer who knows neither secret named a
// pending deletion's id as the stored client_secret_id, with a secret of
// their own (verify_connection=false): the entry was dropped as
// "readopted". When the operator wrote the current secret back, nothing
// tracked the replaced secret any more, and it stayed live upstream. Now
// the entry is only suspended while its id is the stored one, and is due
// again (with a fresh grace) once the stored id moves on.
func TestAttackConfigWriterAccount_NamingAPendingIDSuspendsItsDeletionUntilTheStoredIDMovesOn(t *testing.T) {
	e, clock, s0 := rotatedOnce(t, "1h") // S1 stored; S0 to be deleted in an hour
	s1 := e.storedConfig(t)

	// The config writer: no secret known, only S0's id (config and
	// client-secrets/pending show ids).
	e.writeConfig(t, map[string]any{"client_secret": "not-a-secret-of-anyones", "client_secret_id": s0.ClientSecretID, "verify_connection": false})
	tracked := slices.ContainsFunc(e.storedConfig(t).PendingDeletions, func(p pendingDeletion) bool { return p.ID == s0.ClientSecretID })
	// The operator puts the current secret back.
	e.writeConfig(t, map[string]any{"client_secret": s1.ClientSecret, "client_secret_id": s1.ClientSecretID})

	clock.Add(2 * time.Hour)
	e.rollback(t)
	require.False(t, e.fake.SecretWorks(s0.ClientSecret), "the replaced secret S0 was never deleted and nothing tracks it")
	require.True(t, tracked, "while S0's id was the stored one, S0 stayed pending deletion")
	require.Empty(t, e.storedConfig(t).PendingDeletions)
}

// Was TestReview_ClearingClientSecretIDWithoutTheSecretStopsEveryPendingDeletion
// (review finding 6): clearing client_secret_id needed no secret, and
// while the stored secret has no id no pending deletion is deleted at all
// (any of them may be the one the mount holds). One write without the
// secret kept every replaced secret live past its grace. Now clearing the
// id takes the secret, like any other change of it.
func TestAttackConfigWriterAccount_ClearingClientSecretIDWithoutTheSecretIsRefused(t *testing.T) {
	e, clock, s0 := rotatedOnce(t, "1h")

	stored := e.storedConfig(t)
	resp, err := e.write(t, "config", map[string]any{"client_secret_id": ""})
	afterWrite := e.storedConfig(t)
	clock.Add(2 * time.Hour)
	e.rollback(t)
	require.False(t, e.fake.SecretWorks(s0.ClientSecret), "S0 outlived its grace: a write without the secret stopped its deletion")
	requireBadRequest(t, resp, err, "clearing client_secret_id")
	require.Contains(t, resp.Error().Error(), "write client_secret", "the 400 says what to write")
	requireQuietlyEqual(t, stored, afterWrite, "the refused write stored nothing")

	// With the secret, clearing it is the operator's to do.
	e.writeConfig(t, map[string]any{"client_secret": e.storedConfig(t).ClientSecret, "client_secret_id": ""})
	require.Empty(t, e.storedConfig(t).ClientSecretID)
}

// Was TestReview_TheAccountFingerprintIgnoresAQueryThatTheRequestsCarry
// (review finding 9): the fingerprint dropped the URL's query, but every
// token and rotation request carries it, so two configs that reach
// different tenants through the query counted as one account (a move
// between them was not refused, and the first one's pending deletions
// were "deleted" logged in as the second).
func TestAttackConfigWriterAccount_AQueryTheRequestsCarryIsPartOfTheAccount(t *testing.T) {
	a := &config{Provider: "oauth2", ClientID: "c", ClientSecret: "s",
		TokenURL: "https://login.example.com/oauth2/token?tenant=a"}
	b := a.clone()
	b.TokenURL = "https://login.example.com/oauth2/token?tenant=b"
	require.NotEqual(t, a.account().fingerprint(), b.account().fingerprint(),
		"token URLs that differ in the query the token request is sent with are one account")

	reordered := a.clone()
	reordered.TokenURL = "https://LOGIN.example.com:443/oauth2/token?tenant=a"
	require.Equal(t, a.account().fingerprint(), reordered.account().fingerprint(), "host case and default port still do not count")
	two := func(raw string) string { c := a.clone(); c.TokenURL = raw; return c.account().fingerprint() }
	require.Equal(t, two("https://login.example.com/oauth2/token?tenant=a&region=eu"), two("https://login.example.com/oauth2/token?region=eu&tenant=a"),
		"the order of the query's parameters does not count")
	require.NotEqual(t, two("https://login.example.com/oauth2/token?tenant=a&region=eu"), two("https://login.example.com/oauth2/token?tenant=a&region=us"))

	// A URL without a query counts as it did before queries counted, so
	// what a mount recorded then still belongs to it.
	plain := a.clone()
	plain.TokenURL = "https://login.example.com/oauth2/token"
	require.Equal(t, accountID{Provider: "oauth2", ClientID: "c", TokenURL: "https://login.example.com/oauth2/token"}.fingerprint(),
		plain.account().fingerprint())
}

// A move while the stored secret is a suspended pending deletion says how
// to settle that one: a settle never deletes the stored secret, forget
// drops it.
func TestAttackConfigWriterAccount_AMoveNamesTheSuspendedStoredSecretAndHowToDropIt(t *testing.T) {
	e, _, s0 := rotatedOnce(t, "1h")
	e.writeConfig(t, map[string]any{"client_secret": s0.ClientSecret, "client_secret_id": s0.ClientSecretID})

	other := startOtherFake(t)
	resp, err := e.write(t, "config", other.PluginConfig("mapsindoors"))
	requireBadRequest(t, resp, err, "moves the mount to another account")
	require.Contains(t, resp.Error().Error(), s0.ClientSecretID+" is the stored secret again")
	require.Contains(t, resp.Error().Error(), "forget=true ids="+s0.ClientSecretID)

	resp, err = e.write(t, "client-secrets/pending", map[string]any{"forget": true, "ids": s0.ClientSecretID})
	require.NoError(t, err)
	require.False(t, resp != nil && resp.IsError())
	e.writeConfig(t, other.PluginConfig("mapsindoors"))
	require.True(t, e.fake.SecretWorks(s0.ClientSecret), "dropped, not deleted")
}
