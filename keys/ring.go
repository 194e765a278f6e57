package keys

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// PublicKey is a signing key's public half, as a verifier needs it.
type PublicKey struct {
	KID    string
	Alg    string
	Public crypto.PublicKey
}

// SigningKey signs tokens. Its private key never leaves this package.
type SigningKey struct {
	KID string
	Alg string
	// Since is when the key became active (its manifest activation time,
	// else its creation), for the key age metric.
	Since  time.Time
	priv   crypto.Signer
	method jwt.SigningMethod
}

// Sign returns the JWS signature of signingString (for ES256 the 64-byte
// R‖S form JWS uses, not ASN.1).
func (k *SigningKey) Sign(signingString string) ([]byte, error) {
	return k.method.Sign(signingString, k.priv)
}

// EncryptionKey seals and opens session_keys with AES-256-GCM.
type EncryptionKey struct {
	KID  string
	aead cipher.AEAD
}

// Seal encrypts plaintext with a fresh random nonce and returns
// nonce ‖ ciphertext ‖ tag. additionalData is authenticated, not stored.
func (k *EncryptionKey) Seal(plaintext, additionalData []byte) ([]byte, error) {
	ns := k.aead.NonceSize()
	out := make([]byte, ns, ns+len(plaintext)+k.aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		return nil, fmt.Errorf("keys: nonce: %w", err)
	}
	return k.aead.Seal(out, out, plaintext, additionalData), nil
}

// errOpen is the only error Open gives: which check failed is nobody's business.
var errOpen = errors.New("keys: sealed data does not open")

// Open reverses Seal; any change to sealed or additionalData fails.
func (k *EncryptionKey) Open(sealed, additionalData []byte) ([]byte, error) {
	ns := k.aead.NonceSize()
	if len(sealed) < ns+k.aead.Overhead() {
		return nil, errOpen
	}
	out, err := k.aead.Open(nil, sealed[:ns], sealed[ns:], additionalData)
	if err != nil {
		return nil, errOpen
	}
	return out, nil
}

// Ring is an immutable snapshot of the usable keys, safe for concurrent
// use. A rotation makes a new Ring; it never changes one.
type Ring struct {
	signing    *SigningKey
	verify     map[string]PublicKey
	algs       []string
	encryption *EncryptionKey
	decrypt    map[string]*EncryptionKey
	jwks       []byte
	etag       string
	manifest   []byte
	// expiresAt is when the next retired key passes its retention (zero: none).
	expiresAt time.Time
	kids      []string
	// fileNames are the key files loaded; files is the fingerprint of the
	// directory and those files when loaded (see Dir.fingerprint).
	fileNames []string
	files     string
}

// Algorithms lists the algorithms of the verification keys, for pinning.
func (r *Ring) Algorithms() []string { return slices.Clone(r.algs) }

// SigningKey is the active signing key.
func (r *Ring) SigningKey() *SigningKey { return r.signing }

// VerificationKey finds a published key: active, next (another replica may
// already sign with it) or retired within its retention.
func (r *Ring) VerificationKey(kid string) (PublicKey, bool) {
	k, ok := r.verify[kid]
	return k, ok
}

// EncryptionKey is the active encryption key.
func (r *Ring) EncryptionKey() *EncryptionKey { return r.encryption }

// DecryptionKey finds an encryption key that may have sealed a live token.
func (r *Ring) DecryptionKey(kid string) (*EncryptionKey, bool) {
	k, ok := r.decrypt[kid]
	return k, ok
}

// JWKS is the public JWK Set and its strong ETag, made once at load.
func (r *Ring) JWKS() (body []byte, etag string) { return r.jwks, r.etag }

// KIDs lists the loaded keys' ids (public), for logs.
func (r *Ring) KIDs() []string { return slices.Clone(r.kids) }

// Load reads the directory into a Ring. Retired keys past the Dir's
// retention are left out, so a server stays correct without a prune.
func (d *Dir) Load() (*Ring, error) {
	r, _, err := d.load()
	return r, err
}

// load is Load that also returns the manifest's bytes as read (nil when
// they could not be read), with which Store logs a broken directory once
// per content.
func (d *Dir) load() (*Ring, []byte, error) {
	snap, err := d.readManifest()
	if err != nil {
		return nil, snap.raw, err
	}
	r, err := d.ring(snap)
	return r, snap.raw, err
}

