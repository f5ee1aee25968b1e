package bench

import (
	"time"
)

// Throughput runs op (which moves bytes bytes) repeatedly for at least
// minDur and returns MB/s (10^6 bytes per second) and nanoseconds per call.
func Throughput(bytes int, minDur time.Duration, op func() error) (mbps, nsPerOp float64, err error) {
	return ThroughputN(bytes, minDur, func(n int) error {
		for i := 0; i < n; i++ {
			if err := op(); err != nil {
				return err
			}
		}
		return nil
	})
}

// ThroughputN is Throughput for work that is issued in rounds: run(n) does n
// operations of bytes bytes each and returns when all are complete (an
// asynchronous engine waits for its queue to drain), so the time measured
// covers every operation counted.
func ThroughputN(bytes int, minDur time.Duration, run func(n int) error) (mbps, nsPerOp float64, err error) {
	if err := run(1); err != nil { // warm up (page faults, caches)
		return 0, 0, err
	}
	n := 1
	for {
		t0 := time.Now()
		if err := run(n); err != nil {
			return 0, 0, err
		}
		d := time.Since(t0)
		if d >= minDur || n >= 1<<30 {
			sec := d.Seconds()
			return float64(bytes) * float64(n) / sec / 1e6, float64(d.Nanoseconds()) / float64(n), nil
		}
		// Aim a little past minDur on the next try.
		if d <= 0 {
			n *= 100
		} else {
			n = int(float64(n)*1.2*float64(minDur)/float64(d)) + 1
		}
	}
}

// HostMemcpy measures the host's own copy of size bytes (Go's copy, which is
// the runtime's memmove), as the baseline for the software DSA's MEMMOVE.
func HostMemcpy(size int, minDur time.Duration) (mbps, nsPerOp float64) {
	src := make([]byte, size)
	dst := make([]byte, size)
	for i := range src {
		src[i] = byte(i)
	}
	mbps, nsPerOp, _ = Throughput(size, minDur, func() error { copy(dst, src); return nil })
	return
}
