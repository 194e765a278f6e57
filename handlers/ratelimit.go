package handlers

import (
	"errors"
	"net/http"
	"net/netip"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"

	"github.com/wxtoken/wxtoken/token"
	"github.com/wxtoken/wxtoken/wechat"
)

const (
	// limiterEntries bounds the clients one limiter tracks: about 300 bytes
	// each (key, bucket, list and map entry) plus half as many ghost keys,
	// so about 10 MB however many distinct clients arrive.
	limiterEntries = 32 << 10
	// netMultiplier is how much more an IPv6 /48 may do than one of its
	// /64s: a site or a small provider puts many users in one /48, but an
	// attacker holding a /48 has 65,536 /64s, each with a fresh burst.
	netMultiplier = 16
)

// keyedLimiter is a token bucket per key, kept in a fixed number of entries.
//
// The entries live in a 2Q cache (hashicorp/golang-lru): a key seen once
// sits in a small "recent" queue and moves to the "frequent" queue when it
// comes back. A flood of one-shot keys (every address of a /48, or spoofed
// addresses through a trusted proxy) only churns the recent queue, so the
// clients that keep coming stay tracked and keep their limits. A client
// that is evicted anyway comes back with a fresh burst: the bound costs at
// most one extra burst per eviction, never unbounded memory.
type keyedLimiter struct {
	mu      sync.Mutex // makes get-or-create and the two-bucket check atomic
	buckets *lru.TwoQueueCache[string, *rate.Limiter]
	limit   rate.Limit
	burst   int
	now     func() time.Time
}

func newKeyedLimiter(entries int, perSecond float64, burst int, now func() time.Time) *keyedLimiter {
	c, err := lru.New2Q[string, *rate.Limiter](entries)
	if err != nil {
		// Only a size below 1 fails, and every caller passes a constant.
		panic("handlers: limiter size: " + err.Error())
	}
	return &keyedLimiter{buckets: c, limit: rate.Limit(perSecond), burst: max(burst, 1), now: now}
}

// bucket finds or makes the bucket of key; scale widens it for aggregates.
// Call it once per key per request: a second lookup would promote a
// one-shot key into the frequent queue. The caller holds mu.
func (l *keyedLimiter) bucket(key string, scale int) *rate.Limiter {
	if b, ok := l.buckets.Get(key); ok {
		return b
	}
	b := rate.NewLimiter(l.limit*rate.Limit(scale), l.burst*scale)
	l.buckets.Add(key, b)
	return b
}

// allow takes one token from key's bucket.
func (l *keyedLimiter) allow(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.bucket(key, 1).AllowN(l.now(), 1)
}

