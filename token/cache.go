package token

import (
	"crypto/sha256"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/maypok86/otter/v2"

	"github.com/wxtoken/wxtoken/keys"
)

// DefaultCacheEntries is a sensible bound for the verified-token cache: the
// tokens of that many active users stay verified in memory, at about
// 630 bytes each (otter's node, the SHA-256 key, the claims and the
// session with typical WeChat ids; BenchmarkCacheMemory measures it), so
// about 6 MB when full. A replica serving more users at once still
// works: the entries least likely to be used again are verified again.
const DefaultCacheEntries = 10_000

// cacheKeySize is a SHA-256 digest: the cache keeps the hash of the whole
// token, never the token itself, so a heap dump of the cache holds no
// credential that could be replayed.
type cacheKeySize = [sha256.Size]byte

// cacheKey is the SHA-256 of the token. Its bytes are hashed in place:
// Sum256 only reads them, and a []byte(raw) copy put some 700 bytes of
// garbage on every bearer call.
func cacheKey(raw string) cacheKeySize {
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(raw), len(raw)))
}

// cache remembers verified tokens under the key ring that verified them.
//
// It is otter's concurrent cache (lock-free reads, S3-FIFO eviction bounded
// in entries, per-entry expiry), so a hit takes no global lock. An entry
// expires when its token does (exp plus the leeway); on a hit the service
// checks the time claims again anyway, with the verifier's own clock.
//
// The ring is the key-set signal: keys.Store hands out a new, immutable
// *keys.Ring on every reload, so a ring other than the one an entry was
// verified under means the key set may have changed (an emergency rotation
// among the possibilities). The first lookup that sees a new ring drops every
// entry, and an entry stamped with another ring is never answered, even one
// put by a verification that raced the reload.
type cache struct {
	entries *otter.Cache[cacheKeySize, *verified]
	ring    atomic.Pointer[keys.Ring]
}

func newCache(size int) *cache {
	return &cache{entries: otter.Must(&otter.Options[cacheKeySize, *verified]{
		MaximumSize: size,
		ExpiryCalculator: otter.ExpiryCreatingFunc(func(e otter.Entry[cacheKeySize, *verified]) time.Duration {
			return e.Value.ttl
		}),
	})}
}

// get answers the entry of key if it was verified under ring. Seeing a
// ring other than the last one seen drops the whole cache first.
func (c *cache) get(key cacheKeySize, ring *keys.Ring) (*verified, bool) {
	if seen := c.ring.Load(); seen != ring {
		if c.ring.CompareAndSwap(seen, ring) {
			c.entries.InvalidateAll()
		}
		return nil, false
	}
	v, ok := c.entries.GetIfPresent(key)
	if !ok {
		return nil, false
	}
	if v.ring != ring { // put by a verification that raced a reload
		c.entries.Invalidate(key)
		return nil, false
	}
	return v, true
}

// put remembers v for ttl, the time its token has left. A token with no
// time left, or verified under a ring that is no longer the live one, is
// not kept.
func (c *cache) put(key cacheKeySize, v *verified, ttl time.Duration) {
	if ttl <= 0 || c.ring.Load() != v.ring {
		return
	}
	v.ttl = ttl
	c.entries.Set(key, v)
}

// drop forgets key, for a cached token that the clock now refuses.
func (c *cache) drop(key cacheKeySize) { c.entries.Invalidate(key) }

// len is the number of entries, for tests and the memory benchmark.
func (c *cache) len() int { return c.entries.EstimatedSize() }

// CachedTokens is about how many verified tokens the cache holds now (0
// without a cache), for tests and monitoring; it never reveals which.
func (s *Service) CachedTokens() int {
	if s.cache == nil {
		return 0
	}
	return s.cache.len()
}
