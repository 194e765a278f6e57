package token

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/keys"
)

// These tests look inside the cache (its size, its entries) to tell a hit
// from a miss; everything they compare is what Verify answers.

const (
	tIssuer = "https://auth.example.test"
	tApp    = "wx1111222233334444"
	tSK     = "tiihtNczf5v6AKRyjwEUhQ=="
	tTTL    = 2 * time.Hour
	tLeeway = 30 * time.Second
)

// liveKeys is a KeySource whose ring the test swaps, as keys.Store does on
// a reload.
type liveKeys struct{ ring atomic.Pointer[keys.Ring] }

func (l *liveKeys) Current() *keys.Ring { return l.ring.Load() }

// testClock is a settable clock, safe to read from many goroutines.
type testClock struct{ unix atomic.Int64 }

func (c *testClock) now() time.Time  { return time.Unix(c.unix.Load(), 0) }
func (c *testClock) set(t time.Time) { c.unix.Store(t.Unix()) }
func newTestClock(t time.Time) *testClock {
	c := &testClock{}
	c.set(t)
	return c
}

type rig struct {
	dir    *keys.Dir
	keys   *liveKeys
	clock  *testClock
	cached *Service // the service under test, with a cache
	plain  *Service // the same keys and clock without a cache: the reference answer
}

func newRig(t testing.TB, entries int) *rig {
	t.Helper()
	d := keys.NewDir(filepath.Join(t.TempDir(), "keys"), 3*time.Hour, nil)
	if _, err := d.Init(keys.ES256); err != nil {
		t.Fatal(err)
	}
	r := &rig{dir: d, keys: &liveKeys{}, clock: newTestClock(time.Unix(1_800_000_000, 0))}
	r.reload(t)
	mk := func(n int) *Service {
		s, err := New(Config{Issuer: tIssuer, TTL: tTTL, Leeway: tLeeway, Audiences: []string{tApp},
			Keys: r.keys, Now: r.clock.now, CacheEntries: n})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	r.cached, r.plain = mk(entries), mk(0)
	return r
}

// reload loads the directory into a new ring, as keys.Store.Reload does.
func (r *rig) reload(t testing.TB) {
	t.Helper()
	ring, err := r.dir.Load()
	if err != nil {
		t.Fatal(err)
	}
	r.keys.ring.Store(ring)
}

func (r *rig) issue(t testing.TB, openid string) string {
	t.Helper()
	issued, err := r.cached.Issue(context.Background(), Identity{AppID: tApp, OpenID: openid, UnionID: "oUnion" + openid, SessionKey: tSK})
	if err != nil {
		t.Fatal(err)
	}
	return issued.Token
}

// sameAnswer fails unless both services answer raw alike: equal sessions,
// or errors with the same text and the same ErrInvalid/ErrExpired kinds.
func sameAnswer(t testing.TB, got, want *Session, gotErr, wantErr error) {
	t.Helper()
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("cached answer err=%v, fresh verification err=%v", gotErr, wantErr)
	}
	if wantErr != nil {
		if gotErr.Error() != wantErr.Error() ||
			errors.Is(gotErr, ErrInvalid) != errors.Is(wantErr, ErrInvalid) ||
			errors.Is(gotErr, ErrExpired) != errors.Is(wantErr, ErrExpired) {
			t.Fatalf("cached error %q, fresh error %q", gotErr, wantErr)
		}
		return
	}
	if *got != *want {
		t.Fatalf("cached session %+v, fresh session %+v", got, want)
	}
}