// allowClient takes one token for the client at ip: from its own bucket
// (the address, or the /64 for IPv6) and, for IPv6, from its /48's wider
// bucket. An empty /48 refuses before the /64 is even tracked, so a flood
// from one /48 adds one entry, not one per /64.
func (l *keyedLimiter) allowClient(ip string) bool {
	host, wide := clientKeys(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	var net *rate.Limiter
	if wide != "" {
		if net = l.bucket(wide, netMultiplier); net.TokensAt(now) < 1 {
			return false
		}
	}
	if !l.bucket(host, 1).AllowN(now, 1) {
		return false
	}
	if net != nil {
		net.AllowN(now, 1)
	}
	return true
}

// bucketKey names one bucket: its key and its size relative to a client's.
type bucketKey struct {
	key   string
	scale int
}

// take takes one token from each of the buckets of keys up front and
// returns how to give them back: own, and wide unless its key is empty (a
// client's own bucket and its network's). Checking first and spending after the work
// would let concurrent requests all pass the check before any of them
// spent; a request that turns out not to count calls refund instead.
func (l *keyedLimiter) take(own, wide bucketKey) (t taken, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	t = taken{l: l, at: now}
	for _, k := range [2]bucketKey{own, wide} {
		if k.key == "" {
			continue
		}
		r := l.bucket(k.key, k.scale).ReserveN(now, 1)
		if !r.OK() || r.DelayFrom(now) > 0 {
			r.CancelAt(now)
			t.cancel()
			return taken{}, false
		}
		t.rs[t.n] = r
		t.n++
	}
	return t, true
}

// taken is what take took, to refund; the zero value refunds nothing. A
// value, not a closure over a slice, so the hot path allocates nothing for
// it.
type taken struct {
	l  *keyedLimiter
	at time.Time
	rs [2]*rate.Reservation
	n  int
}

// refund gives back what was taken. It cancels at the reservations' own
// time: x/time/rate gives back nothing for a reservation whose time to act
// has passed.
func (t taken) refund() {
	if t.l == nil {
		return
	}
	t.l.mu.Lock()
	defer t.l.mu.Unlock()
	t.cancel()
}

// cancel cancels the reservations; the caller holds the limiter's lock.
func (t taken) cancel() {
	for _, r := range t.rs[:t.n] {
		r.CancelAt(t.at)
	}
}

// takeClient is take for the client at ip: its own bucket and, for IPv6,
// its /48's.
func (l *keyedLimiter) takeClient(ip string) (taken, bool) {
	host, wide := clientKeys(ip)
	return l.take(bucketKey{host, 1}, bucketKey{wide, netMultiplier})
}

// userKey is the limiters' key of the user a session speaks for: an openid
// is unique only within its app.
func userKey(s *token.Session) string { return s.AppID + "|" + s.OpenID }

// tracked is how many keys the limiter holds.
func (l *keyedLimiter) tracked() int { return l.buckets.Len() }

// retryAfter is the wait the 429 advises: one token's refill, at least 1 s.
func (l *keyedLimiter) retryAfter() time.Duration {
	return max(time.Duration(float64(time.Second)/float64(l.limit)), time.Second)
}

// limitBy refuses a request with 429 and Retry-After when allow says no,
// and reports the refusal as the named limiter's.
func (h *server) limitBy(name string, allow func(echo.Context) bool, retry time.Duration, detail string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if !allow(c) {
				h.cfg.Observer.RateLimited(name)
				return kindRateLimited.problem(detail).withRetryAfter(retry)
			}
			return next(c)
		}
	}
}

// clientKeys are the rate-limit keys of a client address: the address for
// IPv4, the /64 for IPv6 (a client usually holds a whole /64, and each of
// its 2^64 addresses would otherwise bring a fresh burst), and for IPv6
// also the /48 around it.
func clientKeys(ip string) (host, wide string) {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return ip, ""
	}
	addr = addr.Unmap().WithZone("")
	if addr.Is4() {
		return addr.String(), ""
	}
	p64, _ := addr.Prefix(64)
	p48, _ := addr.Prefix(48)
	return p64.String(), p48.String()
}

// authFailLimiter is the budget of failed bearer authentications per
// client, built like the login limiter (see server.bearer); nil when the
// limit is off.
func (h *server) authFailLimiter() *keyedLimiter {
	if h.cfg.AuthFailRate <= 0 {
		return nil
	}
	return newKeyedLimiter(limiterEntries, h.cfg.AuthFailRate, h.cfg.AuthFailBurst, h.cfg.Now)
}

// unauthorized reports whether err is a 401 problem: a failed authentication.
func unauthorized(err error) bool {
	var p *Problem
	return errors.As(err, &p) && p.Status == http.StatusUnauthorized
}

// limitDecryptFailures limits, per user, user data that fails to decrypt,
// with the budget of failed authentications (a bucket of its own). WeChat's
// AES-CBC has no MAC, so every attempt to pass off rewritten data asks the
// key a question; a user whose data is genuine almost never fails, and one
// whose session_key was replaced should log in again anyway.
func (h *server) limitDecryptFailures() echo.MiddlewareFunc {
	if h.cfg.AuthFailRate <= 0 {
		return func(next echo.HandlerFunc) echo.HandlerFunc { return next }
	}
	l := newKeyedLimiter(limiterEntries, h.cfg.AuthFailRate, h.cfg.AuthFailBurst, h.cfg.Now)
	retry := l.retryAfter()
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			s := sessionOf(c)
			refund, ok := l.take(bucketKey{userKey(s), 1}, bucketKey{})
			if !ok {
				h.cfg.Observer.RateLimited(LimiterDecrypt)
				return kindRateLimited.problem("Too much user data that did not decrypt for this user. " +
					"Call wx.login() and /v1/login again, then send data from the new session.").withRetryAfter(retry)
			}
			err := next(c)
			if !errors.Is(err, wechat.ErrDecrypt) {
				refund.refund()
			}
			return err
		}
	}
}
