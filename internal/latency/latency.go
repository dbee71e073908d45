// Package latency records how long each operation of a benchmark took, from
// any goroutine, and reports the median and the 99th percentile.
package latency

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// Recorder is safe for concurrent use; its zero value is ready.
type Recorder struct {
	mu sync.Mutex
	d  []time.Duration
}

// Add records one operation's duration.
func (r *Recorder) Add(d time.Duration) {
	r.mu.Lock()
	r.d = append(r.d, d)
	r.mu.Unlock()
}

// Percentile returns the p-th percentile (0–100) by the nearest-rank method,
// or 0 when nothing was recorded.
func (r *Recorder) Percentile(p int) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.d) == 0 {
		return 0
	}
	slices.Sort(r.d)
	return r.d[min(len(r.d)-1, len(r.d)*p/100)]
}

// Report adds the median and the 99th percentile to b as metrics named
// p50-<unit> and p99-<unit>, counted in unit (time.Nanosecond or
// time.Microsecond). It reports nothing when nothing was recorded.
func (r *Recorder) Report(b *testing.B, unit time.Duration) {
	r.mu.Lock()
	n := len(r.d)
	r.mu.Unlock()
	if n == 0 {
		return
	}
	name := map[time.Duration]string{time.Nanosecond: "ns", time.Microsecond: "µs", time.Millisecond: "ms"}[unit]
	if name == "" {
		b.Fatalf("latency: unsupported unit %v", unit)
	}
	b.ReportMetric(float64(r.Percentile(50))/float64(unit), "p50-"+name)
	b.ReportMetric(float64(r.Percentile(99))/float64(unit), "p99-"+name)
}
