package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/wxtoken/wxtoken/keys"
)

const keysUsage = `Usage: wxtoken keys <init|rotate|list|prune> [flags]

  init [--alg ES256|EdDSA|RS256]  create the keys directory; an existing one is left as it is (an error
                                  when --alg names another algorithm than its active signing key's)
  rotate [--now] [--alg ALG]      next → active → retired, and a fresh next key. --now (after a leak):
                                  drop every old key at once; tokens they signed stop working. --alg:
                                  the fresh next signing key is of ALG (ES256, EdDSA or RS256), so the
                                  rotation after signs with it; the old algorithm verifies until retired
  list [--json]                   kid, kind, alg, state, created, prunable-after; and stray files an
                                  interrupted change left behind (state "stray" in --json)
  prune                           delete retired keys past token TTL + leeway, and stray files

The directory is WXTOKEN_KEYS_DIR (default ./keys), or --dir. list and prune use WXTOKEN_TOKEN_TTL
and WXTOKEN_LEEWAY to tell when a retired key can go.
`

func runKeys(_ context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, keysUsage)
		return errUsage
	}
	sub := args[0]
	if sub == "-h" || sub == "--help" || sub == "help" {
		fmt.Fprint(stdout, keysUsage)
		return nil
	}
	cfg := loadConfig(getenv)
	fs := newFlagSet("keys "+sub, keysUsage, stdout, stderr)
	fs.StringVar(&cfg.KeysDir, "dir", cfg.KeysDir, "keys directory (WXTOKEN_KEYS_DIR)")
	var alg string
	var now, asJSON bool
	switch sub {
	case "init":
		fs.StringVar(&alg, "alg", defaultSigningAlg, "signing algorithm: ES256, EdDSA or RS256")
	case "rotate":
		fs.BoolVar(&now, "now", false, "emergency rotation: drop all old keys immediately")
		fs.StringVar(&alg, "alg", "", "signing algorithm of the fresh keys: ES256, EdDSA or RS256 (default: unchanged)")
	case "list":
		fs.BoolVar(&asJSON, "json", false, "print JSON for scripts")
	case "prune":
	default:
		fmt.Fprintf(stderr, "unknown keys command %q\n\n%s", sub, keysUsage)
		return errUsage
	}
	if done, err := parseFlags(fs, args[1:], stdout); done {
		return err
	}
	if err := cfg.validateKeys(); err != nil {
		return err
	}
	dir := keys.NewDir(cfg.KeysDir, cfg.retention(), nil)
	switch sub {
	case "init":
		created, err := dir.Init(alg)
		if err != nil {
			return err
		}
		if !created {
			if algSet(fs) {
				if err := sameAlg(dir, cfg, alg); err != nil {
					return err
				}
			}
			fmt.Fprintf(stdout, "%s already holds keys; nothing changed (use 'wxtoken keys rotate' to rotate)\n", cfg.KeysDir)
			return nil
		}
		fmt.Fprintf(stdout, "created %s keys in %s\n", alg, cfg.KeysDir)
		return printKeys(stdout, dir, false)
	case "rotate":
		if !now {
			warnYoungNext(stderr, dir, cfg)
		}
		if err := dir.RotateTo(alg, now); err != nil {
			return err
		}
		if now {
			fmt.Fprintln(stdout, "emergency rotation done: all earlier keys are gone; tokens they signed no longer verify")
		} else {
			fmt.Fprintln(stdout, "rotated: the next key now signs; the old one stays published until its tokens expire")
		}
		return printKeys(stdout, dir, false)
	case "list":
		return printKeys(stdout, dir, asJSON)
	default: // prune
		pruned, err := dir.Prune()
		if err != nil {
			return err
		}
		for _, k := range pruned {
			fmt.Fprintf(stdout, "pruned %s key %s\n", k.Kind, k.KID)
		}
		strays, err := dir.RemoveStrays()
		for _, st := range strays {
			fmt.Fprintf(stdout, "removed stray file %s\n", st.File)
		}
		if err != nil {
			return err
		}
		if len(pruned) == 0 && len(strays) == 0 {
			fmt.Fprintln(stdout, "nothing to prune")
		}
		return nil
	}
}

