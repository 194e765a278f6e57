package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"go.yaml.in/yaml/v4"

	"github.com/wxtoken/wxtoken/handlers"
	"github.com/wxtoken/wxtoken/secret"
	"github.com/wxtoken/wxtoken/wechat"
)

// maxAppsFileBytes bounds the apps file: a few hundred apps fit easily.
const maxAppsFileBytes = 1 << 20

// appIDPattern is the shape of a mini program's appid: "wx" and 16 letters
// or digits. A typo caught at start beats a 40013 at the first login.
var appIDPattern = regexp.MustCompile(`^wx[0-9A-Za-z]{16}$`)

// appEntry is one app as written in the apps file (WXTOKEN_APPS_FILE,
// `apps:` a list of these; decodeApps reads each entry on its own).
type appEntry struct {
	AppID      string `yaml:"appid" json:"appid"`
	Secret     string `yaml:"secret" json:"secret"`
	SecretFile string `yaml:"secret_file" json:"secret_file"`
	TokenTTL   string `yaml:"token_ttl" json:"token_ttl"`
	RiskCheck  string `yaml:"risk_check" json:"risk_check"`
}

// servedApp is one app ready to serve.
type servedApp struct {
	creds      wechat.Credentials
	policy     handlers.AppPolicy
	secretFile string // where the secret came from, "" when inline
}

// appSet is an immutable set of apps; handlers.Apps over it.
type appSet struct {
	byID  map[string]servedApp
	order []string
}

func (s *appSet) Lookup(appid string) (wechat.Credentials, bool) {
	a, ok := s.byID[appid]
	return a.creds, ok
}

// Default is the only app's appid; with several, a login must name its app.
func (s *appSet) Default() string {
	if len(s.order) == 1 {
		return s.order[0]
	}
	return ""
}

func (s *appSet) Policy(appid string) handlers.AppPolicy { return s.byID[appid].policy }

// appsFileError is an invalid apps file: every problem found, each naming
// the app and the field it concerns.
type appsFileError struct {
	path     string
	problems []string
}

func (e *appsFileError) Error() string {
	return fmt.Sprintf("WXTOKEN_APPS_FILE %s is invalid: %s", e.path, strings.Join(e.problems, "; "))
}

// loadAppsFile reads, decodes (strictly: unknown fields are errors) and
// validates the apps file, reading each app's secret file. maxTTL is
// WXTOKEN_TOKEN_TTL, the default and the longest token_ttl: key retention
// is computed from it. fingerprint changes whenever the file or a secret
// does, so a reload can tell whether anything changed.
func loadAppsFile(path string, maxTTL time.Duration) (set *appSet, fingerprint [32]byte, err error) {
	raw, err := readBounded(path, maxAppsFileBytes)
	if err != nil {
		return nil, fingerprint, fmt.Errorf("WXTOKEN_APPS_FILE: %w", err)
	}
	h := sha256.New()
	h.Write(raw)
	fingerprint = [32]byte(h.Sum(nil))
	entries, problems := decodeApps(path, raw)
	set = &appSet{byID: map[string]servedApp{}}
	for i, e := range entries {
		name := fmt.Sprintf("app %d", i+1)
		if e.AppID != "" {
			name += " (" + e.AppID + ")"
		}
		bad := func(field, format string, args ...any) {
			problems = append(problems, name+": "+field+": "+fmt.Sprintf(format, args...))
		}
		switch {
		case e.AppID == "":
			bad("appid", "is missing")
		case !appIDPattern.MatchString(e.AppID):
			bad("appid", "must be wx followed by 16 letters or digits")
		}
		if _, dup := set.byID[e.AppID]; dup && e.AppID != "" {
			bad("appid", "is a duplicate: each app may be listed once")
		}
		a := servedApp{creds: wechat.Credentials{AppID: e.AppID}, secretFile: e.SecretFile}
		switch {
		case e.Secret != "" && e.SecretFile != "":
			bad("secret", "set secret or secret_file, not both")
		case e.SecretFile != "":
			s, err := readSecretFile(e.SecretFile)
			if err != nil {
				bad("secret_file", "%v", err)
			}
			a.creds.Secret = s
		case strings.TrimSpace(e.Secret) != "":
			a.creds.Secret = secret.String(strings.TrimSpace(e.Secret))
		default:
			bad("secret", "is missing: set secret or secret_file")
		}
		if e.TokenTTL != "" {
			d, err := time.ParseDuration(e.TokenTTL)
			switch {
			case err != nil:
				bad("token_ttl", "must be a duration like 2h or 30m")
			case d < time.Minute || d > maxTTL:
				bad("token_ttl", "must be between 1m and WXTOKEN_TOKEN_TTL (%s), which key retention is computed from", maxTTL)
			default:
				a.policy.TokenTTL = d
			}
		}
		rc, err := handlers.ParseRiskCheck(e.RiskCheck)
		if err != nil {
			bad("risk_check", "%v", err)
		}
		a.policy.Risk = rc
		h.Write([]byte(e.AppID + "\x00" + a.creds.Secret.Reveal() + "\x00"))
		if _, dup := set.byID[e.AppID]; !dup {
			set.order = append(set.order, e.AppID)
		}
		set.byID[e.AppID] = a
	}
	if len(entries) == 0 && len(problems) == 0 {
		problems = append(problems, "apps: lists no app")
	}
	fingerprint = [32]byte(h.Sum(nil))
	if len(problems) > 0 {
		return nil, fingerprint, &appsFileError{path: path, problems: problems}
	}
	return set, fingerprint, nil
}