func TestCacheHitAnswersLikeVerification(t *testing.T) {
	r := newRig(t, 100)
	tok := r.issue(t, "oUser1")
	ctx := context.Background()

	first, err := r.cached.Verify(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if n := r.cached.cache.len(); n != 1 {
		t.Fatalf("after a successful verification the cache holds %d entries, want 1", n)
	}
	// A hit answers from the entry: mark it and see the mark come back.
	// (Only a test can reach the entry; nothing else changes it.)
	v, ok := r.cached.cache.get(cacheKey(tok), r.keys.Current())
	if !ok {
		t.Fatal("the verified token is not in the cache")
	}
	v.sess.ID = "answered-from-cache"
	hit, err := r.cached.Verify(ctx, tok)
	if err != nil || hit.ID != "answered-from-cache" {
		t.Fatalf("second Verify = %+v, %v: not answered from the cache", hit, err)
	}
	v.sess.ID = first.ID

	// Changing the answer must not change the entry.
	hit.OpenID = "someone-else"
	again, err := r.cached.Verify(ctx, tok)
	fresh, freshErr := r.plain.Verify(ctx, tok)
	sameAnswer(t, again, fresh, err, freshErr)
	if again.SessionKey.Reveal() != tSK || again.UnionID != "oUnionoUser1" {
		t.Fatalf("cached session %+v", again)
	}
}

func TestCacheKeepsNoRawTokenAndNoFailure(t *testing.T) {
	r := newRig(t, 100)
	ctx := context.Background()
	tok := r.issue(t, "oUser1")
	forged := tok[:len(tok)-4] + "AAAA"
	for range 3 {
		if _, err := r.cached.Verify(ctx, forged); !errors.Is(err, ErrInvalid) {
			t.Fatalf("forged token: %v", err)
		}
	}
	if n := r.cached.cache.len(); n != 0 {
		t.Fatalf("a failed verification left %d entries", n)
	}
	if _, err := r.cached.Verify(ctx, tok); err != nil {
		t.Fatal(err)
	}
	for k := range r.cached.cache.entries.Keys() {
		if k != cacheKey(tok) {
			t.Fatalf("cache key %x is not the SHA-256 of the token", k)
		}
	}
}

// TestCacheTimeChecksMatchVerification: a token cached at issue time and
// then used at each instant around its iat and exp (with the 30 s leeway)
// gets exactly what a fresh verification gets at that instant, and a
// refused entry is dropped.
func TestCacheTimeChecksMatchVerification(t *testing.T) {
	r := newRig(t, 100)
	ctx := context.Background()
	iat := r.clock.now()
	tok := r.issue(t, "oUser1")
	exp := iat.Add(tTTL)
	for _, tc := range []struct {
		name    string
		at      time.Time
		refused bool
	}{
		{"at iat", iat, false},
		{"clock back past iat by the leeway", iat.Add(-tLeeway - time.Second), true},
		{"clock back within the leeway", iat.Add(-tLeeway + time.Second), false},
		{"just before exp", exp.Add(-time.Second), false},
		{"at exp", exp, false},
		{"within the leeway after exp", exp.Add(tLeeway - time.Second), false},
		{"at exp plus the leeway", exp.Add(tLeeway), true},
		{"past exp plus the leeway", exp.Add(tLeeway + time.Second), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r.clock.set(iat)
			if _, err := r.cached.Verify(ctx, tok); err != nil {
				t.Fatal(err)
			}
			if r.cached.cache.len() != 1 {
				t.Fatal("not cached")
			}
			r.clock.set(tc.at)
			got, err := r.cached.Verify(ctx, tok)
			want, wantErr := r.plain.Verify(ctx, tok)
			sameAnswer(t, got, want, err, wantErr)
			if (err != nil) != tc.refused {
				t.Fatalf("refused=%v (%v), want %v", err != nil, err, tc.refused)
			}
			if _, still := r.cached.cache.entries.GetIfPresent(cacheKey(tok)); still == tc.refused {
				t.Fatalf("entry kept=%v after refused=%v", still, tc.refused)
			}
		})
	}
}

