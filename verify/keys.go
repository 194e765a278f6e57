package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/MicahParks/jwkset"
	"golang.org/x/time/rate"
)

// discover reads the issuer's OpenID configuration and returns its jwks_uri.
// The document must name the issuer byte for byte (as go-oidc requires), so
// a proxy or typo that serves another issuer's keys fails here.
func discover(ctx context.Context, cfg Config) (string, error) {
	url := strings.TrimSuffix(cfg.Issuer, "/") + "/.well-known/openid-configuration"
	body, err := get(ctx, cfg, url, "")
	if err != nil {
		return "", fmt.Errorf("verify: discovery: %w", err)
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body.data, &doc); err != nil {
		return "", fmt.Errorf("verify: discovery: decode: %w", err)
	}
	if doc.Issuer != cfg.Issuer {
		return "", fmt.Errorf("verify: discovery: the document names issuer %q, not %q", doc.Issuer, cfg.Issuer)
	}
	if !strings.HasPrefix(doc.JWKSURI, "https://") && !strings.HasPrefix(doc.JWKSURI, "http://") {
		return "", fmt.Errorf("verify: discovery: jwks_uri %q is not an http(s) URL", doc.JWKSURI)
	}
	return doc.JWKSURI, nil
}

// answer is one fetched document with what its headers say about caching.
type answer struct {
	data         []byte
	notModified  bool
	etag         string
	maxAge       time.Duration
	hasMaxAge    bool
	cacheForbids bool
}

// get fetches url, bounded in size and time; etag, when set, makes the
// request conditional.
func get(ctx context.Context, cfg Config, url, etag string) (answer, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.HTTPTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	resp, err := cfg.Client.Do(req)
	if err != nil {
		return answer{}, fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	a := answer{etag: resp.Header.Get("ETag")}
	a.maxAge, a.hasMaxAge, a.cacheForbids = cacheControl(resp.Header.Values("Cache-Control"))
	switch {
	case resp.StatusCode == http.StatusNotModified && etag != "":
		a.notModified = true
		if a.etag == "" {
			a.etag = etag
		}
		return a, nil
	case resp.StatusCode != http.StatusOK:
		return answer{}, fmt.Errorf("get %s: status %d", url, resp.StatusCode)
	}
	a.data, err = io.ReadAll(io.LimitReader(resp.Body, maxDocumentBytes+1))
	if err != nil {
		return answer{}, fmt.Errorf("get %s: read: %w", url, err)
	}
	if len(a.data) > maxDocumentBytes {
		return answer{}, fmt.Errorf("get %s: over %d bytes", url, maxDocumentBytes)
	}
	return a, nil
}

// cacheControl reads max-age, and whether no-cache or no-store forbid reuse
// (RFC 9111 5.2.2).
func cacheControl(values []string) (maxAge time.Duration, ok, forbids bool) {
	for _, v := range values {
		for _, d := range strings.Split(v, ",") {
			name, arg, _ := strings.Cut(strings.TrimSpace(d), "=")
			switch strings.ToLower(name) {
			case "no-cache", "no-store":
				forbids = true
			case "max-age":
				n, err := strconv.ParseInt(strings.Trim(arg, `"`), 10, 64)
				if err == nil && n >= 0 {
					maxAge, ok = time.Duration(min(n, 1<<31))*time.Second, true
				}
			}
		}
	}
	return maxAge, ok, forbids
}

// remoteKeys is a jwkset.Storage whose contents follow the issuer's JWKS:
// KeyRead refreshes a stale set first and refetches once on an unknown kid
// (rate-limited). Concurrent refreshes collapse into one request.
type remoteKeys struct {
	*jwkset.MemoryJWKSet
	url     string
	cfg     Config
	unknown *rate.Limiter

	mu sync.Mutex
	// inflight is the running fetch (nil: none), so callers the rate limit
	// turns away can still wait for the keys it brings.
	inflight  *flight
	etag      string
	fetchedAt time.Time // last successful fetch or revalidation
	expires   time.Time
	algs      []string
}

var _ jwkset.Storage = (*remoteKeys)(nil)

func newRemoteKeys(url string, cfg Config) *remoteKeys {
	return &remoteKeys{
		MemoryJWKSet: jwkset.NewMemoryStorage(),
		url:          url,
		cfg:          cfg,
		unknown:      rate.NewLimiter(rate.Every(cfg.UnknownKIDInterval), 1),
	}
}

// KeyRead finds kid in a fresh enough set; an unknown kid triggers one
// refetch when the rate limit allows, since the issuer may have rotated.
// Over the limit, a request still waits for a fetch already running (one
// that another request with the same new kid started).
func (r *remoteKeys) KeyRead(ctx context.Context, kid string) (jwkset.JWK, error) {
	if err := r.ensureFresh(ctx); err != nil {
		return jwkset.JWK{}, err
	}
	jwk, err := r.MemoryJWKSet.KeyRead(ctx, kid)
	if !errors.Is(err, jwkset.ErrKeyNotFound) {
		return jwk, err
	}
	joined, ferr := r.join(ctx, func() bool { return r.unknown.AllowN(r.cfg.Now(), 1) })
	if !joined {
		// A fetch may have ended since the first read: its set is stored.
		return r.MemoryJWKSet.KeyRead(ctx, kid)
	}
	if ferr != nil {
		return jwkset.JWK{}, fmt.Errorf("unknown kid, refetch failed: %w", ferr)
	}
	return r.MemoryJWKSet.KeyRead(ctx, kid)
}

// algorithms is the set of the published keys' algorithms, from a fresh set.
func (r *remoteKeys) algorithms(ctx context.Context) ([]string, error) {
	if err := r.ensureFresh(ctx); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.algs), nil
}

