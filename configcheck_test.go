package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// configCheck runs `wxtoken config check` in-process.
func configCheck(t *testing.T, e env, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = run(context.Background(), append([]string{"wxtoken", "config", "check"}, args...), e.getenv, &out, &errOut)
	return out.String(), errOut.String(), err
}

// settingLine finds the line of one setting: name, value, source.
func settingLine(t *testing.T, out, name string) (value, source string) {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + name + `\s+(.*?)\s+(default|environment|flag|dev)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no line for %s in:\n%s", name, out)
	}
	return m[1], m[2]
}

func TestConfigCheckShowsValuesAndSources(t *testing.T) {
	t.Parallel()
	secretFile := filepath.Join(t.TempDir(), "appsecret")
	if err := os.WriteFile(secretFile, []byte("file-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		env        env
		args       []string
		want       map[string][2]string // name -> value, source
		neverShown []string
	}{
		{
			name: "environment and flags",
			env:  env{"WECHAT_APPID": "wxabc", "WECHAT_SECRET": "env-secret-abcdef", "WXTOKEN_TOKEN_TTL": "1h"},
			args: []string{"--addr", "127.0.0.1:9090", "--keys-dir", "/srv/keys"},
			want: map[string][2]string{
				"WXTOKEN_ADDR":       {"127.0.0.1:9090", "flag"},
				"WXTOKEN_KEYS_DIR":   {"/srv/keys", "flag"},
				"WXTOKEN_TOKEN_TTL":  {"1h0m0s", "environment"},
				"WXTOKEN_ISSUER":     {"http://localhost:8080", "default"},
				"WECHAT_APPID":       {"wxabc", "environment"},
				"WECHAT_SECRET":      {"******** (set, masked)", "environment"},
				"WXTOKEN_LOGIN_RATE": {"10/s", "default"},
			},
			neverShown: []string{"env-secret-abcdef"},
		},
		{
			name: "secret file",
			env:  env{"WECHAT_APPID": "wxabc", "WECHAT_SECRET_FILE": secretFile},
			want: map[string][2]string{
				"WECHAT_SECRET_FILE": {secretFile, "environment"},
				"WECHAT_SECRET":      {"(none)", "default"},
			},
			neverShown: []string{"file-secret-0123456789"},
		},
		{
			name: "dev",
			env:  env{},
			args: []string{"--dev"},
			want: map[string][2]string{
				"WXTOKEN_KEYS_DIR": {defaultDevKeysDir, "dev"},
				"WECHAT_APPID":     {devAppID, "dev"},
				"WECHAT_API_BASE":  {"(the built-in emulator on a loopback port)", "dev"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, err := configCheck(t, tt.env, tt.args...)
			if err != nil {
				t.Fatalf("config check: %v\n%s%s", err, out, errOut)
			}
			for name, want := range tt.want {
				if v, s := settingLine(t, out, name); v != want[0] || s != want[1] {
					t.Errorf("%s = %q from %s, want %q from %s", name, v, s, want[0], want[1])
				}
			}
			for _, secret := range tt.neverShown {
				if strings.Contains(out+errOut, secret) {
					t.Errorf("config check printed a secret:\n%s%s", out, errOut)
				}
			}
		})
	}
}

// TestConfigCheckListsEveryProblem: a bad configuration exits non-zero with
// one line per problem, and shows each invalid value as it was written.
func TestConfigCheckListsEveryProblem(t *testing.T) {
	t.Parallel()
	out, errOut, err := configCheck(t, env{"WXTOKEN_LOGIN_RATE": "abc", "WXTOKEN_TOKEN_TTL": "48h", "WECHAT_SECRET": "s3cret-value"})
	if !errors.Is(err, errConfigInvalid) {
		t.Fatalf("err = %v, want errConfigInvalid", err)
	}
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	want := []string{"WXTOKEN_TOKEN_TTL must be between", "WXTOKEN_LOGIN_RATE must be a number", "WECHAT_APPID must be set"}
	if len(lines) != len(want) {
		t.Fatalf("want %d problem lines, got:\n%s", len(want), errOut)
	}
	for _, w := range want {
		if !strings.Contains(errOut, "problem: "+w) {
			t.Errorf("no problem line %q in:\n%s", w, errOut)
		}
	}
	if v, s := settingLine(t, out, "WXTOKEN_LOGIN_RATE"); v != `"abc" (invalid)` || s != "environment" {
		t.Errorf("WXTOKEN_LOGIN_RATE shown as %q from %s", v, s)
	}
	if strings.Contains(out+errOut, "s3cret-value") {
		t.Errorf("config check printed the secret")
	}
}

// TestConfigCheckShowsEveryVariable: every variable the configuration reads
// has a line, so an operator never misses one.
func TestConfigCheckShowsEveryVariable(t *testing.T) {
	t.Parallel()
	cfg := loadConfig(env{}.getenv)
	if len(cfg.names) < 20 {
		t.Fatalf("loadConfig read only %d variables", len(cfg.names))
	}
	out, _, _ := configCheck(t, env{})
	for _, name := range cfg.names {
		if _, ok := settingValues[name]; !ok {
			t.Errorf("config check has no value for %s", name)
		}
		settingLine(t, out, name)
	}
}

// TestKeysCommandsValidateOnlyWhatTheyUse: a broken serving setting never
// blocks a key command (an emergency rotation above all); a broken setting
// the key commands read still stops them.
func TestKeysCommandsValidateOnlyWhatTheyUse(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "keys")
	base := env{"WXTOKEN_KEYS_DIR": dir}
	mustRun(t, base, "keys", "init")
	for _, e := range []env{
		base.with("WXTOKEN_LOGIN_RATE", "abc"),
		base.with("WXTOKEN_READ_TIMEOUT", "1ns", "WXTOKEN_UPSTREAM_CONCURRENCY", "0"),
	} {
		mustRun(t, e, "keys", "list")
		mustRun(t, e, "keys", "rotate", "--now")
	}
	for _, bad := range []string{"WXTOKEN_TOKEN_TTL", "WXTOKEN_LEEWAY", "WXTOKEN_JWKS_MAX_AGE", "WXTOKEN_RELOAD_INTERVAL"} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), []string{"wxtoken", "keys", "list"}, base.with(bad, "abc").getenv, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("keys list with %s=abc: err = %v", bad, err)
		}
	}
}