// TestCacheEntryLivesNoLongerThanItsToken: the entry's expiry is the
// token's exp plus the leeway, counted from when it was verified.
func TestCacheEntryLivesNoLongerThanItsToken(t *testing.T) {
	r := newRig(t, 100)
	tok := r.issue(t, "oUser1")
	r.clock.set(r.clock.now().Add(time.Hour)) // verified an hour after issue
	if _, err := r.cached.Verify(context.Background(), tok); err != nil {
		t.Fatal(err)
	}
	e, ok := r.cached.cache.entries.GetEntryQuietly(cacheKey(tok))
	if !ok {
		t.Fatal("not cached")
	}
	if want := tTTL - time.Hour + tLeeway; e.Value.ttl != want || e.ExpiresAfter() > want {
		t.Fatalf("entry lives %v (expires after %v), want %v", e.Value.ttl, e.ExpiresAfter(), want)
	}
	// A token whose exp plus leeway has already passed is never kept, even
	// if it was valid a moment ago.
	c := newCache(10)
	ring := r.keys.Current()
	c.ring.Store(ring)
	c.put(cacheKey("x"), &verified{ring: ring}, 0)
	if c.len() != 0 {
		t.Fatal("an entry with no time left was kept")
	}
}

// TestCacheDroppedWhenKeysChange: a reload (a new ring) empties the cache
// at once; after an emergency rotation the cached token is refused on its
// very next use, after a normal one it verifies again from scratch.
func TestCacheDroppedWhenKeysChange(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		emergency bool
	}{{"rotate", false}, {"rotate --now", true}} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, 100)
			tok := r.issue(t, "oUser1")
			for range 2 {
				if _, err := r.cached.Verify(ctx, tok); err != nil {
					t.Fatal(err)
				}
			}
			if err := r.dir.Rotate(tc.emergency); err != nil {
				t.Fatal(err)
			}
			r.reload(t)
			got, err := r.cached.Verify(ctx, tok)
			want, wantErr := r.plain.Verify(ctx, tok)
			sameAnswer(t, got, want, err, wantErr)
			if tc.emergency != (err != nil) {
				t.Fatalf("after %s: err=%v", tc.name, err)
			}
			wantLen := 1
			if tc.emergency {
				wantLen = 0
			}
			if n := r.cached.cache.len(); n != wantLen {
				t.Fatalf("after %s the cache holds %d entries, want %d", tc.name, n, wantLen)
			}
		})
	}
}

// TestCacheRefusesEntriesOfAnotherRing: an entry put under a ring that is
// no longer live (a verification racing a reload) is never answered.
func TestCacheRefusesEntriesOfAnotherRing(t *testing.T) {
	r := newRig(t, 100)
	old := r.keys.Current()
	r.reload(t)
	live := r.keys.Current()
	c := newCache(10)
	if _, ok := c.get(cacheKey("t"), live); ok {
		t.Fatal("empty cache hit")
	}
	c.entries.Set(cacheKey("t"), &verified{ring: old, ttl: time.Hour})
	if _, ok := c.get(cacheKey("t"), live); ok {
		t.Fatal("an entry of the old ring was answered under the new one")
	}
	if c.len() != 0 {
		t.Fatal("the stale entry was kept")
	}
	c.put(cacheKey("t"), &verified{ring: old}, time.Hour)
	if c.len() != 0 {
		t.Fatal("put kept an entry of a ring that is not live")
	}
}

// TestCacheIsBounded: more distinct tokens than entries leave at most the
// bound in memory, and every token, evicted or not, still verifies.
func TestCacheIsBounded(t *testing.T) {
	const bound, tokens = 50, 400
	r := newRig(t, bound)
	ctx := context.Background()
	toks := make([]string, tokens)
	for i := range toks {
		toks[i] = r.issue(t, fmt.Sprintf("oUser%04d", i))
		if _, err := r.cached.Verify(ctx, toks[i]); err != nil {
			t.Fatal(err)
		}
	}
	r.cached.cache.entries.CleanUp()
	if n := r.cached.cache.len(); n > bound {
		t.Fatalf("%d entries, bound %d", n, bound)
	}
	evicted := 0
	for i, tok := range toks {
		if _, ok := r.cached.cache.entries.GetIfPresent(cacheKey(tok)); !ok {
			evicted++
		}
		sess, err := r.cached.Verify(ctx, tok)
		if err != nil || sess.OpenID != fmt.Sprintf("oUser%04d", i) {
			t.Fatalf("token %d after eviction: %+v %v", i, sess, err)
		}
	}
	if evicted < tokens-bound {
		t.Fatalf("only %d of %d tokens were evicted", evicted, tokens)
	}
}