// decodeApps decodes the file by its extension: the top level strictly,
// then each app strictly, so an unknown field is reported with its app.
func decodeApps(path string, raw []byte) ([]appEntry, []string) {
	var entries []appEntry
	var problems []string
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".yaml", ".yml":
		var top struct {
			Apps []yaml.Node `yaml:"apps"`
		}
		if err := yaml.Load(raw, &top, yaml.WithKnownFields(), yaml.WithUniqueKeys()); err != nil {
			return nil, []string{"file: " + err.Error()}
		}
		for i := range top.Apps {
			var loose, e appEntry
			_ = top.Apps[i].Load(&loose)
			if err := top.Apps[i].Load(&e, yaml.WithKnownFields(), yaml.WithUniqueKeys()); err != nil {
				problems = append(problems, appName(i, loose.AppID)+": "+strings.ReplaceAll(err.Error(), " in type main.appEntry", ""))
			}
			entries = append(entries, e)
		}
	case ".json":
		var top struct {
			Apps []json.RawMessage `json:"apps"`
		}
		if err := strictJSON(raw, &top); err != nil {
			return nil, []string{"file: " + err.Error()}
		}
		for i, r := range top.Apps {
			var loose, e appEntry
			_ = json.Unmarshal(r, &loose)
			if err := strictJSON(r, &e); err != nil {
				problems = append(problems, appName(i, loose.AppID)+": "+err.Error())
			}
			entries = append(entries, e)
		}
	default:
		return nil, []string{fmt.Sprintf("file: extension %q is neither .yaml, .yml nor .json", ext)}
	}
	return entries, problems
}

func appName(i int, appid string) string {
	if appid == "" {
		return fmt.Sprintf("app %d", i+1)
	}
	return fmt.Sprintf("app %d (%s)", i+1, appid)
}

// strictJSON decodes one JSON value, refusing unknown fields and trailing data.
func strictJSON(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("more than one JSON value")
	}
	return nil
}

// readBounded reads at most limit bytes of path; a larger file is an error.
//
// It opens with O_NONBLOCK and checks the opened file is a regular one, so a
// FIFO (or a device) put at the path can never block start-up or the reload
// watcher.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is over %d bytes", path, limit)
	}
	return b, nil
}

