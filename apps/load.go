package apps

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v4"

	"github.com/wxtoken/wxtoken/handlers"
	"github.com/wxtoken/wxtoken/internal/bounded"
	"github.com/wxtoken/wxtoken/secret"
	"github.com/wxtoken/wxtoken/wechat"
)

// Caps on what reading the apps file takes in: a few hundred apps fit in
// the file's, and an appsecret (32 hex digits) in a secret file's with a
// lot to spare.
const (
	maxFileBytes       = 1 << 20
	maxSecretFileBytes = 4 << 10
)

// appEntry is one app as written in the apps file (`apps:` a list of
// these; decode reads each entry on its own).
type appEntry struct {
	AppID      string `yaml:"appid" json:"appid"`
	Secret     string `yaml:"secret" json:"secret"`
	SecretFile string `yaml:"secret_file" json:"secret_file"`
	TokenTTL   string `yaml:"token_ttl" json:"token_ttl"`
	RiskCheck  string `yaml:"risk_check" json:"risk_check"`
}

// fileError is an invalid apps file: every problem found, each naming the
// app and the field it concerns.
type fileError struct {
	path     string
	problems []string
}

func (e *fileError) Error() string {
	return fmt.Sprintf("WXTOKEN_APPS_FILE %s is invalid: %s", e.path, strings.Join(e.problems, "; "))
}

// Load reads, decodes (strictly: unknown fields are errors) and validates
// the apps file at path, reading each app's secret file. maxTTL is
// WXTOKEN_TOKEN_TTL, the default and the longest token_ttl: key retention
// is computed from it. The error of an invalid file lists every problem.
func Load(path string, maxTTL time.Duration) (*Set, error) {
	set, _, err := load(path, maxTTL)
	return set, err
}

// load is Load that also returns a fingerprint, which changes whenever the
// file or a secret does, so a reload can tell whether anything changed.
func load(path string, maxTTL time.Duration) (set *Set, fingerprint [32]byte, err error) {
	raw, err := bounded.ReadFile(path, maxFileBytes)
	if err != nil {
		return nil, fingerprint, fmt.Errorf("WXTOKEN_APPS_FILE: %w", err)
	}
	h := sha256.New()
	h.Write(raw)
	entries, problems := decode(path, raw)
	set = &Set{byID: map[string]servedApp{}, defaultTTL: maxTTL}
	for i, e := range entries {
		name := appName(i, e.AppID)
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
		return nil, fingerprint, &fileError{path: path, problems: problems}
	}
	return set, fingerprint, nil
}

// decode decodes the file by its extension: the top level strictly, then
// each app strictly, so an unknown field is reported with its app.
func decode(path string, raw []byte) ([]appEntry, []string) {
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
		// yaml names the Go type in an unknown field's error; the
		// operator knows the app, which the problem names instead.
		goType := fmt.Sprintf(" in type %T", appEntry{})
		for i := range top.Apps {
			var loose, e appEntry
			_ = top.Apps[i].Load(&loose)
			if err := top.Apps[i].Load(&e, yaml.WithKnownFields(), yaml.WithUniqueKeys()); err != nil {
				problems = append(problems, appName(i, loose.AppID)+": "+strings.ReplaceAll(err.Error(), goType, ""))
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

// appName names the i-th app in a problem: "app 2 (wx…)", or "app 2"
// while its appid is unknown.
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

// readSecretFile reads an appsecret from a mounted file.
func readSecretFile(path string) (secret.String, error) {
	b, err := bounded.ReadFile(path, maxSecretFileBytes)
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
