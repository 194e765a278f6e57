package handlers

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4/middleware"
	"golang.org/x/time/rate"
)

// floodAddr is the i-th address of a flood where every address is in its
// own /64 and its own /48: the most entries a flood can ask for.
func floodAddr(i int) string {
	return fmt.Sprintf("2001:%x:%x:1::1", 0x1000+i>>16, i&0xffff)
}

// TestLimiterMemoryIsBounded: 200,000 one-shot clients leave the limiter
// at its fixed number of entries, and a client that keeps coming during the
// flood keeps its limit: it gets its burst and then nothing, as without the
// flood. The clock stands still, so no token refills.
func TestLimiterMemoryIsBounded(t *testing.T) {
	const entries, burst, flood = 4096, 3, 40_000 // the flood is ten times the bound
	now := time.Unix(1_700_000_000, 0)
	l := newKeyedLimiter(entries, 1, burst, func() time.Time { return now })
	steady := map[string]int{"198.51.100.7": 0, "2001:db8:ffff:1::5": 0}
	for i := range flood {
		if !l.allowClient(floodAddr(i)) {
			t.Fatalf("flood client %d refused: it came once", i)
		}
		if i%500 == 0 {
			for ip := range steady {
				if l.allowClient(ip) {
					steady[ip]++
				}
			}
		}
		if n := l.tracked(); n > entries {
			t.Fatalf("after %d clients the limiter tracks %d, over its %d entries", i+1, n, entries)
		}
	}
	if n := l.tracked(); n != entries {
		t.Errorf("tracked %d after the flood, want the bound %d", n, entries)
	}
	for ip, allowed := range steady {
		if allowed != burst {
			t.Errorf("steady client %s allowed %d times during the flood, want its burst %d", ip, allowed, burst)
		}
	}
}

// TestLimiterLimitsAWholeSlash48: a /48 flooding from all its /64s is held
// to its wider bucket, and tracked as one entry plus those that got through;
// a /64 of another /48 is untouched.
func TestLimiterLimitsAWholeSlash48(t *testing.T) {
	const burst = 2
	now := time.Unix(1_700_000_000, 0)
	l := newKeyedLimiter(limiterEntries, 1, burst, func() time.Time { return now })
	allowed := 0
	for i := range 200_000 {
		if l.allowClient(fmt.Sprintf("2001:db8:7:%x::1", i&0xffff)) {
			allowed++
		}
	}
	if allowed != burst*netMultiplier {
		t.Errorf("the /48 got %d logins through, want its burst %d", allowed, burst*netMultiplier)
	}
	if n := l.tracked(); n > burst*netMultiplier+1 {
		t.Errorf("a refused /48 still tracks %d entries", n)
	}
	if !l.allowClient("2001:db8:8::1") {
		t.Error("another /48 was refused")
	}
	if l.allowClient("2001:db8:7:ffff::9") {
		t.Error("a fresh /64 of the exhausted /48 was allowed")
	}
}

// BenchmarkLimiterFloodMemory measures the heap a flood of 200,000
// distinct /64s leaves behind: echo's memory store (the limiter before)
// against the bounded one. Run with -benchtime=1x.
func BenchmarkLimiterFloodMemory(b *testing.B) {
	const flood = 200_000
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	b.Run("echo-memory-store", func(b *testing.B) {
		for b.Loop() {
			before := heap()
			store := middleware.NewRateLimiterMemoryStoreWithConfig(middleware.RateLimiterMemoryStoreConfig{
				Rate: rate.Limit(10), Burst: 20, ExpiresIn: 3 * time.Minute,
			})
			for i := range flood {
				_, _ = store.Allow(clientKey(floodAddr(i)))
			}
			b.ReportMetric(float64(heap()-before)/(1<<20), "MB")
			runtime.KeepAlive(store)
		}
	})
	b.Run("bounded-2q", func(b *testing.B) {
		for b.Loop() {
			before := heap()
			l := newKeyedLimiter(limiterEntries, 10, 20, time.Now)
			for i := range flood {
				l.allowClient(floodAddr(i))
			}
			b.ReportMetric(float64(heap()-before)/(1<<20), "MB")
			b.ReportMetric(float64(l.tracked()), "entries")
			runtime.KeepAlive(l)
		}
	})
}

func clientKey(ip string) string { h, _ := clientKeys(ip); return h }

// TestTakeIsUpFrontAndRefundable: a failure budget is taken before the work,
// so concurrent requests cannot all pass a check before any spends (the
// burst bounds how many run at once); a request that turns out not to count
// gives its token back, so successes never use the budget up.
func TestTakeIsUpFrontAndRefundable(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	l := newKeyedLimiter(16, 0.01, 3, func() time.Time { return now })
	for i := range 100 {
		took, ok := l.takeClient("192.0.2.1")
		if !ok {
			t.Fatalf("take %d refused although every earlier one was refunded", i)
		}
		took.refund()
	}
	var held int
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range 20 {
		wg.Go(func() {
			if _, ok := l.takeClient("192.0.2.1"); ok {
				mu.Lock()
				held++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if held != 3 {
		t.Errorf("%d of 20 concurrent takes succeeded with a burst of 3", held)
	}
	if _, ok := l.takeClient("2001:db8:1:2::1"); !ok {
		t.Error("another client was refused")
	}
}