// readSecretFile reads an appsecret from a mounted file.
func readSecretFile(path string) (secret.String, error) {
	b, err := readBounded(path, maxSecretFileBytes)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
			return "", fmt.Errorf("cannot read %s: %w", path, errors.Unwrap(err))
		}
		return "", fmt.Errorf("cannot read %s: file is too large to be an appsecret or unreadable", path)
	}
	s := secret.String(strings.TrimSpace(string(b)))
	if s.Empty() {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

// liveApps is the apps being served: one app from WECHAT_APPID, or the apps
// file, reloaded when it changes. Handlers look apps up per request, so a
// reload takes effect at the next one.
type liveApps struct {
	cur atomic.Pointer[appSet]
}

func (l *liveApps) Lookup(appid string) (wechat.Credentials, bool) { return l.cur.Load().Lookup(appid) }
func (l *liveApps) Default() string                                { return l.cur.Load().Default() }
func (l *liveApps) Policy(appid string) handlers.AppPolicy         { return l.cur.Load().Policy(appid) }

// singleAppSet is the one app of WECHAT_APPID and WECHAT_SECRET.
func singleAppSet(creds wechat.Credentials) *appSet {
	return &appSet{byID: map[string]servedApp{creds.AppID: {creds: creds}}, order: []string{creds.AppID}}
}

// watchAppsFile re-reads the apps file every interval. A valid change is
// served from the next request; an invalid one is logged and the last good
// apps keep being served. Each distinct bad file is logged once.
func watchAppsFile(ctx context.Context, l *liveApps, path string, maxTTL, every time.Duration, last [32]byte, logger *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		set, fp, err := loadAppsFile(path, maxTTL)
		if fp == last && err == nil {
			continue
		}
		if err != nil {
			if fp != last {
				logger.Error("apps file invalid: keeping the last good apps", "file", path, "err", err.Error())
			}
			last = fp
			continue
		}
		last = fp
		l.cur.Store(set)
		logger.Info("apps file reloaded", "file", path, "apps", strings.Join(set.order, ","))
	}
}

// devApps serves any appid in dev mode, all with the emulator's secret.
type devApps struct {
	def    string
	secret secret.String
}

func (d devApps) Lookup(appid string) (wechat.Credentials, bool) {
	return wechat.Credentials{AppID: appid, Secret: d.secret}, appIDPattern.MatchString(appid)
}

func (d devApps) Default() string                  { return d.def }
func (d devApps) Policy(string) handlers.AppPolicy { return handlers.AppPolicy{} }

// servedApps builds the apps serve answers for: any appid in dev mode, the
// apps file when WXTOKEN_APPS_FILE is set (with a watcher that reloads it),
// or the one app of WECHAT_APPID.
func servedApps(cfg *config, logger *slog.Logger) (handlers.Apps, func(context.Context), error) {
	switch {
	case cfg.Dev:
		return devApps{def: cfg.AppID, secret: cfg.Secret}, nil, nil
	case cfg.AppsFile != "":
		set, fp, err := loadAppsFile(cfg.AppsFile, cfg.TokenTTL)
		if err != nil {
			return nil, nil, err
		}
		l := new(liveApps)
		l.cur.Store(set)
		logger.Info("apps file loaded", "file", cfg.AppsFile, "apps", strings.Join(set.order, ","))
		watch := func(ctx context.Context) {
			watchAppsFile(ctx, l, cfg.AppsFile, cfg.TokenTTL, cfg.ReloadInterval, fp, logger)
		}
		return l, watch, nil
	default:
		l := new(liveApps)
		l.cur.Store(singleAppSet(wechat.Credentials{AppID: cfg.AppID, Secret: cfg.Secret}))
		return l, nil, nil
	}
}

// describe is the app's line in config check, its secret masked.
func (a servedApp) describe(defaultTTL time.Duration) string {
	sec := "secret ******** (set, masked)"
	if a.secretFile != "" {
		sec = "secret_file " + a.secretFile + " (read, masked)"
	}
	ttl := a.policy.TokenTTL.String()
	if a.policy.TokenTTL == 0 {
		ttl = defaultTTL.String() + " (WXTOKEN_TOKEN_TTL)"
	}
	return sec + ", token_ttl " + ttl + ", risk_check " + a.policy.Risk.String()
}
