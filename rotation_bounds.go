package mapsindoors

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/rotation"
)

// Bounds on what rotation keeps. Every storage entry this engine owns stays
// under maxStorageEntryBytes, half of Raft's default max_entry_size (1 MiB),
// so that a write never fails for its size: the config with its pending
// deletions is checked when it is written, with room kept for as many
// pending deletions as may be added to it; a WAL entry is a few hundred
// bytes, and there are at most maxRotationWALs of them.
const (
	maxStorageEntryBytes = 512 << 10
	// maxPendingDeletions is how many replaced secrets a mount keeps to
	// delete. A rotation that would add one more is refused with what to
	// do; scheduled rotations may fill maxScheduledPending of them, so
	// manual rotations and refused deletions have room left.
	maxPendingDeletions = 64
	maxScheduledPending = 48
	// maxPendingEntryBytes bounds one encoded pending deletion: an id of
	// at most maxSecretIDBytes, the account's fingerprint, four times and
	// a reason of at most maxDeletionReasonBytes (JSON escapes included).
	maxPendingEntryBytes = 3 << 10
	maxSecretIDBytes     = 256
	// maxDeletionReasonBytes bounds the kept reason of a failed deletion.
	maxDeletionReasonBytes = 300
	// maxRotationWALs is how many rotations that stopped before they were
	// cleaned up a mount keeps; a rotation that would start another is
	// refused until the rollback (or client-secrets/pending) settles them.
	maxRotationWALs = 8
)

// keptStateFull refuses a rotation that would keep more than the bounds
// allow. It is the caller's to settle (a 400), and a scheduled rotation
// that meets it records it and backs off like any failure.
type keptStateFull struct{ userError }

func (e keptStateFull) Unwrap() error { return e.userError }

// checkPendingBound refuses automated rotation settings under which the
// replaced secrets still in their grace would pass maxScheduledPending:
// rotation_period (or rotation_schedule) against previous_secret_grace.
// private_key_jwt mounts roll keys over, which keys.go bounds.
func (c *config) checkPendingBound() error {
	if c.usesSigningKeys() || c.DisableAutomatedRotation || c.PreviousSecretGrace <= 0 {
		return nil
	}
	var n int
	var what string
	switch {
	case c.RotationPeriod > 0:
		n = int((c.PreviousSecretGrace + c.RotationPeriod - 1) / c.RotationPeriod)
		what = "rotation_period"
	case c.RotationSchedule != "":
		n = cronRunsWithin(c.RotationSchedule, c.PreviousSecretGrace)
		what = "rotation_schedule"
	default:
		return nil
	}
	if n <= maxScheduledPending {
		return nil
	}
	return userErrorf("%s and previous_secret_grace together keep %s replaced client secrets live at once, and a mount keeps at most %d for scheduled rotations: "+
		"lengthen %s or shorten previous_secret_grace (the grace may span at most %d scheduled rotations)",
		what, atLeast(n), maxScheduledPending, what, maxScheduledPending)
}

func atLeast(n int) string {
	if n > maxScheduledPending {
		return fmt.Sprintf("more than %d", maxScheduledPending)
	}
	return fmt.Sprint(n)
}

// cronRunsWithin is the most runs of a cron schedule that fall within any
// window of length d, over the schedule's next year, counted up to one
// past maxScheduledPending (enough to refuse).
func cronRunsWithin(spec string, d time.Duration) int {
	sched, err := rotation.DefaultScheduler.Parse(spec)
	if err != nil {
		return 0 // validateSchedule refuses it
	}
	start := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC) // a fixed year: the answer does not depend on when it is asked
	end := start.AddDate(1, 0, 0).Add(d)
	var window []time.Time
	most := 0
	for t, i := sched.Next(start), 0; !t.IsZero() && t.Before(end) && i < 20000; t, i = sched.Next(t), i+1 {
		window = append(window, t)
		for len(window) > 0 && !window[0].After(t.Add(-d)) {
			window = window[1:]
		}
		most = max(most, len(window))
		if most > maxScheduledPending {
			break
		}
	}
	return most
}