// algSet reports whether --alg was given on the command line, so a plain
// 'keys init' on an existing directory of any algorithm stays a no-op.
func algSet(fs *flag.FlagSet) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == "alg" })
	return set
}

// sameAlg refuses 'keys init --alg X' on a directory whose active signing
// key is of another algorithm: init would silently keep the old one, and
// the way to change is a rotation.
func sameAlg(dir *keys.Dir, cfg *config, alg string) error {
	list, err := dir.List()
	if err != nil {
		return err
	}
	for _, k := range list {
		if k.Kind == keys.Signing && k.State == keys.Active && k.Alg != alg {
			return fmt.Errorf("%s already holds keys whose active signing key is %s, not %s; nothing changed. "+
				"To move to %s without downtime run 'wxtoken keys rotate --alg %s', then rotate again once caches "+
				"know the new key", cfg.KeysDir, k.Alg, alg, alg, alg)
		}
	}
	return nil
}

// warnYoungNext warns when the next signing key is about to sign before
// downstream JWKS caches can have seen it: it has been published for less
// than the JWKS max-age plus one reload interval. The rotation still
// happens (an operator may have reasons), but tokens it signs may be
// refused downstream until their caches refresh.
func warnYoungNext(stderr io.Writer, dir *keys.Dir, cfg *config) {
	list, err := dir.List()
	if err != nil {
		return // Rotate reports the error
	}
	need := cfg.JWKSMaxAge + cfg.ReloadInterval
	for _, k := range list {
		if k.Kind != keys.Signing || k.State != keys.Next {
			continue
		}
		if age := time.Since(k.Created); age < need {
			fmt.Fprintf(stderr, "warning: the next signing key %s was published %s ago, less than WXTOKEN_JWKS_MAX_AGE (%s) "+
				"+ WXTOKEN_RELOAD_INTERVAL (%s): services that cached the JWKS before it may refuse its tokens until "+
				"their cache refreshes. Leave at least %s between two rotations.\n",
				k.KID, age.Round(time.Second), cfg.JWKSMaxAge, cfg.ReloadInterval, need)
		}
	}
}

func printKeys(w io.Writer, dir *keys.Dir, asJSON bool) error {
	list, err := dir.List()
	if err != nil {
		return err
	}
	strays, err := dir.Strays()
	if err != nil {
		return err
	}
	if asJSON {
		type row struct {
			KID        string     `json:"kid,omitempty"`  // empty only for a stray temporary file
			Kind       keys.Kind  `json:"kind,omitempty"` // likewise
			Alg        string     `json:"alg,omitempty"`  // empty only for strays
			State      keys.State `json:"state"`
			Created    time.Time  `json:"created"`
			Activated  *time.Time `json:"activated,omitempty"`
			Retired    *time.Time `json:"retired,omitempty"`
			PruneAfter *time.Time `json:"prune_after,omitempty"`
			File       string     `json:"file,omitempty"` // strays only
		}
		rows := make([]row, 0, len(list)+len(strays))
		for _, k := range list {
			rows = append(rows, row{k.KID, k.Kind, k.Alg, k.State, k.Created, k.Activated, k.Retired, k.PruneAfter, ""})
		}
		// A stray is listed with the state "stray", its file name, and the
		// kid and kind its name gives (none for a temporary file); created
		// is when the file was last written.
		for _, st := range strays {
			rows = append(rows, row{KID: st.KID, Kind: st.Kind, State: strayState, Created: st.Modified, File: st.File})
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KID\tKIND\tALG\tSTATE\tCREATED\tPRUNE AFTER")
	for _, k := range list {
		prune := "-"
		if k.PruneAfter != nil {
			prune = k.PruneAfter.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.KID, k.Kind, k.Alg, k.State, k.Created.UTC().Format(time.RFC3339), prune)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(strays) > 0 {
		fmt.Fprintf(w, "\n%d stray file(s) left by an interrupted change (run 'wxtoken keys prune' to remove them):\n", len(strays))
		for _, st := range strays {
			fmt.Fprintf(w, "  %s\t(written %s)\n", st.File, st.Modified.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// strayState is the state 'keys list --json' gives a stray file.
const strayState keys.State = "stray"
