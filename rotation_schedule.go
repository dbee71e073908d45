package mapsindoors

import (
	"context"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/rotation"
)

const (
	// minRotationPeriod is the shortest rotation_period: Vault calls the
	// periodic function about once a minute, so nothing finer can be kept.
	minRotationPeriod = time.Minute
	// minRotationWindow is the shortest rotation_window, as Vault
	// Enterprise's rotation manager has it.
	minRotationWindow = time.Hour
	// maxScheduleBackoff caps the wait between retries of a failed
	// scheduled rotation.
	maxScheduleBackoff = time.Hour
	// maxPreviousSecretGrace bounds previous_secret_grace.
	maxPreviousSecretGrace = 30 * 24 * time.Hour
	// walRollbackMinAge is how old a rotation's WAL entry must be before
	// Vault's rollback acts on it; a rotation in flight is far younger.
	walRollbackMinAge = 10 * time.Minute
)

// validateSchedule checks the automated rotation fields together, with
// the meaning Vault Enterprise's rotation manager gives them.
func (c *config) validateSchedule() error {
	if c.RotationPeriod != 0 && c.RotationSchedule != "" {
		return userErrorf("rotation_period and rotation_schedule exclude each other; write rotation_period=0 or rotation_schedule=\"\" with the other")
	}
	if c.RotationPeriod < 0 || (c.RotationPeriod > 0 && c.RotationPeriod < minRotationPeriod) {
		return userErrorf("rotation_period must be 0 (off) or at least %s", minRotationPeriod)
	}
	if c.RotationSchedule != "" {
		if _, err := rotation.DefaultScheduler.Parse(c.RotationSchedule); err != nil {
			return userErrorf("rotation_schedule %q is not a standard 5-field cron expression (minute hour day-of-month month day-of-week, in UTC): %v", c.RotationSchedule, err)
		}
	}
	if c.RotationWindow != 0 {
		if c.RotationSchedule == "" {
			return userErrorf("rotation_window applies only with rotation_schedule; write rotation_window=0 or set rotation_schedule")
		}
		if c.RotationWindow < minRotationWindow {
			return userErrorf("rotation_window must be 0 (no limit) or at least %s", minRotationWindow)
		}
	}
	if c.RotationPeriod != 0 || c.RotationSchedule != "" {
		if err := canRotate(c); err != nil {
			return userErrorf("automated rotation cannot be set: %v", err)
		}
	}
	return nil
}

// scheduleSlack is how early a rotation_period rotation may run. Vault's
// ticks come about a minute apart with no fixed phase: without slack, a
// tick a few milliseconds before next_rotation would put the rotation off
// by a whole tick, and a 1m period would rotate every 2 minutes. A cron
// schedule gets none: its times are slots, and running before a slot would
// let the next tick run the same slot again.
func scheduleSlack(period time.Duration) time.Duration {
	return min(period/10, 30*time.Second)
}

// scheduleBase is what the next automated rotation is counted from.
func (c *config) scheduleBase() time.Time {
	if c.LastRotated.After(c.ScheduleStart) {
		return c.LastRotated
	}
	return c.ScheduleStart
}

// nextRotation is when an automated rotation is next due; zero when none
// is set or it is disabled.
func (c *config) nextRotation() time.Time {
	switch {
	case c.DisableAutomatedRotation:
		return time.Time{}
	case c.RotationPeriod > 0:
		return c.scheduleBase().Add(c.RotationPeriod)
	case c.RotationSchedule != "":
		sched, err := rotation.DefaultScheduler.Parse(c.RotationSchedule)
		if err != nil {
			return time.Time{}
		}
		return sched.Next(c.scheduleBase())
	}
	return time.Time{}
}

// dueForRotation says whether an automated rotation should run at now.
func (c *config) dueForRotation(now time.Time) bool {
	switch {
	case c.DisableAutomatedRotation:
		return false
	case c.RotationPeriod > 0:
		return !now.Add(scheduleSlack(c.RotationPeriod)).Before(c.nextRotation())
	case c.RotationSchedule != "":
		sched, err := rotation.DefaultScheduler.Parse(c.RotationSchedule)
		if err != nil {
			return false
		}
		from := c.scheduleBase()
		if c.RotationWindow > 0 && from.Before(now.Add(-c.RotationWindow)) {
			// Only a scheduled time within the window counts: a missed one
			// waits for the next.
			from = now.Add(-c.RotationWindow)
		}
		return !sched.Next(from).After(now)
	}
	return false
}

// periodic runs on the active node about once a minute: it deletes the
// replaced secrets whose grace has passed, and rotates the root secret
// when its schedule says so. Nothing here runs where storage cannot be
// written (a performance standby or secondary): their config may lag.
func (b *backend) periodic(ctx context.Context, req *logical.Request) error {
	if !b.WriteSafeReplicationState() {
		return nil
	}
	stored, err := getConfig(ctx, req.Storage)
	if err != nil || stored == nil {
		return err
	}
	now := b.now()
	if stored.hasDueDeletions(now) {
		b.deletePending(ctx, req.Storage, req.MountPoint)
	}
	b.settleSigningKeys(ctx, req.Storage, req.MountPoint)
	if !stored.dueForRotation(now) || now.Before(stored.Rotation.NextRetry) {
		return nil
	}
	due := func(c *config) bool {
		now := b.now()
		return c.dueForRotation(now) && !now.Before(c.Rotation.NextRetry)
	}
	// A failure is recorded in the config (with the next retry) and
	// logged by the rotation; the current secret stays in use.
	_, _ = b.rotateRootIf(ctx, req.Storage, req.MountPoint, triggerSchedule, due)
	return nil
}

// scheduleBackoff is the wait before retrying a scheduled rotation that
// failed this many times in a row: 1m, 2m, 4m, ... up to an hour.
func scheduleBackoff(failures int) time.Duration {
	return min(time.Minute<<min(max(failures-1, 0), 10), maxScheduleBackoff)
}

// rotationStateKeys are what a config read shows of rotation, beside the
// fields an operator writes.
var rotationStateKeys = []string{
	"previous_client_secret_id", "last_rotated", "next_rotation", "client_secret_age",
	"pending_deletions", "last_rotation_error", "last_rotation_error_at", "consecutive_rotation_failures", "next_rotation_retry",
}

// rotationState is what rotation keeps, for a config read: never a secret.
func (c *config) rotationState(now time.Time) map[string]any {
	age := int64(-1)
	if !c.SecretSetAt.IsZero() {
		age = int64(now.Sub(c.SecretSetAt) / time.Second)
	}
	pending := make([]map[string]any, 0, len(c.PendingDeletions))
	account := c.account().fingerprint()
	for _, p := range c.PendingDeletions {
		pending = append(pending, p.view(account))
	}
	return map[string]any{
		"previous_client_secret_id":     c.PreviousClientSecretID,
		"last_rotated":                  formatTime(c.LastRotated),
		"next_rotation":                 formatTime(c.nextRotation()),
		"client_secret_age":             age,
		"pending_deletions":             pending,
		"last_rotation_error":           c.Rotation.LastError,
		"last_rotation_error_at":        formatTime(c.Rotation.LastErrorAt),
		"consecutive_rotation_failures": c.Rotation.ConsecutiveFailures,
		"next_rotation_retry":           formatTime(c.Rotation.NextRetry),
	}
}