// TestCacheConcurrentUse: many goroutines verify a set of tokens (cached
// and not) while the ring is reloaded under them; every answer is right.
// Run with -race.
func TestCacheConcurrentUse(t *testing.T) {
	r := newRig(t, 64)
	ctx := context.Background()
	toks := make([]string, 32)
	for i := range toks {
		toks[i] = r.issue(t, fmt.Sprintf("oUser%04d", i))
	}
	forged := toks[0][:len(toks[0])-4] + "AAAA"
	var wrong atomic.Int32
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				k := (g*7 + i) % len(toks)
				sess, err := r.cached.Verify(ctx, toks[k])
				if err != nil || sess.OpenID != fmt.Sprintf("oUser%04d", k) || sess.SessionKey.Reveal() != tSK {
					wrong.Add(1)
				}
				if _, err := r.cached.Verify(ctx, forged); err == nil {
					wrong.Add(1)
				}
			}
		})
	}
	wg.Go(func() {
		for range 20 { // same keys, new ring: the cache is dropped each time
			ring, err := r.dir.Load()
			if err != nil {
				wrong.Add(1)
				continue
			}
			r.keys.ring.Store(ring)
		}
	})
	wg.Wait()
	if n := wrong.Load(); n != 0 {
		t.Fatalf("%d wrong answers under concurrency", n)
	}
}

// TestLookupAnswersOnlyWhatVerifyCached: Lookup, which checks no signature,
// answers a token only after Verify proved it, and only while Verify would
// still answer it from the cache: not once it expired, nor after an
// emergency rotation, nor without a cache.
func TestLookupAnswersOnlyWhatVerifyCached(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, 100)
	tok := r.issue(t, "oUser1")
	if _, ok := r.cached.Lookup(tok); ok {
		t.Fatal("Lookup answered a token never verified")
	}
	want, err := r.cached.Verify(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := r.cached.Lookup(tok)
	if !ok || *got != *want {
		t.Fatalf("Lookup after Verify = %+v, %v; want %+v", got, ok, want)
	}
	if _, ok := r.cached.Lookup(tok[:len(tok)-2] + "AA"); ok {
		t.Fatal("Lookup answered another token string")
	}
	if _, ok := r.plain.Lookup(tok); ok {
		t.Fatal("Lookup answered without a cache")
	}

	r.clock.set(r.clock.now().Add(tTTL + tLeeway + time.Second))
	if _, ok := r.cached.Lookup(tok); ok {
		t.Fatal("Lookup answered an expired token")
	}

	r = newRig(t, 100)
	tok = r.issue(t, "oUser2")
	if _, err := r.cached.Verify(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if err := r.dir.Rotate(true); err != nil {
		t.Fatal(err)
	}
	r.reload(t)
	if _, ok := r.cached.Lookup(tok); ok {
		t.Fatal("Lookup answered a token of a key withdrawn by an emergency rotation")
	}
}

// TestAdditionalDataIsStable pins the bytes the session_key seal is bound
// to: tokens issued before a change to how they are built must still open.
func TestAdditionalDataIsStable(t *testing.T) {
	got := string(additionalData("kid1", "https://auth.example.test", "wx1111222233334444", "", "é"))
	want := "wxtoken/session-key/" + sealVersion + "|4:kid1|25:https://auth.example.test|18:wx1111222233334444|0:|2:é"
	if got != want {
		t.Fatalf("additional data\n%q, want\n%q", got, want)
	}
}
