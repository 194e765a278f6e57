package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
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
//
// An https issuer's jwks_uri must be https too: keys fetched in clear text
// could be swapped on the way, and a verifier trusting them would accept
// forged tokens. Another host is allowed (a CDN, or a separate keys host is
// common and the document that names it came over TLS from the issuer).
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
	if err := checkJWKSURI(cfg.Issuer, doc.JWKSURI); err != nil {
		return "", fmt.Errorf("verify: discovery: %w", err)
	}
	return doc.JWKSURI, nil
}

// ErrInsecureJWKSURI: an https issuer's discovery document names a jwks_uri
// that is not https (or a fetch was redirected off https).
var ErrInsecureJWKSURI = errors.New("verify: an https issuer's keys must be fetched over https")

// checkJWKSURI requires an absolute http(s) URL with a host, and https when
// the issuer is https.
func checkJWKSURI(issuer, jwksURI string) error {
	u, err := neturl.Parse(jwksURI)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("jwks_uri %q is not an absolute http(s) URL", jwksURI)
	}
	if httpsOnly(issuer) && u.Scheme != "https" {
		return fmt.Errorf("%w: jwks_uri %q", ErrInsecureJWKSURI, jwksURI)
	}
	return nil
}

// httpsOnly says whether every fetch for issuer must stay on https.
func httpsOnly(issuer string) bool {
	u, err := neturl.Parse(issuer)
	return err == nil && u.Scheme == "https"
}

// maxRedirects is net/http's own default limit.
const maxRedirects = 10

// guardRedirects returns a copy of c that, for an https issuer, refuses a
// redirect off https before following it (one would undo the jwks_uri
// check), then applies c's own redirect policy or net/http's default.
func guardRedirects(c *http.Client, issuer string) *http.Client {
	if !httpsOnly(issuer) {
		return c
	}
	guarded := *c
	next := c.CheckRedirect
	guarded.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if req.URL.Scheme != "https" {
			return fmt.Errorf("%w: redirected to %s", ErrInsecureJWKSURI, req.URL.Redacted())
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= maxRedirects {
			return fmt.Errorf("stopped after %d redirects", maxRedirects)
		}
		return nil
	}
	return &guarded
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
//
// While the issuer fails, fetches back off: after the n-th failure in a row
// none starts for MinRefresh·2^(n-1), capped at MaxBackoff. Meanwhile the
// stale set is served (within StaleIfError) and no request waits for the
// issuer: only the first failure after expiry is waited for, later retries
// run in the background.
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
	// failures counts the fetches that failed since the last success;
	// retryAt is when the next may start, lastErr why the last one failed.
	failures int
	retryAt  time.Time
	lastErr  error
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
// refetch when the rate limit and the backoff allow, since the issuer may
// have rotated. Over the limit, a request still waits for a fetch already
// running (one that another request with the same new kid started), unless
// the issuer is failing: then it answers from the stored set at once.
func (r *remoteKeys) KeyRead(ctx context.Context, kid string) (jwkset.JWK, error) {
	if err := r.ensureFresh(ctx); err != nil {
		return jwkset.JWK{}, err
	}
	jwk, err := r.MemoryJWKSet.KeyRead(ctx, kid)
	if !errors.Is(err, jwkset.ErrKeyNotFound) {
		return jwk, err
	}
	now := r.cfg.Now()
	r.mu.Lock()
	f := r.inflight
	if f == nil && !now.Before(r.retryAt) && r.unknown.AllowN(now, 1) {
		f = r.startLocked(ctx)
	}
	failing := r.failures > 0
	r.mu.Unlock()
	if f == nil || failing {
		// A fetch may have ended since the first read: its set is stored.
		return r.MemoryJWKSet.KeyRead(ctx, kid)
	}
	if ferr := f.wait(ctx); ferr != nil {
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

// ensureFresh refreshes an expired set. The first refresh after expiry is
// waited for, so a key the issuer dropped stops verifying at max-age. Once
// a refresh failed, the old set is used until StaleIfError past its expiry
// without waiting: retries start only after the backoff, in the background.
// Past StaleIfError: ErrKeysUnavailable.
func (r *remoteKeys) ensureFresh(ctx context.Context) error {
	now := r.cfg.Now()
	r.mu.Lock()
	if now.Before(r.expires) {
		r.mu.Unlock()
		return nil
	}
	stale := r.cfg.StaleIfError > 0 && now.Before(r.expires.Add(r.cfg.StaleIfError)) && !r.fetchedAt.IsZero()
	f := r.inflight
	if f == nil && now.Before(r.retryAt) {
		err := r.lastErr
		r.mu.Unlock()
		if stale {
			return nil
		}
		return fmt.Errorf("%w: backing off after: %w", ErrKeysUnavailable, err)
	}
	if f == nil {
		f = r.startLocked(ctx)
	}
	background := stale && r.failures > 0
	r.mu.Unlock()
	if background {
		return nil
	}
	err := f.wait(ctx)
	if err == nil || stale {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrKeysUnavailable, err)
}

// refresh fetches the JWKS (conditionally, with the last ETag) and replaces
// the set, or waits for the fetch already running.
func (r *remoteKeys) refresh(ctx context.Context) error {
	r.mu.Lock()
	f := r.inflight
	if f == nil {
		f = r.startLocked(ctx)
	}
	r.mu.Unlock()
	return f.wait(ctx)
}

// flight is one running fetch; err is set before done is closed.
type flight struct {
	done chan struct{}
	err  error
}

// wait returns the fetch's error, or ctx's if ctx ends first (the fetch
// goes on for the others).
func (f *flight) wait(ctx context.Context) error {
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// startLocked starts a fetch; r.mu must be held and no fetch running, so
// deciding and starting are one step and parallel callers share one
// request. The fetch outlives any one caller's cancellation, and its end
// records the success or moves the backoff.
func (r *remoteKeys) startLocked(ctx context.Context) *flight {
	f := &flight{done: make(chan struct{})}
	r.inflight = f
	go func() {
		f.err = r.fetch(context.WithoutCancel(ctx))
		now := r.cfg.Now()
		r.mu.Lock()
		r.inflight = nil
		if f.err != nil {
			r.failures++
			r.lastErr = f.err
			r.retryAt = now.Add(r.backoff(r.failures))
		} else {
			r.failures, r.lastErr, r.retryAt = 0, nil, time.Time{}
		}
		r.mu.Unlock()
		close(f.done)
	}()
	return f
}

// backoff is how long to wait after the n-th failed fetch in a row:
// MinRefresh doubled per failure, at most MaxBackoff.
func (r *remoteKeys) backoff(n int) time.Duration {
	d := r.cfg.MinRefresh
	for i := 1; i < n && d < r.cfg.MaxBackoff; i++ {
		if d > r.cfg.MaxBackoff/2 { // doubling would pass the cap (or overflow)
			d = r.cfg.MaxBackoff
			break
		}
		d *= 2
	}
	return max(min(d, r.cfg.MaxBackoff), r.cfg.MinRefresh)
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
