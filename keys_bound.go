package mapsindoors

import (
	"slices"
	"time"

	"github.com/hashicorp/vault/sdk/rotation"
)

// The key set is one storage entry, and an entry must stay well under
// integrated storage's max_entry_size (1 MiB by default): the engine keeps
// it under half of that. What grows is the previous keys, one per rollover
// within previous_secret_grace, so their number is bounded twice: a config
// whose schedule and grace would keep more is refused, and a rollover that
// would pass the bound anyway (rotate-root by hand, many times within one
// grace) drops the oldest previous keys before their grace ends. A previous
// key signs nothing any more, so dropping it early only shortens how long
// the server can still check assertions signed before the rollover.

const (
	// maxPreviousKeys is how many previous keys the set keeps at most.
	// With the current and the next key, and every key of the largest type
	// (rsa-2048, about 2 KB as stored), the entry stays near 130 KB.
	maxPreviousKeys = 60
	// maxKeySetEntry is the bound the entry must stay under.
	maxKeySetEntry = 512 << 10
	// scheduleHorizon is how far ahead a rotation_schedule is looked at
	// for the densest stretch of rollovers.
	scheduleHorizon = 400 * 24 * time.Hour
	// maxScheduleSteps bounds that look ahead.
	maxScheduleSteps = 20000
)

// validateKeysKept refuses a private_key_jwt config whose automated
// rollovers would keep more than maxPreviousKeys previous keys: that many
// rollovers fall within one previous_secret_grace.
func (c *config) validateKeysKept() error {
	if c.DisableAutomatedRotation || c.PreviousSecretGrace <= 0 {
		return nil
	}
	kept := c.previousKeysKept()
	if kept <= maxPreviousKeys {
		return nil
	}
	field, value := "rotation_period", c.RotationPeriod.String()
	if c.RotationSchedule != "" {
		field, value = "rotation_schedule", c.RotationSchedule
	}
	return userErrorf("%s=%q with previous_secret_grace=%s would keep %d previous signing keys, and a mount keeps at most %d "+
		"(its keys are one storage entry): rotate less often (a longer rotation_period or a sparser rotation_schedule) "+
		"or shorten previous_secret_grace, so that at most %d rollovers fall within one previous_secret_grace",
		field, value, c.PreviousSecretGrace, kept, maxPreviousKeys, maxPreviousKeys)
}

// previousKeysKept is the most previous keys the schedule keeps at once:
// the most rollovers within one grace. A rotation_period rollover may come
// early by its slack, so the period counted is the shortest one.
func (c *config) previousKeysKept() int {
	switch {
	case c.RotationPeriod > 0:
		step := c.RotationPeriod - scheduleSlack(c.RotationPeriod)
		return int(c.PreviousSecretGrace/step) + 1
	case c.RotationSchedule != "":
		sched, err := rotation.DefaultScheduler.Parse(c.RotationSchedule)
		if err != nil {
			return 0 // validateSchedule says what is wrong with it
		}
		// The densest window of one grace over the horizon: times within
		// the window are kept in a queue.
		var window []time.Time
		most := 0
		start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		t := start
		for range maxScheduleSteps {
			t = sched.Next(t)
			if t.IsZero() || t.Sub(start) > scheduleHorizon {
				break
			}
			window = append(window, t)
			window = slices.DeleteFunc(window, func(w time.Time) bool { return !w.After(t.Add(-c.PreviousSecretGrace)) })
			most = max(most, len(window))
			if most > maxPreviousKeys {
				break
			}
		}
		return most
	}
	return 0
}

// boundPrevious drops the oldest previous keys over maxPreviousKeys, and
// names them.
func boundPrevious(set *keySet) (*keySet, []string) {
	var previous []signingKey
	for _, k := range set.Keys {
		if k.State == keyPrevious {
			previous = append(previous, k)
		}
	}
	if len(previous) <= maxPreviousKeys {
		return set, nil
	}
	slices.SortStableFunc(previous, func(a, b signingKey) int { return a.RetiredAt.Compare(b.RetiredAt) })
	var dropped []string
	drop := map[string]bool{}
	for _, k := range previous[:len(previous)-maxPreviousKeys] {
		drop[k.KeyID] = true
		dropped = append(dropped, k.KeyID)
	}
	updated := set.clone()
	updated.Keys = slices.DeleteFunc(updated.Keys, func(k signingKey) bool { return k.State == keyPrevious && drop[k.KeyID] })
	return updated, dropped
}
