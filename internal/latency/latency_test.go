package latency

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRecorder_PercentilesByNearestRank(t *testing.T) {
	var r Recorder
	require.Zero(t, r.Percentile(50), "nothing recorded")

	var wg sync.WaitGroup
	for i := 100; i >= 1; i-- { // out of order, from many goroutines
		wg.Add(1)
		go func() { defer wg.Done(); r.Add(time.Duration(i) * time.Millisecond) }()
	}
	wg.Wait()
	require.Equal(t, 51*time.Millisecond, r.Percentile(50))
	require.Equal(t, 100*time.Millisecond, r.Percentile(99))
	require.Equal(t, 100*time.Millisecond, r.Percentile(100))
	require.Equal(t, 1*time.Millisecond, r.Percentile(0))
}
