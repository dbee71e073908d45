package mapsindoors

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"
)

// onePutFault fails the next Put of key once armed: before the write
// takes effect, or after it (a write that commits and still reports
// failure) when committed is set.
type onePutFault struct {
	logical.Storage
	key       string
	committed bool
	armed     atomic.Bool
}

func (s *onePutFault) Put(ctx context.Context, e *logical.StorageEntry) error {
	if e.Key != s.key || !s.armed.Load() {
		return s.Storage.Put(ctx, e)
	}
	s.armed.Store(false)
	if s.committed {
		if err := s.Storage.Put(ctx, e); err != nil {
			return err
		}
	}
	return errInjected
}

// scheduledJWTMount is a private_key_jwt mount with rotation_period=1h
// on a clock the test moves, a server that trusts its JWKS by URL (so a
// rollover promotes at once), a grace that keeps replaced keys countable,
// and one storage fault ready to arm.
func scheduledJWTMount(t *testing.T, fault *onePutFault) (*testEnv, *fixedClock) {
	t.Helper()
	e := newJWTEnv(t, map[string]any{"previous_secret_grace": "10h"})
	clock := &fixedClock{t: time.Now().UTC().Truncate(time.Second)}
	e.b.now = clock.Now
	e.writeConfig(t, map[string]any{"rotation_period": "1h"}) // the schedule counts from the fixed clock
	e.useJWKSURI(t, "RS256")
	fault.Storage = e.storage
	e.storage = fault
	return e, clock
}

// One scheduled time, one rollover, whatever single write fails: the
// config's last_rotated, or the key set's write that commits but reports
// failure. The key set records when its rollover began, and a scheduled run
// consults it.
func TestKeyRollover_OneScheduledTimeRollsOverOnceWhateverWriteFails(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault *onePutFault
	}{
		{"the config write recording last_rotated fails", &onePutFault{key: configStoragePath}},
		{"the key write commits but reports failure", &onePutFault{key: keysStoragePath, committed: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, clock := scheduledJWTMount(t, tc.fault)
			clock.Add(time.Hour) // the scheduled time
			tc.fault.armed.Store(true)
			e.rollback(t)
			require.False(t, tc.fault.armed.Load(), "the one injected failure was used")
			for range 3 { // the next ticks, long before the next scheduled time
				clock.Add(time.Minute)
				e.rollback(t)
			}
			set := e.storedKeys(t)
			require.Equal(t, 2, len(set.Keys), "one scheduled time, one rollover: %v", e.keyStates(t))
			require.NotNil(t, set.find(keyPrevious))
			require.NotNil(t, set.find(keyCurrent))
			cfg := e.read(t, "config").Data
			require.Equal(t, formatTime(set.RolledOverAt), cfg["last_rotated"], "the config learns the rollover's time")
			require.Equal(t, formatTime(set.RolledOverAt.Add(time.Hour)), cfg["next_rotation"])
			require.Empty(t, cfg["last_rotation_error"])

			clock.Add(time.Hour) // the next scheduled time rolls over again
			e.rollback(t)
			require.Equal(t, 3, len(e.storedKeys(t).Keys))
		})
	}
}

// A manual rotate-root is not a scheduled time: it always rolls over.
func TestKeyRollover_ManualRotateRootIsNotHeldBackByTheRecordedRollover(t *testing.T) {
	e, _ := scheduledJWTMount(t, &onePutFault{key: configStoragePath})
	for range 2 {
		_, err := e.rotate(t)
		require.NoError(t, err)
	}
	require.Equal(t, 3, len(e.storedKeys(t).Keys))
}
