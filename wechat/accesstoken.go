package wechat

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/wxtoken/wxtoken/secret"
)

// Access-token fetching: stable_token in normal mode, so replicas that each
// fetch and cache their own copy never invalidate one another.
const (
	// tokenFetchAttempts bounds tries of one stable_token fetch. Fetching is
	// safe to repeat (normal mode answers the same token).
	tokenFetchAttempts = 3
	tokenRetryBase     = 200 * time.Millisecond
	// tokenMargin is how long before WeChat's expiry a cached token is
	// replaced; WeChat's answers always have at least 300 s left.
	tokenMargin = time.Minute
	// maxTokenLife is the longest expires_in WeChat documents. A larger
	// answer is clamped: in seconds it could overflow time.Duration and
	// leave a token that is never cached.
	maxTokenLife = 7200 * time.Second
)

// tokenFetchBudget bounds one access_token fetch, its retries included,
// when each request may take timeout.
func tokenFetchBudget(timeout time.Duration) time.Duration {
	return tokenFetchAttempts * timeout
}

type cachedToken struct {
	value     secret.String
	refreshAt time.Time
}

// tokenCache keeps each app's access_token in memory. One caller fetches
// while concurrent callers wait for that same fetch (no stampede).
type tokenCache struct {
	client  *Client
	mu      sync.Mutex
	entries map[string]cachedToken
	group   singleflight.Group
}

func (t *tokenCache) get(ctx context.Context, app Credentials) (string, error) {
	now := t.client.cfg.Now()
	t.mu.Lock()
	e, ok := t.entries[app.AppID]
	t.mu.Unlock()
	if ok && now.Before(e.refreshAt) {
		return e.value.Reveal(), nil
	}
	ch := t.group.DoChan(app.AppID, func() (any, error) {
		// The fetch serves every waiter, so one caller going away must not cancel it.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tokenFetchBudget(t.client.cfg.Timeout))
		defer cancel()
		v, err := t.fetch(fctx, app)
		t.client.cfg.Observer.AccessTokenRefresh(err)
		if err != nil {
			return nil, err
		}
		t.mu.Lock()
		t.entries[app.AppID] = v
		t.mu.Unlock()
		return v.value, nil
	})
	select {
	case <-ctx.Done():
		return "", transportError(ctx, OpStableToken, ctx.Err())
	case r := <-ch:
		if r.Err != nil {
			return "", r.Err
		}
		return r.Val.(secret.String).Reveal(), nil
	}
}

// invalidate forgets tok when WeChat says it is no longer good, unless a
// newer token has already replaced it.
func (t *tokenCache) invalidate(appID, tok string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.entries[appID]; ok && e.value.Reveal() == tok {
		delete(t.entries, appID)
	}
}

// fetch asks stable_token, retrying with jittered backoff when WeChat is
// busy or unreachable: repeating a normal-mode fetch is harmless.
func (t *tokenCache) fetch(ctx context.Context, app Credentials) (cachedToken, error) {
	body, err := json.Marshal(map[string]any{
		"grant_type": "client_credential", "appid": app.AppID, "secret": app.Secret.Reveal(), "force_refresh": false,
	})
	if err != nil {
		return cachedToken{}, err
	}
	hide := newRedactor(app.Secret.Reveal())
	var lastErr error
	for attempt := 0; attempt < tokenFetchAttempts; attempt++ {
		if attempt > 0 {
			if err := sleep(ctx, jitter(tokenRetryBase<<(attempt-1))); err != nil {
				break
			}
		}
		var ans struct {
			AccessToken secret.String `json:"access_token"`
			ExpiresIn   int64         `json:"expires_in"`
			errAnswer
		}
		err := t.client.call(ctx, app.AppID, OpStableToken, http.MethodPost, "/cgi-bin/stable_token", url.Values{}, body, &ans, hide)
		if err == nil {
			if ans.AccessToken.Empty() || ans.ExpiresIn <= 0 {
				return cachedToken{}, &UpstreamError{Op: OpStableToken, Kind: BadAnswer, Err: errors.New("answer lacks access_token or expires_in")}
			}
			life := time.Duration(min(ans.ExpiresIn, int64(maxTokenLife/time.Second))) * time.Second
			return cachedToken{value: ans.AccessToken, refreshAt: t.client.cfg.Now().Add(life - min(tokenMargin, life/5))}, nil
		}
		lastErr = err
		if !retryableFetch(err) {
			break
		}
	}
	t.client.logConfigFault(lastErr, app)
	return cachedToken{}, lastErr
}

func retryableFetch(err error) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Code == CodeBusy
	}
	var ue *UpstreamError
	if errors.As(err, &ue) {
		return ue.Kind == Unreachable || ue.Kind == Timeout || (ue.Kind == BadStatus && ue.Status >= 500)
	}
	return false
}

// withAccessToken runs call with the app's access_token. When WeChat says
// the token is invalid or expired, it is refreshed once and call retried once.
func (c *Client) withAccessToken(ctx context.Context, app Credentials, call func(tok string) error) error {
	tok, err := c.tokens.get(ctx, app)
	if err != nil {
		return err
	}
	err = call(tok)
	var ae *APIError
	if !errors.As(err, &ae) || (ae.Code != CodeInvalidCredential && ae.Code != CodeTokenExpired && ae.Code != CodeInvalidAccessToken) {
		return err
	}
	c.log.InfoContext(ctx, "wechat access_token refused; refreshing once", "appid", app.AppID, "errcode", ae.Code)
	c.tokens.invalidate(app.AppID, tok)
	if tok, err = c.tokens.get(ctx, app); err != nil {
		return err
	}
	return call(tok)
}
