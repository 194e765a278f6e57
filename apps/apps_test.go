package apps_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/apps"
	"github.com/wxtoken/wxtoken/handlers"
	"github.com/wxtoken/wxtoken/internal/syncbuf"
	"github.com/wxtoken/wxtoken/secret"
	"github.com/wxtoken/wxtoken/wechat"
)

// Made-up mini programs and their secrets, which must never show in an
// error or a log line.
const (
	appA    = "wxaaaa1111aaaa1111"
	appB    = "wxbbbb2222bbbb2222"
	appC    = "wxcccc3333cccc3333"
	secretA = "secret-a-never-logged-000000000001"
	secretB = "secret-b-never-logged-000000000002"
	secretC = "secret-c-never-logged-000000000003"
	maxTTL  = 2 * time.Hour
)

// MustWrite replaces path atomically, as a config management tool would,
// and returns it.
func MustWrite(tb testing.TB, path, content string) string {
	tb.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		tb.Fatal(err)
	}
	return path
}

func TestLoadServesEveryApp(t *testing.T) {
	dir := t.TempDir()
	secretFile := MustWrite(t, filepath.Join(dir, "a.secret"), "  "+secretA+"\n")
	tests := []struct {
		name, file, content string
	}{
		{"yaml", "apps.yaml", "apps:\n  - appid: " + appA + "\n    secret_file: " + secretFile +
			"\n    token_ttl: 10m\n    risk_check: flag\n  - {appid: " + appB + ", secret: \" " + secretB + " \", risk_check: \"refuse:3\"}\n"},
		{"yml", "apps.yml", "apps:\n  - {appid: " + appA + ", secret_file: " + secretFile + ", token_ttl: 10m, risk_check: flag}\n" +
			"  - {appid: " + appB + ", secret: " + secretB + ", risk_check: \"refuse:3\"}\n"},
		{"json", "apps.JSON", `{"apps": [{"appid": "` + appA + `", "secret_file": "` + secretFile + `", "token_ttl": "10m", "risk_check": "flag"},` +
			`{"appid": "` + appB + `", "secret": "` + secretB + `", "risk_check": "refuse:3"}]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			set, err := apps.Load(MustWrite(t, filepath.Join(dir, tc.file), tc.content), maxTTL)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []struct {
				appid  string
				secret string
				policy handlers.AppPolicy
			}{
				{appA, secretA, handlers.AppPolicy{TokenTTL: 10 * time.Minute, Risk: handlers.RiskCheck{Mode: handlers.RiskFlag}}},
				{appB, secretB, handlers.AppPolicy{Risk: handlers.RiskCheck{Mode: handlers.RiskRefuse, RefuseAt: 3}}},
			} {
				creds, ok := set.Lookup(want.appid)
				if !ok || creds.AppID != want.appid || creds.Secret.Reveal() != want.secret {
					t.Errorf("Lookup(%s) = %s, %v; want its trimmed secret", want.appid, creds.AppID, ok)
				}
				if got := set.Policy(want.appid); got != want.policy {
					t.Errorf("Policy(%s) = %+v, want %+v", want.appid, got, want.policy)
				}
			}
			if _, ok := set.Lookup(appC); ok {
				t.Error("an app the file does not list is served")
			}
			if d := set.Default(); d != "" {
				t.Errorf("Default with two apps = %q, want none: a login must name its app", d)
			}
			if ids := set.AppIDs(); len(ids) != 2 || ids[0] != appA || ids[1] != appB {
				t.Errorf("AppIDs = %v, want the file's order", ids)
			}
			for appid, want := range map[string]string{
				appA: "secret_file " + secretFile + " (read, masked), token_ttl 10m0s, risk_check flag",
				appB: "secret ******** (set, masked), token_ttl 2h0m0s (WXTOKEN_TOKEN_TTL), risk_check refuse:3",
			} {
				if got := set.Describe(appid); got != want {
					t.Errorf("Describe(%s) = %q, want %q", appid, got, want)
				}
			}
		})
	}
	one, err := apps.Load(MustWrite(t, filepath.Join(dir, "one.json"), `{"apps": [{"appid": "`+appC+`", "secret": "`+secretC+`"}]}`), maxTTL)
	if err != nil {
		t.Fatal(err)
	}
	if d := one.Default(); d != appC {
		t.Errorf("Default with one app = %q, want %s", d, appC)
	}
}

// TestLoadNamesAppAndField: every problem of a file is reported at once,
// naming the app and field, and never a secret or a Go type.
func TestLoadNamesAppAndField(t *testing.T) {
	dir := t.TempDir()
	empty := MustWrite(t, filepath.Join(dir, "empty.secret"), "\n")
	large := MustWrite(t, filepath.Join(dir, "large.secret"), strings.Repeat("s", 4<<10+1))
	tests := []struct {
		name, file, content string
		want                []string
	}{
		{"unknown field", "a.yaml", "apps:\n  - appid: " + appA + "\n    secret: " + secretA + "\n    colour: red\n",
			[]string{"WXTOKEN_APPS_FILE " + filepath.Join(dir, "a.yaml") + " is invalid", "app 1 (" + appA + ")", "colour"}},
		{"unknown field json", "a.json", `{"apps": [{"appid": "` + appA + `", "secret": "` + secretA + `", "ttl": "1h"}]}`,
			[]string{"app 1 (" + appA + ")", "ttl"}},
		{"unknown top-level field", "a.yaml", "apps: []\nextra: 1\n", []string{"file: ", "extra"}},
		{"repeated key", "a.yaml", "apps:\n  - {appid: " + appA + ", secret: x, secret: y}\n", []string{"app 1: ", `"secret" already defined`}},
		{"two JSON values", "a.json", `{"apps": []} {}`, []string{"file: more than one JSON value"}},
		{"duplicate appid", "a.yaml", "apps:\n  - {appid: " + appA + ", secret: x}\n  - {appid: " + appA + ", secret: y}\n",
			[]string{"app 2 (" + appA + "): appid: is a duplicate"}},
		{"bad fields", "a.yaml", "apps:\n  - {appid: " + appA + ", secret: x}\n  - {appid: " + appB + ", token_ttl: 48h, risk_check: refuse:9}\n",
			[]string{"app 2 (" + appB + "): secret: is missing", "app 2 (" + appB + "): token_ttl: must be between 1m and WXTOKEN_TOKEN_TTL (2h0m0s)",
				"app 2 (" + appB + "): risk_check"}},
		{"token_ttl not a duration", "a.yaml", "apps:\n  - {appid: " + appA + ", secret: x, token_ttl: soon}\n",
			[]string{"app 1 (" + appA + "): token_ttl: must be a duration"}},
		{"missing appid", "a.yaml", "apps:\n  - {secret: " + secretA + "}\n", []string{"app 1: appid: is missing"}},
		{"bad appid", "a.yaml", "apps:\n  - {appid: shop, secret: x}\n", []string{"app 1 (shop): appid"}},
		{"secret twice", "a.yaml", "apps:\n  - {appid: " + appA + ", secret: " + secretA + ", secret_file: /run/a}\n",
			[]string{"app 1 (" + appA + "): secret: set secret or secret_file, not both"}},
		{"secret file missing", "a.yaml", "apps:\n  - {appid: " + appA + ", secret_file: " + filepath.Join(dir, "none") + "}\n",
			[]string{"app 1 (" + appA + "): secret_file: cannot read " + filepath.Join(dir, "none")}},
		{"secret file empty", "a.yaml", "apps:\n  - {appid: " + appA + ", secret_file: " + empty + "}\n",
			[]string{"app 1 (" + appA + "): secret_file: " + empty + " is empty"}},
		{"secret file too large", "a.yaml", "apps:\n  - {appid: " + appA + ", secret_file: " + large + "}\n",
			[]string{"app 1 (" + appA + "): secret_file: cannot read " + large + ": file is too large to be an appsecret or unreadable"}},
		{"no apps", "a.yaml", "apps: []\n", []string{"lists no app"}},
		{"unknown extension", "a.toml", "apps = []\n", []string{".toml"}},
		{"missing file", "", "", []string{"WXTOKEN_APPS_FILE: "}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "never-written.yaml")
			if tc.file != "" {
				path = MustWrite(t, filepath.Join(dir, tc.file), tc.content)
			}
			set, err := apps.Load(path, maxTTL)
			if err == nil {
				t.Fatalf("an invalid file loaded %v apps", set.AppIDs())
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), secretA) || strings.Contains(err.Error(), " in type apps.") {
				t.Errorf("error %q shows a secret or an app's Go type", err)
			}
			if _, err := apps.Open(apps.Config{Path: path, MaxTokenTTL: maxTTL}); err == nil {
				t.Error("Open served an invalid file")
			}
		})
	}
}

// TestLoadRefusesFIFOs: a FIFO put where the apps file or a secret file is
// expected is refused at once; reading it would block start-up (or the
// reload watcher) until someone wrote to it.
func TestLoadRefusesFIFOs(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	viaSecret := MustWrite(t, filepath.Join(dir, "apps.yaml"), "apps:\n  - {appid: "+appA+", secret_file: "+fifo+"}\n")
	for _, path := range []string{fifo, viaSecret} {
		done := make(chan error, 1)
		go func() { _, err := apps.Load(path, maxTTL); done <- err }()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("%s: a FIFO was accepted", path)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: reading a FIFO blocked", path)
		}
	}
}

// TestWatchReloadsKeepingLastGood: a valid change (of the file or of a
// secret file) is served without a restart; an invalid one is logged once
// per distinct content however often it is read, and the last good apps
// keep being served.
func TestWatchReloadsKeepingLastGood(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "apps.yaml")
	secretFile := MustWrite(t, filepath.Join(dir, "b.secret"), secretB)
	appsA := "apps:\n  - {appid: " + appA + ", secret: \"" + secretA + "\"}\n"
	appsAB := appsA + "  - {appid: " + appB + ", secret_file: " + secretFile + ", token_ttl: 5m}\n"
	MustWrite(t, path, appsA)
	logs := new(syncbuf.Buffer)
	ticks := make(chan time.Time)
	f, err := apps.Open(apps.Config{Path: path, MaxTokenTTL: maxTTL, Ticks: ticks,
		Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); f.Watch(ctx) }()
	t.Cleanup(func() { cancel(); <-stopped })
	// polls makes Watch read the file n times and returns once the n-th
	// read is applied: Watch takes a tick only between two reads.
	polls := func(n int) {
		for range n + 1 {
			ticks <- time.Now()
		}
	}
	if d := f.Default(); d != appA {
		t.Errorf("Default with one app = %q", d)
	}
	lookup := func(appid string) (secret.String, bool) {
		creds, ok := f.Lookup(appid)
		return creds.Secret, ok
	}
	invalid := func() int { return strings.Count(logs.String(), "apps file invalid: keeping the last good apps") }

	MustWrite(t, path, appsAB)
	polls(1)
	if _, ok := lookup(appB); !ok || f.Policy(appB).TokenTTL != 5*time.Minute || f.Default() != "" {
		t.Errorf("after the reload: B served %v, policy %+v, Default %q", ok, f.Policy(appB), f.Default())
	}

	MustWrite(t, secretFile, secretC)
	polls(1)
	if s, _ := lookup(appB); s.Reveal() != secretC {
		t.Error("B's new secret is not served after its secret file changed")
	}

	MustWrite(t, path, appsA+"  - {appid: "+appB+", secert: typo}\n")
	polls(3)
	MustWrite(t, path, appsA+"  - {appid: "+appB+", secret: x, risk_check: sometimes}\n")
	polls(3)
	if n := invalid(); n != 2 {
		t.Errorf("%d invalid-file log lines for two bad files each read three times, want 2", n)
	}
	if s, ok := lookup(appB); !ok || s.Reveal() != secretC || f.Policy(appB).TokenTTL != 5*time.Minute {
		t.Error("the last good apps are not served while the file is invalid")
	}

	MustWrite(t, path, appsA)
	polls(1)
	if _, ok := lookup(appB); ok {
		t.Error("B is still served after the file dropped it")
	}
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if strings.Contains(line, "apps file invalid") && (!strings.Contains(line, `"level":"ERROR"`) || !strings.Contains(line, "app 2 ("+appB+")")) {
			t.Errorf("log line %s", line)
		}
	}
	if n := strings.Count(logs.String(), `"msg":"apps file reloaded"`); n != 3 {
		t.Errorf("%d reloads logged, want 3:\n%s", n, logs)
	}
	for _, s := range []string{secretA, secretB, secretC} {
		if strings.Contains(logs.String(), s) {
			t.Fatal("an appsecret is in the logs")
		}
	}
}

func TestSingleAndDev(t *testing.T) {
	single := apps.Single(wechat.Credentials{AppID: appA, Secret: secretA})
	if creds, ok := single.Lookup(appA); !ok || creds.Secret.Reveal() != secretA || single.Default() != appA {
		t.Errorf("Single: Lookup %v, Default %q", ok, single.Default())
	}
	if _, ok := single.Lookup(appB); ok {
		t.Error("Single serves another app")
	}
	dev := apps.Dev(appC, secretC)
	for appid, want := range map[string]bool{appA: true, appB: true, "wx123": false, "not-an-appid": false, "": false} {
		creds, ok := dev.Lookup(appid)
		if ok != want || (ok && (creds.AppID != appid || creds.Secret.Reveal() != secretC)) {
			t.Errorf("Dev Lookup(%q) = %v, want %v", appid, ok, want)
		}
	}
	if dev.Default() != appC || dev.Policy(appA) != (handlers.AppPolicy{}) {
		t.Errorf("Dev: Default %q, Policy %+v", dev.Default(), dev.Policy(appA))
	}
}

var (
	_ handlers.Apps = (*apps.File)(nil)
	_ handlers.Apps = (*apps.Set)(nil)
	_ handlers.Apps = apps.DevApps{}
)
