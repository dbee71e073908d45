package mapsindoors

import (
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
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

func TestRotateRoot_PreviousSecretGraceKeepsTheOldSecretUntilDueEvenAcrossARestart(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	clock := &fixedClock{t: time.Now()}
	e.b.now = clock.Now
	e.configure(t, map[string]any{"previous_secret_grace": "10m"})
	old := e.fake.Credentials()

	resp, err := e.rotate(t)
	require.NoError(t, err)
	require.Equal(t, false, resp.Data["previous_deleted"])
	require.Equal(t, clock.Now().Add(10*time.Minute).UTC().Format(time.RFC3339), resp.Data["previous_deletion_due"])
	require.True(t, e.fake.SecretWorks(old.ClientSecret), "the replaced secret works during its grace")
	pending := e.read(t, "config").Data["pending_deletions"].([]map[string]any)
	require.Len(t, pending, 1)
	require.Equal(t, old.ClientSecretID, pending[0]["id"])
	require.Equal(t, resp.Data["previous_deletion_due"], pending[0]["due_at"])

	clock.Add(9 * time.Minute)
	e.rollback(t)
	require.True(t, e.fake.SecretWorks(old.ClientSecret), "not yet due")

	// The process restarts (or another node becomes active) before it is due.
	e.b = e.newBackend(t)
	e.b.now = clock.Now
	clock.Add(2 * time.Minute)
	e.rollback(t)
	require.False(t, e.fake.SecretWorks(old.ClientSecret), "deleted once due, by whichever process runs then")
	stored := e.storedConfig(t)
	require.True(t, e.fake.SecretWorks(stored.ClientSecret))
	require.Empty(t, stored.PendingDeletions)
	require.Contains(t, e.logs.String(), "deleted a replaced client secret: mount=mapsindoors/ client_secret_id="+old.ClientSecretID)
}

func TestScheduledRotation_CronScheduleRunsOncePerScheduledTime(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	day := time.Date(2026, 11, 23, 2, 0, 0, 0, time.UTC)
	clock := &fixedClock{t: day}
	e.b.now = clock.Now
	e.configure(t, map[string]any{"rotation_schedule": "0 3 * * *"})
	require.Equal(t, "2026-11-23T03:00:00Z", e.read(t, "config").Data["next_rotation"])

	steps := []struct {
		at      time.Time
		creates int
	}{
		{day.Add(59 * time.Minute), 0},                    // 02:59, before the time
		{day.Add(time.Hour + 20*time.Second), 1},          // 03:00:20, the first tick after it
		{day.Add(time.Hour + 80*time.Second), 1},          // 03:01:20, the same scheduled time: not again
		{day.Add(5 * time.Hour), 1},                       // later that day
		{day.Add(25*time.Hour + 40*time.Second), 2},       // the next day's 03:00
		{day.Add(25*time.Hour + 100*time.Second), 2},      // and only once
		{day.Add(49*time.Hour + 5*time.Minute), 3},        // a late tick still rotates (no window)
		{day.Add(49*time.Hour + 6*time.Minute + 1), 3},    // once
		{day.Add(73*time.Hour + 0*time.Minute + 1e9), 4},  // 03:00:01 on the fourth day
		{day.Add(73*time.Hour + 59*time.Second + 1e9), 4}, // same slot
	}
	for _, s := range steps {
		clock.t = s.at
		e.rollback(t)
		require.Equal(t, s.creates, e.fake.Hits(fakeupstream.EndpointCreateSecret), "at %s", s.at.Format(time.RFC3339))
	}
	require.Equal(t, "2026-11-27T03:00:00Z", e.read(t, "config").Data["next_rotation"])
}

func TestScheduledRotation_WindowSkipsAMissedTime(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	day := time.Date(2026, 11, 23, 2, 0, 0, 0, time.UTC)
	clock := &fixedClock{t: day}
	e.b.now = clock.Now
	e.configure(t, map[string]any{"rotation_schedule": "0 3 * * *", "rotation_window": "1h"})

	clock.t = day.Add(2*time.Hour + 30*time.Minute) // 04:30: the 03:00 window closed at 04:00
	e.rollback(t)
	require.Zero(t, e.fake.Hits(fakeupstream.EndpointCreateSecret), "outside the window: wait for the next time")

	clock.t = day.Add(25*time.Hour + 50*time.Minute) // 03:50 the next day, inside its window
	e.rollback(t)
	require.Equal(t, 1, e.fake.Hits(fakeupstream.EndpointCreateSecret))
	clock.t = day.Add(25*time.Hour + 55*time.Minute)
	e.rollback(t)
	require.Equal(t, 1, e.fake.Hits(fakeupstream.EndpointCreateSecret))
}

func TestScheduledRotation_DisabledKeepsTheScheduleButDoesNotRotate(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	clock := &fixedClock{t: time.Now()}
	e.b.now = clock.Now
	e.configure(t, map[string]any{"rotation_period": "1h", "disable_automated_rotation": true})
	read := e.read(t, "config").Data
	require.Equal(t, int64(3600), read["rotation_period"])
	require.Equal(t, true, read["disable_automated_rotation"])
	require.Equal(t, "", read["next_rotation"])

	clock.Add(3 * time.Hour)
	e.rollback(t)
	require.Zero(t, e.fake.Hits(fakeupstream.EndpointCreateSecret))

	// Enabled again, the period counts from then.
	e.configure(t, map[string]any{"disable_automated_rotation": false})
	e.rollback(t)
	require.Zero(t, e.fake.Hits(fakeupstream.EndpointCreateSecret))
	clock.Add(time.Hour)
	e.rollback(t)
	require.Equal(t, 1, e.fake.Hits(fakeupstream.EndpointCreateSecret))
}

func TestConfig_AutomatedRotationFieldsAreCheckedTogether(t *testing.T) {
	cases := []struct {
		name     string
		data     map[string]any
		mentions string
	}{
		{"period and schedule", map[string]any{"rotation_period": "1h", "rotation_schedule": "0 3 * * *"}, "rotation_period and rotation_schedule exclude each other"},
		{"schedule while a period is stored", map[string]any{"rotation_schedule": "0 3 * * *"}, "rotation_period and rotation_schedule exclude each other"},
		{"not cron", map[string]any{"rotation_period": 0, "rotation_schedule": "every monday"}, "rotation_schedule \"every monday\" is not a standard 5-field cron expression"},
		{"six fields", map[string]any{"rotation_period": 0, "rotation_schedule": "0 0 3 * * *"}, "is not a standard 5-field cron expression"},
		{"window without schedule", map[string]any{"rotation_window": "2h"}, "rotation_window applies only with rotation_schedule"},
		{"short window", map[string]any{"rotation_period": 0, "rotation_schedule": "0 3 * * *", "rotation_window": "30m"}, "rotation_window must be 0 (no limit) or at least 1h0m0s"},
		{"short period", map[string]any{"rotation_period": "30s"}, "rotation_period must be 0 (off) or at least 1m0s"},
		{"negative grace", map[string]any{"previous_secret_grace": "-1s"}, "previous_secret_grace"},
		{"huge grace", map[string]any{"previous_secret_grace": "1000h"}, "previous_secret_grace must be between 0 and 720h0m0s"},
		{"schedule without a secret API", map[string]any{"rotation_period": 0, "rotation_schedule": "0 3 * * *", "customer_id": ""}, "automated rotation cannot be set: customer_id is required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, fakeupstream.Options{})
			e.configure(t, map[string]any{"rotation_period": "2h"})
			before := e.storedConfig(t)
			resp, err := e.write(t, "config", tc.data)
			requireBadRequest(t, resp, err, tc.mentions)
			requireQuietlyEqual(t, before, e.storedConfig(t), "the stored config is unchanged")
		})
	}
}

