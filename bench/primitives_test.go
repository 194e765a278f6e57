package main

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"strings"
	"testing"
)

// The raw primitives under wxtoken's per-request work, for `go run ./bench
// -micro` to set beside token.Issue, token.Verify, keys' seal/open and
// wechat.DecryptUserData: the distance between each and its primitive is
// what wxtoken's own code costs.

// rawPayload is a JWS signing input of the size wxtoken signs.
var rawPayload = []byte(strings.Repeat("eyJhbGciOiJFUzI1NiJ9", 20))

// rawSigner is one algorithm's sign and verify over rawPayload.
type rawSigner struct {
	name   string
	sign   func() ([]byte, error)
	verify func(sig []byte) bool
}

func rawSigners(tb testing.TB) []rawSigner {
	tb.Helper()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	edPub, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	rs, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	digest := func() []byte { d := sha256.Sum256(rawPayload); return d[:] }
	return []rawSigner{
		{"ES256",
			func() ([]byte, error) { return ecdsa.SignASN1(rand.Reader, ec, digest()) },
			func(sig []byte) bool { return ecdsa.VerifyASN1(&ec.PublicKey, digest(), sig) }},
		{"EdDSA",
			func() ([]byte, error) { return ed25519.Sign(edPriv, rawPayload), nil },
			func(sig []byte) bool { return ed25519.Verify(edPub, rawPayload, sig) }},
		{"RS256",
			func() ([]byte, error) { return rsa.SignPKCS1v15(rand.Reader, rs, crypto.SHA256, digest()) },
			func(sig []byte) bool { return rsa.VerifyPKCS1v15(&rs.PublicKey, crypto.SHA256, digest(), sig) == nil }},
	}
}

// TestRawSigners: each raw signer's signature verifies and a changed one
// does not, so the benchmarks below measure working primitives.
func TestRawSigners(t *testing.T) {
	for _, s := range rawSigners(t) {
		t.Run(s.name, func(t *testing.T) {
			sig, err := s.sign()
			if err != nil || !s.verify(sig) {
				t.Fatalf("sign/verify: %v", err)
			}
			sig[len(sig)/2] ^= 1
			if s.verify(sig) {
				t.Fatal("a changed signature verifies")
			}
		})
	}
}

// BenchmarkRawSign is the signature alone, beside token.Issue.
func BenchmarkRawSign(b *testing.B) {
	for _, s := range rawSigners(b) {
		b.Run(s.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.sign(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRawVerify is the signature check alone, beside token.Verify.
func BenchmarkRawVerify(b *testing.B) {
	for _, s := range rawSigners(b) {
		sig, err := s.sign()
		if err != nil {
			b.Fatal(err)
		}
		b.Run(s.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !s.verify(sig) {
					b.Fatal("verify failed")
				}
			}
		})
	}
}

// BenchmarkRawSealOpen is AES-256-GCM seal and open of a session_key,
// beside keys' SealOpen.
func BenchmarkRawSealOpen(b *testing.B) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		b.Fatal(err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		b.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		b.Fatal(err)
	}
	nonce := make([]byte, gcm.NonceSize())
	plain, ad := []byte("tiihtNczf5v6AKRyjwEUhQ=="), []byte("wxtoken/session-key/v1|iss|aud|sub|jti")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rand.Read(nonce); err != nil {
			b.Fatal(err)
		}
		sealed := gcm.Seal(nil, nonce, plain, ad)
		if _, err := gcm.Open(nil, nonce, sealed, ad); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRawCBCDecrypt is the AES-128-CBC decryption of 624 bytes (the
// size of WeChat's published example), beside wechat.DecryptUserData,
// which adds base64, unpadding and the watermark check.
func BenchmarkRawCBCDecrypt(b *testing.B) {
	key, iv, ct := make([]byte, 16), make([]byte, 16), make([]byte, 624)
	for _, p := range [][]byte{key, iv, ct} {
		if _, err := rand.Read(p); err != nil {
			b.Fatal(err)
		}
	}
	plain := make([]byte, len(ct))
	b.ReportAllocs()
	for b.Loop() {
		block, err := aes.NewCipher(key)
		if err != nil {
			b.Fatal(err)
		}
		cipher.NewCBCDecrypter(block, iv).CryptBlocks(plain, ct)
	}
}
