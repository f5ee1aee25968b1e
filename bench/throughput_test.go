package bench

import (
	"errors"
	"testing"
	"time"
)

func TestThroughput(t *testing.T) {
	calls := 0
	mbps, ns, err := Throughput(1000, 20*time.Millisecond, func() error {
		calls++
		time.Sleep(time.Millisecond)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// About 1 ms per call of 1000 bytes: about 1 MB/s, never faster than 1000 bytes per ms.
	if calls < 10 || ns < 1e6 || mbps > 1.0 || mbps < 0.1 {
		t.Fatalf("calls %d, %.0f ns/op, %.2f MB/s", calls, ns, mbps)
	}
	boom := errors.New("boom")
	if _, _, err := Throughput(1, time.Millisecond, func() error { return boom }); err != boom {
		t.Fatal("error lost")
	}
	if m, _ := HostMemcpy(4096, 5*time.Millisecond); m <= 0 {
		t.Fatal("no memcpy rate")
	}
}