// ensureFresh refreshes an expired set. If that fails, the old set is used
// until StaleIfError past its expiry, then ErrKeysUnavailable.
func (r *remoteKeys) ensureFresh(ctx context.Context) error {
	r.mu.Lock()
	expires, fetchedAt := r.expires, r.fetchedAt
	r.mu.Unlock()
	now := r.cfg.Now()
	if now.Before(expires) {
		return nil
	}
	err := r.refresh(ctx)
	if err == nil {
		return nil
	}
	if r.cfg.StaleIfError > 0 && now.Before(expires.Add(r.cfg.StaleIfError)) && !fetchedAt.IsZero() {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrKeysUnavailable, err)
}

// refresh fetches the JWKS (conditionally, with the last ETag) and replaces
// the set, or waits for the fetch already running.
func (r *remoteKeys) refresh(ctx context.Context) error {
	_, err := r.join(ctx, func() bool { return true })
	return err
}

// flight is one running fetch; err is set before done is closed.
type flight struct {
	done chan struct{}
	err  error
}

// join waits for the running fetch, or starts one when start (called under
// the lock, so deciding and starting are one step) says so; joined is false
// when it neither found nor started one. Parallel callers share one request,
// and the fetch outlives any one caller's cancellation.
func (r *remoteKeys) join(ctx context.Context, start func() bool) (joined bool, err error) {
	r.mu.Lock()
	f := r.inflight
	if f == nil {
		if !start() {
			r.mu.Unlock()
			return false, nil
		}
		f = &flight{done: make(chan struct{})}
		r.inflight = f
		go func() {
			f.err = r.fetch(context.WithoutCancel(ctx))
			r.mu.Lock()
			r.inflight = nil
			r.mu.Unlock()
			close(f.done)
		}()
	}
	r.mu.Unlock()
	select {
	case <-f.done:
		return true, f.err
	case <-ctx.Done():
		return true, ctx.Err()
	}
}

func (r *remoteKeys) fetch(ctx context.Context) error {
	r.mu.Lock()
	etag := r.etag
	r.mu.Unlock()
	a, err := get(ctx, r.cfg, r.url, etag)
	if err != nil {
		return fmt.Errorf("verify: jwks: %w", err)
	}
	now := r.cfg.Now()
	ttl := r.cfg.DefaultMaxAge
	if a.hasMaxAge {
		ttl = a.maxAge
	}
	if a.cacheForbids {
		ttl = 0
	}
	ttl = min(max(ttl, r.cfg.MinRefresh), r.cfg.MaxMaxAge)

	if a.notModified {
		r.mu.Lock()
		r.fetchedAt, r.expires, r.etag = now, now.Add(ttl), a.etag
		r.mu.Unlock()
		return nil
	}
	set, algs, err := r.parse(a.data)
	if err != nil {
		return err
	}
	if err := r.MemoryJWKSet.KeyReplaceAll(ctx, set); err != nil {
		return fmt.Errorf("verify: jwks: store: %w", err)
	}
	r.mu.Lock()
	r.fetchedAt, r.expires, r.etag, r.algs = now, now.Add(ttl), a.etag, algs
	r.mu.Unlock()
	return nil
}

// parse keeps the public signature keys of an accepted algorithm that name
// their alg (so keyfunc can pin each key to it); anything else is skipped.
func (r *remoteKeys) parse(data []byte) ([]jwkset.JWK, []string, error) {
	var doc jwkset.JWKSMarshal
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, nil, fmt.Errorf("verify: jwks: decode: %w", err)
	}
	var set []jwkset.JWK
	var algs []string
	for _, m := range doc.Keys {
		alg := m.ALG.String()
		if !slices.Contains(r.cfg.Algorithms, alg) || (m.USE != "" && m.USE != jwkset.UseSig) || m.D != "" || m.K != "" || m.KID == "" {
			continue
		}
		jwk, err := jwkset.NewJWKFromMarshal(m, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
		if err != nil {
			continue
		}
		set = append(set, jwk)
		if !slices.Contains(algs, alg) {
			algs = append(algs, alg)
		}
	}
	if len(set) == 0 {
		return nil, nil, errors.New("verify: jwks: no usable key")
	}
	return set, algs, nil
}
