// Command jwks2pem is the JWKS-to-PEM step for gateways that verify JWTs
// with key files loaded at start (HAProxy's jwt_verify): it fetches the
// issuer's JWKS through discovery and writes one <kid>.pem (SubjectPublicKeyInfo)
// per ES256 or RS256 key, then prints the HAProxy lines that verify a token
// with the key its kid names. Rerun it and reload the gateway at least once
// per JWKS max-age, and at once after an emergency rotation.
//
//	go run ./examples/jwks2pem https://auth.example.com /etc/haproxy/wxtoken-keys > /etc/haproxy/wxtoken-keys.cfg
package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/MicahParks/jwkset"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "jwks2pem:", err)
		os.Exit(1)
	}
}

// safeKID keeps file names and HAProxy lines free of anything a hostile
// JWKS could inject: RFC 7638 thumbprints are base64url.
var safeKID = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) != 2 {
		return errors.New("usage: jwks2pem <issuer> <directory>")
	}
	issuer, dir := args[0], args[1]
	client := &http.Client{Timeout: 10 * time.Second}
	var meta struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := getJSON(ctx, client, strings.TrimSuffix(issuer, "/")+"/.well-known/openid-configuration", &meta); err != nil {
		return fmt.Errorf("discovery: %w", err)
	}
	if meta.Issuer != issuer {
		return fmt.Errorf("discovery names issuer %q, not %q", meta.Issuer, issuer)
	}
	var set jwkset.JWKSMarshal
	if err := getJSON(ctx, client, meta.JWKSURI, &set); err != nil {
		return fmt.Errorf("jwks: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	n := 0
	for _, m := range set.Keys {
		alg := m.ALG.String()
		if (alg != "ES256" && alg != "RS256") || !safeKID.MatchString(m.KID) || m.D != "" {
			continue // HAProxy 2.6 has no EdDSA
		}
		jwk, err := jwkset.NewJWKFromMarshal(m, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
		if err != nil {
			return fmt.Errorf("key %s: %w", m.KID, err)
		}
		der, err := x509.MarshalPKIXPublicKey(jwk.Key())
		if err != nil {
			return fmt.Errorf("key %s: %w", m.KID, err)
		}
		path := filepath.Join(dir, m.KID+".pem")
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "    http-request set-var(txn.sig) var(txn.bearer),jwt_verify(%s,%s) if { var(txn.kid) -m str %s }\n", alg, path, m.KID)
		n++
	}
	if n == 0 {
		return errors.New("the JWKS has no ES256 or RS256 key")
	}
	return nil
}

func getJSON(ctx context.Context, client *http.Client, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: status %d", url, resp.StatusCode)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v)
}
