package mapsindoors

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/mapsindoors/vault-plugin-secrets-mapsindoors/upstream"
)

const (
	// passwordBackoffMin and passwordBackoffMax bound how long a refused
	// password login is remembered: 10 s after the first refusal, doubling
	// with each refusal in a row, at most 10 min. Reads in between answer
	// at once and never reach the upstream, so a wrong password costs the
	// account a handful of failed logins an hour rather than one per read,
	// which is what locks accounts. Writing the config forgets it.
	passwordBackoffMin = 10 * time.Second
	passwordBackoffMax = 10 * time.Minute
)

// failureRecord is a failure remembered so that reads do not repeat it
// against the upstream until it is due again.
type failureRecord struct {
	err   error
	count int       // failures in a row
	until time.Time // no new attempt before this
}

// growing is the wait after the count-th failure in a row: first doubled
// count-1 times, at most limit.
func growing(count int, first, limit time.Duration) time.Duration {
	d := first
	for i := 1; i < count && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// backedOffError is a remembered failure, answered without calling the
// upstream. It unwraps to the upstream's error, so it is answered as that
// (a 502), with what the caller can do about it.
type backedOffError struct {
	err   error
	until time.Time
	now   time.Time
	// what is the subject of the message ("the password login"), and
	// advice what the operator can do meanwhile.
	what, advice string
	// replay marks a failure answered from memory, not one that just
	// happened: it is logged at debug, or an outage would flood the log.
	replay bool
}

func (e *backedOffError) Error() string {
	return fmt.Sprintf("%v; %s is not tried again before %s (in %s)%s",
		e.err, e.what, e.until.UTC().Format(time.RFC3339), e.until.Sub(e.now).Round(time.Second), e.advice)
}

func (e *backedOffError) Unwrap() error { return e.err }

// refusedByUpstream says whether the upstream refused what was sent (a
// 4xx other than 429) rather than failing to answer: a refused refresh
// token is dead, and a refused password will be refused again.
func refusedByUpstream(err error) bool {
	var ue *upstream.Error
	return errors.As(err, &ue) && ue.StatusCode >= 400 && ue.StatusCode < 500 && ue.StatusCode != http.StatusTooManyRequests
}
