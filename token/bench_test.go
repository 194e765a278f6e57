package token_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"math/big"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/token"
)

// The benchmarks below put each step of the stateless design next to the
// raw primitive it is built on, so the overhead of wxtoken's own code
// (JSON, base64, claim checks, the cache) is plain:
//
//	go test ./token/ -run '^$' -bench . -benchmem
//
// BenchmarkIssue vs BenchmarkRawSign, BenchmarkVerify (cold and cached) vs
// BenchmarkRawVerify, BenchmarkSealOpen vs BenchmarkRawAESGCM.

// BenchmarkIssue and BenchmarkVerify measure the whole per-request cost of
// the stateless design: what replaces a Redis round trip.
func BenchmarkIssue(b *testing.B) {
	for _, alg := range []string{"ES256", "EdDSA", "RS256"} {
		b.Run(alg, func(b *testing.B) {
			d, _ := mustDir(b, alg)
			s := mustService(b, mustRing(b, d), &clock{time.Now()})
			id := token.Identity{AppID: appID, OpenID: openID, SessionKey: skText}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Issue(context.Background(), id); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVerify: "cold" checks the signature and opens wxsk on every call
// (no cache); "cached" answers a token verified before from the cache,
// checking only its time claims again.
func BenchmarkVerify(b *testing.B) {
	for _, alg := range []string{"ES256", "EdDSA", "RS256"} {
		for _, mode := range []struct {
			name    string
			entries int
		}{{"cold", 0}, {"cached", token.DefaultCacheEntries}} {
			b.Run(alg+"/"+mode.name, func(b *testing.B) {
				d, _ := mustDir(b, alg)
				clk := &clock{time.Now()}
				s, err := token.New(token.Config{Issuer: issuer, TTL: 2 * time.Hour, Leeway: 30 * time.Second,
					Audiences: []string{appID}, Keys: staticKeys{mustRing(b, d)}, Now: clk.now, CacheEntries: mode.entries})
				if err != nil {
					b.Fatal(err)
				}
				issued, err := s.Issue(context.Background(), token.Identity{AppID: appID, OpenID: openID, SessionKey: skText})
				if err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				for b.Loop() {
					if _, err := s.Verify(context.Background(), issued.Token); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkVerifyCachedParallel: cache hits from every core at once, over
// many users' tokens, to show the hot path shares no lock.
func BenchmarkVerifyCachedParallel(b *testing.B) {
	d, _ := mustDir(b, "ES256")
	s, err := token.New(token.Config{Issuer: issuer, TTL: 2 * time.Hour, Leeway: 30 * time.Second,
		Audiences: []string{appID}, Keys: staticKeys{mustRing(b, d)}, CacheEntries: token.DefaultCacheEntries})
	if err != nil {
		b.Fatal(err)
	}
	toks := make([]string, 256)
	for i := range toks {
		issued, err := s.Issue(context.Background(), token.Identity{AppID: appID, OpenID: fmt.Sprintf("oUser%023d", i), SessionKey: skText})
		if err != nil {
			b.Fatal(err)
		}
		toks[i] = issued.Token
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := s.Verify(context.Background(), toks[i%len(toks)]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// es256Key is a P-256 key and a signing string as long as a real token's,
// for the raw primitives.
func es256Key(b *testing.B) (*ecdsa.PrivateKey, string) {
	b.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	d, _ := mustDir(b, "ES256")
	s := mustService(b, mustRing(b, d), &clock{time.Now()})
	issued, err := s.Issue(context.Background(), token.Identity{AppID: appID, OpenID: openID, SessionKey: skText})
	if err != nil {
		b.Fatal(err)
	}
	return priv, issued.Token[:strings.LastIndexByte(issued.Token, '.')]
}

// BenchmarkRawSign is the floor of BenchmarkIssue/ES256: SHA-256 of a
// token-sized signing string and one ecdsa.Sign.
func BenchmarkRawSign(b *testing.B) {
	priv, signingString := es256Key(b)
	b.ReportAllocs()
	for b.Loop() {
		h := sha256.Sum256([]byte(signingString))
		if _, _, err := ecdsa.Sign(rand.Reader, priv, h[:]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRawVerify is the floor of BenchmarkVerify/ES256/cold: SHA-256 of
// the signing string and one ecdsa.Verify.
func BenchmarkRawVerify(b *testing.B) {
	priv, signingString := es256Key(b)
	h := sha256.Sum256([]byte(signingString))
	r, sig, err := ecdsa.Sign(rand.Reader, priv, h[:])
	if err != nil {
		b.Fatal(err)
	}
	// The JWS form, R‖S, decoded on each call as a verifier must.
	rs := append(r.FillBytes(make([]byte, 32)), sig.FillBytes(make([]byte, 32))...)
	b.ReportAllocs()
	for b.Loop() {
		h := sha256.Sum256([]byte(signingString))
		if !ecdsa.Verify(&priv.PublicKey, h[:], new(big.Int).SetBytes(rs[:32]), new(big.Int).SetBytes(rs[32:])) {
			b.Fatal("does not verify")
		}
	}
}

// BenchmarkSealOpen seals and opens a session_key with the ring's
// encryption key, as Issue and Verify do (with a token-sized associated
// data).
func BenchmarkSealOpen(b *testing.B) {
	d, _ := mustDir(b, "ES256")
	enc := mustRing(b, d).EncryptionKey()
	ad := []byte("wxtoken/session-key/v1|" + strings.Repeat("x", 120))
	plain := []byte(skText)
	sealed, err := enc.Seal(plain, ad)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("seal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := enc.Seal(plain, ad); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("open", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := enc.Open(sealed, ad); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRawAESGCM is the floor of BenchmarkSealOpen: crypto/cipher's
// AES-256-GCM on the same sizes, with the nonce drawn the same way.
func BenchmarkRawAESGCM(b *testing.B) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		b.Fatal(err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		b.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		b.Fatal(err)
	}
	ad := []byte("wxtoken/session-key/v1|" + strings.Repeat("x", 120))
	plain := []byte(skText)
	nonce := make([]byte, aead.NonceSize())
	b.Run("seal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := rand.Read(nonce); err != nil {
				b.Fatal(err)
			}
			aead.Seal(nil, nonce, plain, ad)
		}
	})
	sealed := aead.Seal(nil, nonce, plain, ad)
	b.Run("open", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := aead.Open(nil, nonce, sealed, ad); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkCacheMemory reports the heap one cached token takes (B/entry),
// with WeChat-sized openid, unionid and session_key: the figure README and
// DefaultCacheEntries quote.
func BenchmarkCacheMemory(b *testing.B) {
	const n = 2000
	d, _ := mustDir(b, "ES256")
	ring := mustRing(b, d)
	var perEntry float64
	for b.Loop() {
		s, err := token.New(token.Config{Issuer: issuer, TTL: 2 * time.Hour, Leeway: 30 * time.Second,
			Audiences: []string{appID}, Keys: staticKeys{ring}, CacheEntries: n})
		if err != nil {
			b.Fatal(err)
		}
		toks := make([]string, n)
		for i := range toks {
			issued, err := s.Issue(context.Background(), token.Identity{AppID: appID,
				OpenID: fmt.Sprintf("oGZUI0egBJY1zhBYw2Kh%08d", i), UnionID: fmt.Sprintf("ocMvos6NjeKLIBqg5Mr9%08d", i),
				SessionKey: skText})
			if err != nil {
				b.Fatal(err)
			}
			toks[i] = issued.Token
		}
		before := heapInUse()
		for _, tok := range toks {
			if _, err := s.Verify(context.Background(), tok); err != nil {
				b.Fatal(err)
			}
		}
		after := heapInUse()
		if got := s.CachedTokens(); got < n*9/10 {
			b.Fatalf("only %d of %d tokens cached", got, n)
		}
		perEntry = float64(after-before) / float64(s.CachedTokens())
		runtime.KeepAlive(toks)
		runtime.KeepAlive(s)
	}
	b.ReportMetric(perEntry, "B/entry")
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// Sanity for the raw benchmarks: the token's signature really is what
// ecdsa.Verify checks, so BenchmarkRawVerify measures the same work.
func TestRawVerifyMatchesTokenSignature(t *testing.T) {
	d, _ := mustDir(t, "ES256")
	ring := mustRing(t, d)
	s := mustService(t, ring, &clock{time.Now()})
	issued, err := s.Issue(context.Background(), token.Identity{AppID: appID, OpenID: openID, SessionKey: skText})
	if err != nil {
		t.Fatal(err)
	}
	i := strings.LastIndexByte(issued.Token, '.')
	sig, err := base64.RawURLEncoding.DecodeString(issued.Token[i+1:])
	if err != nil || len(sig) != 64 {
		t.Fatalf("signature: %d bytes, %v", len(sig), err)
	}
	pub, ok := ring.VerificationKey(kidOf(t, issued.Token))
	if !ok {
		t.Fatal("no key")
	}
	h := sha256.Sum256([]byte(issued.Token[:i]))
	if !ecdsa.Verify(pub.Public.(*ecdsa.PublicKey), h[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		t.Fatal("the raw primitive does not verify the token's signature")
	}
}

func kidOf(t testing.TB, raw string) string {
	t.Helper()
	return decodePart(t, strings.Split(raw, ".")[0])["kid"].(string)
}
