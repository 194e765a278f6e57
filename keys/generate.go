package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"path/filepath"
	"time"
)

// Algorithms for signing keys, and the one for encryption keys.
const (
	ES256   = "ES256"
	EdDSA   = "EdDSA"
	RS256   = "RS256"
	A256GCM = "A256GCM"
)

// rsaBits is the size of new RSA keys (RFC 7518 asks for 2048 or more).
const rsaBits = 2048

func validAlg(alg string) bool { return alg == ES256 || alg == EdDSA || alg == RS256 }

// newKey makes a key of kind k and writes its file; the caller adds the
// returned entry to the manifest.
func (d *Dir) newKey(k Kind, alg string, state State, now time.Time) (entry, error) {
	e := entry{Kind: k, State: state, Created: now}
	if state == Active {
		t := now
		e.Activated = &t
	}
	var data []byte
	switch k {
	case Signing:
		priv, err := generate(alg)
		if err != nil {
			return entry{}, err
		}
		kid, err := thumbprint(priv.Public())
		if err != nil {
			return entry{}, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return entry{}, fmt.Errorf("keys: encode key: %w", err)
		}
		data = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		e.KID, e.Alg, e.File = kid, alg, kid+".pem"
	case Encryption:
		var raw, id [32]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return entry{}, err
		}
		if _, err := rand.Read(id[:16]); err != nil {
			return entry{}, err
		}
		e.KID, e.Alg = base64.RawURLEncoding.EncodeToString(id[:16]), A256GCM
		e.File = "enc-" + e.KID + ".jwk"
		b, err := json.MarshalIndent(octJWK{Kty: "oct", KID: e.KID, Alg: A256GCM, Use: "enc",
			K: base64.RawURLEncoding.EncodeToString(raw[:])}, "", "  ")
		if err != nil {
			return entry{}, err
		}
		data = append(b, '\n')
	}
	if err := writeAtomic(filepath.Join(d.path, e.File), data); err != nil {
		return entry{}, err
	}
	return e, nil
}

// octJWK is an encryption key's file: a JWK (RFC 7517) of kty "oct".
type octJWK struct {
	Kty string `json:"kty"`
	KID string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	K   string `json:"k"`
}

func generate(alg string) (crypto.Signer, error) {
	switch alg {
	case ES256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case EdDSA:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	case RS256:
		return rsa.GenerateKey(rand.Reader, rsaBits)
	}
	return nil, fmt.Errorf("keys: unknown signing algorithm %q", alg)
}