func TestConfig_ReadShowsTheRotationState(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	clock := &fixedClock{t: time.Now()}
	e.b.now = clock.Now
	e.configure(t, map[string]any{"rotation_period": "1h"})
	clock.Add(90 * time.Second)
	read := e.read(t, "config").Data
	require.Equal(t, int64(90), read["client_secret_age"])
	require.Equal(t, 0, read["consecutive_rotation_failures"])
	require.Empty(t, read["pending_deletions"])

	e.fake.InjectFault(fakeupstream.EndpointCreateSecret, fakeupstream.Fault{Status: 503})
	clock.Add(time.Hour)
	e.rollback(t)
	read = e.read(t, "config").Data
	require.Equal(t, 1, read["consecutive_rotation_failures"])
	require.Contains(t, read["last_rotation_error"], "HTTP 503")
	require.Equal(t, clock.Now().UTC().Format(time.RFC3339), read["last_rotation_error_at"])
	require.Equal(t, clock.Now().Add(time.Minute).UTC().Format(time.RFC3339), read["next_rotation_retry"])
	require.Contains(t, e.logs.String(), "[WARN]  rotation failed; the current client secret stays in use")

	clock.Add(time.Minute)
	e.rollback(t)
	read = e.read(t, "config").Data
	require.Equal(t, 0, read["consecutive_rotation_failures"])
	require.Equal(t, "", read["last_rotation_error"])
	require.Equal(t, int64(0), read["client_secret_age"])
	require.NotEqual(t, e.fake.Credentials().ClientSecretID, read["client_secret_id"])
}

func TestConfig_DeleteNamesTheReplacedSecretsStillLive(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	e.configure(t, map[string]any{"previous_secret_grace": "1h"})
	old := e.fake.Credentials()
	_, err := e.rotate(t)
	require.NoError(t, err)

	resp, err := e.do(t, logical.DeleteOperation, "config", nil)
	require.NoError(t, err)
	require.Len(t, resp.Warnings, 1)
	require.Contains(t, resp.Warnings[0], "now stay live upstream: "+old.ClientSecretID)
	require.Contains(t, e.logs.String(), "config deleted: the config held replaced client secrets")
}

func TestScheduledRotation_AConfigWriteClearsTheBackoff(t *testing.T) {
	e := newTestEnv(t, fakeupstream.Options{})
	clock := &fixedClock{t: time.Now()}
	e.b.now = clock.Now
	e.configure(t, map[string]any{"rotation_period": "1h"})
	e.fake.InjectFault(fakeupstream.EndpointCreateSecret, fakeupstream.Fault{Status: 503, Times: 3})
	for range 3 { // three failures: the next retry is 4 minutes off
		clock.Add(time.Hour)
		e.rollback(t)
	}
	require.Equal(t, 3, e.fake.Hits(fakeupstream.EndpointCreateSecret))
	require.NotEmpty(t, e.read(t, "config").Data["next_rotation_retry"])

	// The operator fixes what was wrong; the next tick tries at once.
	e.configure(t, map[string]any{"scopes": "integration"})
	require.Equal(t, "", e.read(t, "config").Data["next_rotation_retry"])
	clock.Add(time.Minute)
	e.rollback(t)
	require.Equal(t, 4, e.fake.Hits(fakeupstream.EndpointCreateSecret))
	require.Equal(t, 0, e.read(t, "config").Data["consecutive_rotation_failures"])
}
