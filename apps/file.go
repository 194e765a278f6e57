package apps

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/wxtoken/wxtoken/handlers"
	"github.com/wxtoken/wxtoken/wechat"
)

// Config is what a File needs, all given by the caller.
type Config struct {
	// Path is the apps file (WXTOKEN_APPS_FILE); its extension says YAML
	// or JSON.
	Path string
	// MaxTokenTTL is WXTOKEN_TOKEN_TTL: the token lifetime of apps without
	// a token_ttl, and the longest one allowed.
	MaxTokenTTL time.Duration
	// ReloadInterval is how often Watch looks for a change; 0 means every
	// second.
	ReloadInterval time.Duration
	// Ticks, when set, paces Watch instead of a ticker every
	// ReloadInterval: the clock, which a test steps by hand to know how
	// many times the file was read.
	Ticks <-chan time.Time
	// Logger is told of loads, reloads and invalid changes; nil logs
	// nothing. Secrets never reach it.
	Logger *slog.Logger
}

// File is the apps of the apps file being served. Handlers look apps up
// per request, so a reload takes effect at the next one.
type File struct {
	cfg Config
	cur atomic.Pointer[Set]
	// last is the fingerprint of the file last read, good or bad; only
	// Watch uses it.
	last [32]byte
}

// Open loads the apps file; an invalid one is an error naming every bad
// app and field, and nothing is served.
func Open(cfg Config) (*File, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ReloadInterval <= 0 {
		cfg.ReloadInterval = time.Second
	}
	set, fp, err := load(cfg.Path, cfg.MaxTokenTTL)
	if err != nil {
		return nil, err
	}
	f := &File{cfg: cfg, last: fp}
	f.cur.Store(set)
	cfg.Logger.Info("apps file loaded", "file", cfg.Path, "apps", strings.Join(set.order, ","))
	return f, nil
}

// Lookup returns the credentials of appid, or false when it is not served.
func (f *File) Lookup(appid string) (wechat.Credentials, bool) { return f.cur.Load().Lookup(appid) }

// Default is the only app's appid; with several, a login must name its app.
func (f *File) Default() string { return f.cur.Load().Default() }

// Policy is appid's token lifetime and risk check.
func (f *File) Policy(appid string) handlers.AppPolicy { return f.cur.Load().Policy(appid) }

// Watch re-reads the apps file every ReloadInterval (or at each of Ticks) until ctx ends. A valid
// change is served from the next request; an invalid one is logged and the
// last good apps keep being served. Each distinct bad file is logged once.
// Run one Watch per File.
func (f *File) Watch(ctx context.Context) {
	ticks := f.cfg.Ticks
	if ticks == nil {
		t := time.NewTicker(f.cfg.ReloadInterval)
		defer t.Stop()
		ticks = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticks:
		}
		set, fp, err := load(f.cfg.Path, f.cfg.MaxTokenTTL)
		if fp == f.last && err == nil {
			continue
		}
		if err != nil {
			if fp != f.last {
				f.cfg.Logger.Error("apps file invalid: keeping the last good apps", "file", f.cfg.Path, "err", err.Error())
			}
			f.last = fp
			continue
		}
		f.last = fp
		f.cur.Store(set)
		f.cfg.Logger.Info("apps file reloaded", "file", f.cfg.Path, "apps", strings.Join(set.order, ","))
	}
}