// checkConfigSize refuses a config whose entry, with room for the pending
// deletions and the new secret id that rotations may still add, would pass
// maxStorageEntryBytes. It names the largest fields.
func checkConfigSize(c *config) error {
	// Encoded as putConfig stores it.
	entry, err := logical.StorageEntryJSON(configStoragePath, c)
	if err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	room := max(maxPendingDeletions-len(c.PendingDeletions), 0)*maxPendingEntryBytes + maxSecretIDBytes
	if len(entry.Value)+room <= maxStorageEntryBytes {
		return nil
	}
	return userErrorf("the config would take %d bytes of storage, and with room for the %d pending deletions rotation may add it must stay under %d: "+
		"shorten %s", len(entry.Value), maxPendingDeletions, maxStorageEntryBytes-room, strings.Join(largestFields(c), " or "))
}

// largestFields names the config's three largest text fields.
func largestFields(c *config) []string {
	type sized struct {
		name string
		n    int
	}
	var all []sized
	for _, f := range configFields {
		if f.text != nil {
			all = append(all, sized{f.name, len(*f.text(c))})
		}
	}
	all = append(all, sized{"ca_cert", len(c.CACert)})
	slices.SortStableFunc(all, func(a, b sized) int { return cmp.Compare(b.n, a.n) })
	var names []string
	for _, s := range all[:min(3, len(all))] {
		if s.n > 0 {
			names = append(names, s.name)
		}
	}
	if len(c.PendingDeletions) > 0 {
		names = append(names, "pending_deletions (settle them with client-secrets/pending)")
	}
	return names
}

// checkSecretID refuses a client secret id that pending deletions could
// not keep within their bound: too long, or with characters that no id
// has and that JSON would escape (control characters, quotes, <, >, &, \).
func checkSecretID(field, id string) error {
	if len(id) > maxSecretIDBytes {
		return userErrorf("%s is %d bytes long; at most %d are accepted", field, len(id), maxSecretIDBytes)
	}
	for _, r := range id {
		if r < 0x21 || r > 0x7e || strings.ContainsRune("\"<>&\\", r) {
			return userErrorf("%s has a character (%U) a client secret id does not have; write the id as the clientcredentials API lists it", field, r)
		}
	}
	return nil
}

// boundedReason is an error's text cut to maxDeletionReasonBytes at a rune
// boundary: what a pending deletion keeps of why it failed.
func boundedReason(err error) string {
	s := strings.ToValidUTF8(err.Error(), "?")
	if len(s) <= maxDeletionReasonBytes {
		return s
	}
	cut := maxDeletionReasonBytes - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// checkRoomToRotate refuses, before anything is created, a rotation that
// would keep more than the bounds allow: one more pending deletion than
// maxPendingDeletions, or one more unsettled write-ahead log entry than
// maxRotationWALs.
func (b *backend) checkRoomToRotate(ctx context.Context, s logical.Storage, mount string, stored *config) error {
	if n := len(stored.PendingDeletions); n >= maxPendingDeletions {
		return keptStateFull{userError{fmt.Sprintf("%d replaced client secrets are still pending deletion, the most a mount keeps, and a rotation would add one more: "+
			"delete them now with `vault write %sclient-secrets/pending` (or drop those removed by hand with forget=true and their ids), then rotate again", n, mount)}}
	}
	wals, err := rotationWALs(ctx, s)
	if err != nil {
		return err
	}
	if len(wals) >= maxRotationWALs {
		return keptStateFull{userError{fmt.Sprintf("%d rotations that stopped half way are not cleaned up yet, the most a mount keeps: Vault's rollback settles each "+
			"about %s after it began, or `vault write %sclient-secrets/pending` settles them now; then rotate again", len(wals), walRollbackMinAge, mount)}}
	}
	return nil
}