// ring makes a Ring of the manifest snap, reading the key files it names.
func (d *Dir) ring(snap snapshot) (*Ring, error) {
	m, mst := snap.m, snap.st
	now := d.now()
	r := &Ring{verify: map[string]PublicKey{}, decrypt: map[string]*EncryptionKey{}, manifest: snap.raw}
	dirSt, err := os.Stat(d.path)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	ro := readOnlyFS(d.path)
	if err := checkWritable("keys directory", d.path, dirSt, ro); err != nil {
		return nil, err
	}
	if err := checkWritable("manifest", filepath.Join(d.path, ManifestFile), mst, ro); err != nil {
		return nil, err
	}
	files := []string{dirLine(dirSt), statLine(ManifestFile, mst)}
	var jwks []map[string]any
	// Publish active first, then next, then retired.
	order := map[State]int{Active: 0, Next: 1, Retired: 2}
	entries := slices.Clone(m.Keys)
	slices.SortStableFunc(entries, func(a, b entry) int { return order[a.State] - order[b.State] })
	for _, e := range entries {
		if !validKID(e.KID) {
			return nil, fmt.Errorf("keys: %s: a key has a missing or malformed kid", ManifestFile)
		}
		if e.State != Active && e.State != Next && e.State != Retired {
			return nil, fmt.Errorf("keys: key %s: unknown state %q", e.KID, e.State)
		}
		if e.State == Retired && e.Retired == nil {
			// Without the time it retired, it would stay trusted forever.
			return nil, fmt.Errorf("keys: key %s: retired without a retired time", e.KID)
		}
		if expired(e, d.retention, now) {
			continue
		}
		if e.State == Retired && e.Retired != nil {
			if t := e.Retired.Add(d.retention); r.expiresAt.IsZero() || t.Before(r.expiresAt) {
				r.expiresAt = t
			}
		}
		if e.File == "" || filepath.Base(e.File) != e.File {
			return nil, fmt.Errorf("keys: key %s: bad file name", e.KID)
		}
		p := filepath.Join(d.path, e.File)
		data, st, err := d.read(p, maxKeyFileBytes)
		if err != nil {
			return nil, fmt.Errorf("keys: key %s: %w", e.KID, err)
		}
		if err := checkWritable("key file", p, st, ro); err != nil {
			return nil, err
		}
		r.fileNames = append(r.fileNames, e.File)
		files = append(files, statLine(e.File, st))
		r.kids = append(r.kids, e.KID)
		switch e.Kind {
		case Signing:
			sk, jwk, err := parseSigning(e, data)
			if err != nil {
				return nil, err
			}
			if _, dup := r.verify[e.KID]; dup {
				return nil, fmt.Errorf("keys: key %s listed twice", e.KID)
			}
			r.verify[e.KID] = PublicKey{KID: e.KID, Alg: e.Alg, Public: sk.priv.Public()}
			if !slices.Contains(r.algs, e.Alg) {
				r.algs = append(r.algs, e.Alg)
			}
			jwks = append(jwks, jwk)
			if e.State == Active {
				if r.signing != nil {
					return nil, errors.New("keys: more than one active signing key")
				}
				r.signing = sk
			}
		case Encryption:
			ek, err := parseEncryption(e, data)
			if err != nil {
				return nil, err
			}
			if _, dup := r.decrypt[e.KID]; dup {
				return nil, fmt.Errorf("keys: key %s listed twice", e.KID)
			}
			r.decrypt[e.KID] = ek
			if e.State == Active {
				if r.encryption != nil {
					return nil, errors.New("keys: more than one active encryption key")
				}
				r.encryption = ek
			}
		default:
			return nil, fmt.Errorf("keys: key %s: unknown kind %q", e.KID, e.Kind)
		}
	}
	if r.signing == nil || r.encryption == nil {
		return nil, errors.New("keys: the directory needs one active signing key and one active encryption key")
	}
	body, err := json.Marshal(map[string]any{"keys": jwks})
	if err != nil {
		return nil, fmt.Errorf("keys: encode JWKS: %w", err)
	}
	r.files = strings.Join(files, "\n")
	sum := sha256.Sum256(body)
	r.jwks, r.etag = body, `"`+base64.RawURLEncoding.EncodeToString(sum[:16])+`"`
	return r, nil
}

func parseSigning(e entry, data []byte) (*SigningKey, map[string]any, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, nil, fmt.Errorf("keys: key %s: not a PKCS#8 PEM private key", e.KID)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("keys: key %s: not a PKCS#8 private key", e.KID)
	}
	priv, ok := k.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("keys: key %s: unsupported key type", e.KID)
	}
	var method jwt.SigningMethod
	switch p := priv.(type) {
	case *ecdsa.PrivateKey:
		if e.Alg == ES256 && p.Curve == elliptic.P256() {
			method = jwt.SigningMethodES256
		}
	case ed25519.PrivateKey:
		if e.Alg == EdDSA {
			method = jwt.SigningMethodEdDSA
		}
	case *rsa.PrivateKey:
		if e.Alg == RS256 && p.N.BitLen() >= rsaBits {
			method = jwt.SigningMethodRS256
		}
	}
	if method == nil {
		return nil, nil, fmt.Errorf("keys: key %s: key type does not fit alg %q", e.KID, e.Alg)
	}
	jwk, err := publicJWK(priv.Public())
	if err != nil {
		return nil, nil, err
	}
	if kid, err := thumbprint(priv.Public()); err != nil || kid != e.KID {
		return nil, nil, fmt.Errorf("keys: key %s: kid is not the key's RFC 7638 thumbprint", e.KID)
	}
	jwk["kid"], jwk["alg"], jwk["use"] = e.KID, e.Alg, "sig"
	since := e.Created
	if e.Activated != nil {
		since = *e.Activated
	}
	return &SigningKey{KID: e.KID, Alg: e.Alg, Since: since, priv: priv, method: method}, jwk, nil
}

