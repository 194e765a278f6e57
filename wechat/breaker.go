package wechat

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/sony/gobreaker/v2"
)

// breakers holds one circuit breaker per app: a wrong appsecret or an
// outage that WeChat applies to one mini program must not refuse the calls
// of the others. Breakers are made on first use; appids reach the client
// only after the service looked them up among the apps it serves.
type breakers struct {
	client *Client
	mu     sync.Mutex
	m      map[string]*gobreaker.CircuitBreaker[[]byte]
}

func (b *breakers) get(appID string) *gobreaker.CircuitBreaker[[]byte] {
	b.mu.Lock()
	defer b.mu.Unlock()
	if cb, ok := b.m[appID]; ok {
		return cb
	}
	cfg, log := b.client.cfg, b.client.log
	threshold := uint32(cfg.BreakerThreshold)
	cb := gobreaker.NewCircuitBreaker[[]byte](gobreaker.Settings{
		Name:        "wechat " + appID,
		MaxRequests: 1,
		Timeout:     cfg.BreakerCooldown,
		ReadyToTrip: func(n gobreaker.Counts) bool { return n.ConsecutiveFailures >= threshold },
		// A caller that went away says nothing about WeChat's health.
		IsExcluded: func(err error) bool { return errors.Is(err, context.Canceled) },
		OnStateChange: func(name string, from, to gobreaker.State) {
			cfg.Observer.BreakerState(name, breakerState(to))
			level := slog.LevelInfo
			if to == gobreaker.StateOpen {
				level = slog.LevelError
			}
			log.Log(context.Background(), level, "wechat circuit breaker", "appid", appID,
				"from", from.String(), "to", to.String())
		},
	})
	b.m[appID] = cb
	cfg.Observer.BreakerState(cb.Name(), breakerState(cb.State()))
	return cb
}
