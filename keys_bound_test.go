package mapsindoors

import (
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

// keySetEntrySize is the stored size of set.
func keySetEntrySize(t *testing.T, set *keySet) int {
	t.Helper()
	entry, err := logical.StorageEntryJSON(keysStoragePath, set)
	require.NoError(t, err)
	return len(entry.Value)
}

// Hourly rollovers with a 30-day grace (the review's 721 keys, a 1.46 MB
// entry) keep at most maxPreviousKeys previous keys: the oldest leave
// early, and the entry stays under half of Raft's default max_entry_size.
// Built with the real promote, one RSA key's material reused for speed
// (its size is what matters).
func TestKeys_PreviousKeysStayBoundedUnderHalfARaftEntry(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	k := mustKey(t, keyCurrent)
	set := &keySet{Keys: []signingKey{k}}
	grace := 720 * time.Hour
	var early []string
	for i := 1; i <= 720; i++ {
		now := start.Add(time.Duration(i) * time.Hour)
		next := k
		next.KeyID = strings.Repeat("x", 30) + time.Duration(i).String()
		next.State, next.PromoteAfter = keyNext, now
		set = set.clone()
		set.Keys = append(set.Keys, next)
		var dropped []string
		set, dropped = promote(set, now, grace)
		early = append(early, dropped...)
	}
	require.Equal(t, maxPreviousKeys+1, len(set.Keys), "the current key and the bound's worth of previous ones")
	require.Equal(t, 720-maxPreviousKeys, len(early), "every key over the bound was named")
	require.Equal(t, strings.Repeat("x", 30)+time.Duration(720).String(), set.find(keyCurrent).KeyID)
	for _, kept := range set.Keys[:len(set.Keys)-1] {
		require.Equal(t, keyPrevious, kept.State)
		require.True(t, kept.RetiredAt.After(start.Add(time.Duration(720-maxPreviousKeys)*time.Hour)), "the newest previous keys are kept")
	}

	// The fullest set the bound allows, with a next key carrying the
	// longest error a promotion records, stays under the limit.
	next := k
	next.State, next.LastPromotionError = keyNext, strings.Repeat("e", 4096)
	set.Keys = append(set.Keys, next)
	size := keySetEntrySize(t, set)
	t.Logf("fullest key set: %d keys, %d bytes", len(set.Keys), size)
	require.Less(t, size, maxKeySetEntry)
}

func TestKeys_SchedulesThatWouldKeepTooManyKeysAreRefused(t *testing.T) {
	for _, tc := range []struct {
		name     string
		write    map[string]any
		mentions []string
	}{
		{"hourly with a 30-day grace (the review's 721 keys)", map[string]any{"rotation_period": "1h", "previous_secret_grace": "720h"},
			[]string{`rotation_period="1h0m0s" with previous_secret_grace=720h0m0s would keep 727 previous signing keys`, "at most 60", "shorten previous_secret_grace"}},
		{"hourly cron with a 30-day grace", map[string]any{"rotation_schedule": "0 * * * *", "previous_secret_grace": "720h"},
			[]string{`rotation_schedule="0 * * * *"`, "previous_secret_grace=720h0m0s", "at most 60"}},
		{"every minute for an hour", map[string]any{"rotation_period": "1m", "previous_secret_grace": "1h"},
			[]string{"rotation_period", "previous_secret_grace"}},
		{"three times every weekday morning with a 30-day grace", map[string]any{"rotation_schedule": "0 6,7,8 * * 1-5", "previous_secret_grace": "720h"},
			[]string{"rotation_schedule", "previous_secret_grace"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newJWTEnv(t, nil)
			before := e.storedConfig(t)
			resp, err := e.write(t, "config", tc.write)
			for _, m := range tc.mentions {
				requireBadRequest(t, resp, err, m)
			}
			require.Equal(t, before.PreviousSecretGrace, e.storedConfig(t).PreviousSecretGrace, "nothing was stored")
			require.Equal(t, before.RotationPeriod, e.storedConfig(t).RotationPeriod)
		})
	}
	for _, ok := range []map[string]any{
		{"rotation_period": "24h", "previous_secret_grace": "720h"},
		{"rotation_period": "1h", "previous_secret_grace": "48h"},
		{"rotation_schedule": "0 3 * * *", "previous_secret_grace": "720h"},
		{"rotation_period": "1h", "previous_secret_grace": "720h", "disable_automated_rotation": true},
	} {
		e := newJWTEnv(t, nil)
		e.writeConfig(t, ok)
	}
	// A mount that does not sign keeps no keys: the key bound is not its
	// (its replaced secrets have a bound of their own, rotation_bounds.go).
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, nil)
	resp, err := e.write(t, "config", map[string]any{"rotation_period": "1h", "previous_secret_grace": "720h"})
	requireBadRequest(t, resp, err, "replaced client secrets")
	require.NotContains(t, resp.Data["error"], "signing keys")
}