func parseEncryption(e entry, data []byte) (*EncryptionKey, error) {
	var j octJWK
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, fmt.Errorf("keys: key %s: not a JWK", e.KID)
	}
	raw, err := base64.RawURLEncoding.DecodeString(j.K)
	if err != nil || j.Kty != "oct" || j.KID != e.KID || len(raw) != 32 || e.Alg != A256GCM ||
		(j.Alg != "" && j.Alg != A256GCM) || (j.Use != "" && j.Use != "enc") {
		return nil, fmt.Errorf("keys: key %s: not a 256-bit oct JWK with this kid", e.KID)
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, fmt.Errorf("keys: key %s: %w", e.KID, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("keys: key %s: %w", e.KID, err)
	}
	return &EncryptionKey{KID: e.KID, aead: aead}, nil
}

// publicJWK holds the RFC 7638 required members of a public key.
func publicJWK(pub crypto.PublicKey) (map[string]any, error) {
	b64 := base64.RawURLEncoding.EncodeToString
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		if p.Curve != elliptic.P256() {
			return nil, errors.New("keys: only P-256 EC keys are supported")
		}
		raw, err := p.Bytes() // 0x04 ‖ X ‖ Y, fixed width
		if err != nil {
			return nil, fmt.Errorf("keys: %w", err)
		}
		return map[string]any{"kty": "EC", "crv": "P-256", "x": b64(raw[1:33]), "y": b64(raw[33:])}, nil
	case ed25519.PublicKey:
		return map[string]any{"kty": "OKP", "crv": "Ed25519", "x": b64(p)}, nil
	case *rsa.PublicKey:
		return map[string]any{"kty": "RSA", "n": b64(p.N.Bytes()), "e": b64(big.NewInt(int64(p.E)).Bytes())}, nil
	}
	return nil, fmt.Errorf("keys: unsupported public key %T", pub)
}

// thumbprint is the RFC 7638 JWK thumbprint: SHA-256 over the required
// members in lexicographic order, no whitespace (json.Marshal sorts map keys).
func thumbprint(pub crypto.PublicKey) (string, error) {
	jwk, err := publicJWK(pub)
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(jwk)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

// validKID accepts the kids this package makes: non-empty base64url of a
// sane length. A kid is also a file name and part of the token's sealed
// claim ("v1.<kid>.<data>"), so anything else is refused.
func validKID(kid string) bool {
	if kid == "" || len(kid) > 128 {
		return false
	}
	for _, c := range kid {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// sameManifest reports whether raw is the manifest r was loaded from.
func (r *Ring) sameManifest(raw []byte) bool { return bytes.Equal(r.manifest, raw) }

// statLine describes a file's identity and metadata, never its contents:
// a changed line means the file was replaced, rewritten or re-permissioned.
func statLine(name string, st fs.FileInfo) string {
	line := fmt.Sprintf("%s %s %d %d", name, st.Mode(), st.Size(), st.ModTime().UnixNano())
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		line += fmt.Sprintf(" %d %d %d %d", sys.Dev, sys.Ino, sys.Uid, sys.Gid)
	}
	return line
}

// dirLine is statLine for the directory, leaving out what changes
// whenever a file comes or goes (size, mtime): only its identity, owner and
// mode matter.
func dirLine(st fs.FileInfo) string {
	line := ". " + st.Mode().String()
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		line += fmt.Sprintf(" %d %d %d %d", sys.Dev, sys.Ino, sys.Uid, sys.Gid)
	}
	return line
}

// upToDate reports whether r is still what the directory holds: no retired
// key of r has passed its retention, the manifest's bytes are the ones r
// was loaded from, and the directory and r's key files keep the metadata
// they had. It reads only the manifest (never a key file), so a poll that
// finds nothing changed is cheap.
func (d *Dir) upToDate(r *Ring) bool {
	if !r.expiresAt.IsZero() && !d.now().Before(r.expiresAt) {
		return false
	}
	snap, err := d.readManifest()
	if err != nil || !r.sameManifest(snap.raw) {
		return false
	}
	fp, err := d.fingerprint(r, snap.st)
	return err == nil && fp == r.files
}

// fingerprint describes the directory, the manifest (mst: its metadata as
// readManifest just saw it) and r's key files as load saw them, stating the
// key files without reading any. Stat never blocks on a FIFO; it can on a
// hung file system, which is why Store calls it under its read timeout.
func (d *Dir) fingerprint(r *Ring, mst fs.FileInfo) (string, error) {
	st, err := os.Stat(d.path)
	if err != nil {
		return "", err
	}
	lines := []string{dirLine(st), statLine(ManifestFile, mst)}
	for _, name := range r.fileNames {
		st, err := os.Stat(filepath.Join(d.path, name))
		if err != nil {
			return "", err
		}
		lines = append(lines, statLine(name, st))
	}
	return strings.Join(lines, "\n"), nil
}
