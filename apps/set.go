package apps

import (
	"regexp"
	"time"

	"github.com/wxtoken/wxtoken/handlers"
	"github.com/wxtoken/wxtoken/secret"
	"github.com/wxtoken/wxtoken/wechat"
)

// appIDPattern is the shape of a mini program's appid: "wx" and 16 letters
// or digits. A typo caught at start beats a 40013 at the first login.
var appIDPattern = regexp.MustCompile(`^wx[0-9A-Za-z]{16}$`)

// servedApp is one app ready to serve.
type servedApp struct {
	creds      wechat.Credentials
	policy     handlers.AppPolicy
	secretFile string // where the secret came from, "" when inline
}

// Set is an immutable set of apps, safe for concurrent use; a reload makes
// a new one.
type Set struct {
	byID  map[string]servedApp
	order []string
	// defaultTTL is the token lifetime of apps without a token_ttl, for
	// Describe.
	defaultTTL time.Duration
}

// Single is the one app of WECHAT_APPID and WECHAT_SECRET.
func Single(creds wechat.Credentials) *Set {
	return &Set{byID: map[string]servedApp{creds.AppID: {creds: creds}}, order: []string{creds.AppID}}
}

// Lookup returns the credentials of appid, or false when it is not served.
func (s *Set) Lookup(appid string) (wechat.Credentials, bool) {
	a, ok := s.byID[appid]
	return a.creds, ok
}

// Default is the only app's appid; with several, a login must name its app.
func (s *Set) Default() string {
	if len(s.order) == 1 {
		return s.order[0]
	}
	return ""
}

// Policy is appid's token lifetime and risk check.
func (s *Set) Policy(appid string) handlers.AppPolicy { return s.byID[appid].policy }

// AppIDs lists the apps in the order the file lists them.
func (s *Set) AppIDs() []string { return append([]string(nil), s.order...) }

// Describe is appid's line in 'config check': where its secret comes from
// (never the secret), its token lifetime and its risk check.
func (s *Set) Describe(appid string) string {
	a := s.byID[appid]
	sec := "secret ******** (set, masked)"
	if a.secretFile != "" {
		sec = "secret_file " + a.secretFile + " (read, masked)"
	}
	ttl := a.policy.TokenTTL.String()
	if a.policy.TokenTTL == 0 {
		ttl = s.defaultTTL.String() + " (WXTOKEN_TOKEN_TTL)"
	}
	return sec + ", token_ttl " + ttl + ", risk_check " + a.policy.Risk.String()
}

// DevApps serves any well-formed appid, all with one secret: the WeChat
// emulator's, in dev mode.
type DevApps struct {
	def    string
	secret secret.String
}

// Dev serves any appid in dev mode with sec; a login naming no appid gets
// defaultAppID.
func Dev(defaultAppID string, sec secret.String) DevApps {
	return DevApps{def: defaultAppID, secret: sec}
}

// Lookup accepts every appid of the right shape.
func (d DevApps) Lookup(appid string) (wechat.Credentials, bool) {
	return wechat.Credentials{AppID: appid, Secret: d.secret}, appIDPattern.MatchString(appid)
}

// Default is the appid of a login that names none.
func (d DevApps) Default() string { return d.def }

// Policy is the service's defaults for every app.
func (d DevApps) Policy(string) handlers.AppPolicy { return handlers.AppPolicy{} }
