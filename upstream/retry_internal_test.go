package upstream

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The retry arithmetic in the figures it promises (not read from the
// constants): Retry-After as seconds or an HTTP date, at most 24 hours.
func TestParseRetryAfter_SecondsOrDateAtMost24Hours(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	for v, want := range map[string]struct {
		d  time.Duration
		ok bool
	}{
		"":                        {0, false},
		"   ":                     {0, false},
		"abc":                     {0, false},
		"-5":                      {0, false},
		"0":                       {0, true},
		"120":                     {120 * time.Second, true},
		" 7 ":                     {7 * time.Second, true},
		"86399":                   {86399 * time.Second, true},
		"86400":                   {24 * time.Hour, true},
		"86401":                   {24 * time.Hour, true},
		"99999999999999999999999": {24 * time.Hour, true},
		now.Add(10 * time.Second).Format(http.TimeFormat): {10 * time.Second, true},
		now.Add(-time.Hour).Format(http.TimeFormat):       {0, true},
		now.Add(48 * time.Hour).Format(http.TimeFormat):   {24 * time.Hour, true},
	} {
		d, ok := parseRetryAfter(v, now)
		require.Equal(t, want.d, d, "%q", v)
		require.Equal(t, want.ok, ok, "%q", v)
	}
}

// The wait after attempt n is the base doubled n-1 times, jittered over
// its upper half; a base of 0 is 250 ms.
func TestBackoff_DoublesWithJitterInTheUpperHalf(t *testing.T) {
	for base, first := range map[time.Duration]time.Duration{0: 250 * time.Millisecond, -time.Second: 250 * time.Millisecond,
		100 * time.Millisecond: 100 * time.Millisecond} {
		c := &HTTPClient{cfg: Config{RetryBackoff: base}}
		for attempt, top := range map[int]time.Duration{1: first, 2: 2 * first, 3: 4 * first} {
			for range 50 {
				d := c.backoff(attempt)
				require.GreaterOrEqual(t, d, top/2, "attempt %d, base %s", attempt, base)
				require.LessOrEqual(t, d, top, "attempt %d, base %s", attempt, base)
			}
		}
	}
}

// Without a deadline a wait may be as long as one exchange's timeout, and
// no longer; with one, it must end before it.
func TestFits_WaitWithinTheTimeoutOrDeadline(t *testing.T) {
	require.True(t, fits(context.Background(), 5*time.Second, 5*time.Second))
	require.False(t, fits(context.Background(), 5*time.Second+1, 5*time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	require.True(t, fits(ctx, 59*time.Minute, time.Second), "the deadline, not the timeout, bounds it")
	require.False(t, fits(ctx, time.Hour+time.Second, 2*time.Hour))
}

// A request is sent again only if its body can be: none, an empty one, or
// one GetBody makes anew.
func TestRewindable_OnlyBodiesThatCanBeSentAgain(t *testing.T) {
	body := io.NopCloser(strings.NewReader("x=1"))
	require.True(t, rewindable(&http.Request{}))
	require.True(t, rewindable(&http.Request{Body: http.NoBody}))
	require.True(t, rewindable(&http.Request{Body: body, GetBody: func() (io.ReadCloser, error) { return body, nil }}))
	require.False(t, rewindable(&http.Request{Body: body}))
}

// truncate cuts on a rune boundary, and never before the text's start,
// even in bytes that are no UTF-8.
func TestTruncate_OnARuneBoundaryNeverBeforeTheStart(t *testing.T) {
	require.Equal(t, "…", truncate("\x80\x80\x80", 2))
	require.Equal(t, "a…", truncate("aé", 2))
	require.Equal(t, "aé", truncate("aé", 3))
}
