package mapsindoors

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/fakeupstream"
)

func TestScheduledRotation_FiresWhenDueAndNotEarly(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	clock := &fixedClock{t: time.Now()}
	e.b.now = clock.Now
	e.configure(t, nil)

	resp, err := e.write(t, "config", map[string]any{"rotation_period": "30s"})
	requireBadRequest(t, resp, err, "rotation_period must be 0 (off) or at least 1m0s")
	e.configure(t, map[string]any{"rotation_period": "1h"})
	cfg := e.read(t, "config").Data
	require.Equal(t, int64(3600), cfg["rotation_period"])
	require.Equal(t, clock.Now().Add(time.Hour).UTC().Format(time.RFC3339), cfg["next_rotation"])
	require.Equal(t, "", cfg["last_rotated"])

	clock.Add(59 * time.Minute)
	e.rollback(t)
	require.Zero(t, e.fake.Hits(fakeupstream.EndpointCreateSecret), "not before it is due")

	clock.Add(2 * time.Minute)
	e.rollback(t)
	require.Equal(t, 1, e.fake.Hits(fakeupstream.EndpointCreateSecret))
	stored := e.storedConfig(t)
	require.Equal(t, []string{stored.ClientSecretID}, secretIDs(e.fake))
	cfg = e.read(t, "config").Data
	require.Equal(t, clock.Now().UTC().Format(time.RFC3339), cfg["last_rotated"])
	require.Equal(t, clock.Now().Add(time.Hour).UTC().Format(time.RFC3339), cfg["next_rotation"])

	clock.Add(time.Minute)
	e.rollback(t)
	require.Equal(t, 1, e.fake.Hits(fakeupstream.EndpointCreateSecret), "once per period")
	require.Contains(t, e.logs.String(), "trigger=schedule")
}

func TestScheduledRotation_RetriesWithBackoffAndKeepsAWorkingSecret(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	clock := &fixedClock{t: time.Now()}
	e.b.now = clock.Now
	e.configure(t, map[string]any{"rotation_period": "1h"})
	old := e.fake.Credentials()
	e.fake.InjectFault(fakeupstream.EndpointCreateSecret, fakeupstream.Fault{Status: 503, Times: 2})

	clock.Add(time.Hour)
	e.rollback(t) // fails; next try in 1m
	require.Equal(t, 1, e.fake.Hits(fakeupstream.EndpointCreateSecret))
	require.True(t, e.fake.SecretWorks(old.ClientSecret))
	require.Contains(t, e.logs.String(), "rotation failed; the current client secret stays in use: mount=mapsindoors/ trigger=schedule consecutive_failures=1")

	clock.Add(30 * time.Second)
	e.rollback(t)
	require.Equal(t, 1, e.fake.Hits(fakeupstream.EndpointCreateSecret), "waits out the backoff")

	clock.Add(31 * time.Second)
	e.rollback(t) // fails again; next try in 2m
	require.Equal(t, 2, e.fake.Hits(fakeupstream.EndpointCreateSecret))

	clock.Add(90 * time.Second)
	e.rollback(t)
	require.Equal(t, 2, e.fake.Hits(fakeupstream.EndpointCreateSecret), "the backoff grows")

	clock.Add(31 * time.Second)
	e.rollback(t)
	require.Equal(t, 3, e.fake.Hits(fakeupstream.EndpointCreateSecret))
	stored := e.storedConfig(t)
	require.NotEqual(t, old.ClientSecretID, stored.ClientSecretID)
	require.True(t, e.fake.SecretWorks(stored.ClientSecret))
	require.False(t, e.fake.SecretWorks(old.ClientSecret))
	require.True(t, strings.Contains(e.logs.String(), "rotation done"))
}

func TestScheduledRotation_DueAllowsForTickJitter(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name   string
		period time.Duration
		after  time.Duration
		due    bool
	}{
		{"off", 0, 48 * time.Hour, false},
		{"1m period, tick a hair early", time.Minute, 59*time.Second + 990*time.Millisecond, true},
		{"1m period, half way", time.Minute, 30 * time.Second, false},
		{"1m period, 7s early", time.Minute, 53 * time.Second, false},
		{"1h period, a minute early", time.Hour, 59 * time.Minute, false},
		{"1h period, 20s early", time.Hour, 59*time.Minute + 40*time.Second, true},
		{"1h period, late", time.Hour, 61 * time.Minute, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &config{RotationPeriod: tc.period, ScheduleStart: t0.Add(-time.Hour), LastRotated: t0}
			require.Equal(t, tc.due, c.dueForRotation(t0.Add(tc.after)))
		})
	}
}
