package mapsindoors

import (
	"time"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

const (
	minSafetyMargin = 2 * time.Second
	maxSafetyMargin = time.Minute
)

// safetyMargin is how long before its token a lease ends: a tenth of the
// token's lifetime, at least 2 s (clock skew, the time the reply takes to
// reach the app) and at most a minute.
func safetyMargin(lifetime time.Duration) time.Duration {
	return min(max(lifetime/10, minSafetyMargin), maxSafetyMargin)
}

// leaseDuration is the longest lease tok can back at now: its remaining
// life less the safety margin, capped by the role's ttl when set, in whole
// seconds as Vault counts leases.
func leaseDuration(tok *upstream.Token, roleTTL time.Duration, now time.Time) time.Duration {
	lease := tok.ExpiresAt.Sub(now) - safetyMargin(tok.Lifetime())
	if roleTTL > 0 && roleTTL < lease {
		lease = roleTTL
	}
	return lease.Truncate(time.Second)
}

// rereadAllowance is how late after a token's switch a reader that was
// told the switch (static-creds' ttl, in whole seconds rounded up) comes
// back: up to 1 s of rounding plus the re-read delay of Vault Agent (ttl +
// 1 s) or the Vault Secrets Operator (ttl + 0.5 s + up to 0.15 s).
const rereadAllowance = 2 * time.Second

// tokenTimes is a role's shared token's schedule on this node.
//
// A token is current until switchAt, its expiry less the safety margin and
// a hold: the role's ttl, or half the token's lifetime when that is
// shorter or the role has none, and never less than rereadAllowance. A
// read after switchAt gets a newer token. So a token handed out before
// the switch still lives the safety margin plus the hold when its reader
// comes back at the switch, and at least the safety margin (2 s to a
// minute) more when that reader is an agent that comes back as late as
// rereadAllowance after it; and a lease never outlives its token.
//
// The next token is fetched at aheadAt, a fifth of the token's current
// span before the switch (1 s to a minute), so that no read waits for it.
// Should that fetch fail or be late, the current token is still served
// after the switch until safeUntil, when an agent told "ttl 0" still finds
// it live for the safety margin when it comes back.
type tokenTimes struct {
	switchAt  time.Time
	safeUntil time.Time
	// aheadAt is zero when the token is current too briefly to fetch the
	// next one ahead (under 2 s).
	aheadAt time.Time
	// leasable is false for a token that lives too short to back a
	// lease: it is remembered for its life, so that reads do not each ask
	// the upstream again, and every read meanwhile is refused.
	leasable bool
}

func scheduleToken(tok *upstream.Token, roleTTL time.Duration) tokenTimes {
	life := tok.Lifetime()
	margin := safetyMargin(life)
	if life-margin < time.Second {
		return tokenTimes{switchAt: tok.ExpiresAt, safeUntil: tok.ExpiresAt}
	}
	hold := life / 2
	if roleTTL > 0 && roleTTL < hold {
		hold = roleTTL
	}
	hold = max(hold, rereadAllowance)
	t := tokenTimes{
		switchAt:  tok.ExpiresAt.Add(-margin - hold),
		safeUntil: tok.ExpiresAt.Add(-margin - rereadAllowance),
		leasable:  true,
	}
	if span := t.switchAt.Sub(tok.IssuedAt); span >= 2*time.Second {
		t.aheadAt = t.switchAt.Add(-min(max(span/5, time.Second), time.Minute))
	}
	return t
}
