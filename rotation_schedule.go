package mapsindoors

import (
	"context"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

const (
	// minRotationPeriod is the shortest rotation_period: Vault calls the
	// periodic function about once a minute, so nothing finer can be kept.
	minRotationPeriod = time.Minute
	// maxScheduleBackoff caps the wait between retries of a failed
	// scheduled rotation.
	maxScheduleBackoff = time.Hour
	// walRollbackMinAge is how old a rotation's WAL entry must be before
	// Vault's rollback acts on it; a rotation in flight is far younger.
	walRollbackMinAge = 10 * time.Minute
)

// scheduleSlack is how early a scheduled rotation may run. Vault's ticks
// come about a minute apart with no fixed phase: without slack, a tick a
// few milliseconds before next_rotation would put the rotation off by a
// whole tick, and a 1m period would rotate every 2 minutes.
func scheduleSlack(period time.Duration) time.Duration {
	return min(period/10, 30*time.Second)
}

// dueForRotation says whether a scheduled rotation should run at now.
func (c *config) dueForRotation(now time.Time) bool {
	return c.RotationPeriod > 0 && !now.Add(scheduleSlack(c.RotationPeriod)).Before(c.nextRotation())
}

// nextRotation is when a scheduled rotation is due; zero when none is set.
func (c *config) nextRotation() time.Time {
	if c.RotationPeriod <= 0 {
		return time.Time{}
	}
	base := c.ScheduleStart
	if c.LastRotated.After(base) {
		base = c.LastRotated
	}
	return base.Add(c.RotationPeriod)
}

// periodic runs on the active node about once a minute and rotates the
// root secret when it is due. A failure is logged and retried with a
// growing delay; it never leaves the mount without a working secret,
// because a rotation only replaces the stored secret once the new one is
// proven.
func (b *backend) periodic(ctx context.Context, req *logical.Request) error {
	if !b.WriteSafeReplicationState() {
		return nil
	}
	stored, err := getConfig(ctx, req.Storage)
	if err != nil || stored == nil || stored.RotationPeriod <= 0 {
		return err
	}
	now := b.now()
	if !stored.dueForRotation(now) {
		return nil
	}
	b.schedMu.Lock()
	retryAt := b.schedRetryAt
	b.schedMu.Unlock()
	if now.Before(retryAt) {
		return nil
	}

	due := func(c *config) bool { return c.dueForRotation(b.now()) }
	if _, err := b.rotateRootIf(ctx, req.Storage, req.MountPoint, "schedule", due); err != nil {
		b.schedMu.Lock()
		b.schedFailures++
		delay := min(time.Minute<<min(b.schedFailures-1, 10), maxScheduleBackoff)
		b.schedRetryAt = now.Add(delay)
		failures := b.schedFailures
		b.schedMu.Unlock()
		b.Logger().Error("scheduled rotation failed; the current client secret stays in use",
			"mount", req.MountPoint, "failures", failures, "retry_in", delay.String(), "error", err)
	}
	return nil
}

// rotationSucceeded clears the scheduled rotation's retry state.
func (b *backend) rotationSucceeded() {
	b.schedMu.Lock()
	defer b.schedMu.Unlock()
	b.schedFailures = 0
	b.schedRetryAt = time.Time{}
}
