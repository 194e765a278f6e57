package keys

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"
)

// Kind says what a key is for.
type Kind string

// The two kinds of keys.
const (
	Signing    Kind = "signing"
	Encryption Kind = "encryption"
)

// State is where a key is in its life.
type State string

// A key's life: next → active → retired → gone.
const (
	Next    State = "next"
	Active  State = "active"
	Retired State = "retired"
)

// ManifestFile is the name of the manifest, the directory's commit point.
const ManifestFile = "keyset.json"

// ErrNoKeys means the directory holds no keys yet: run 'wxtoken keys init'.
var ErrNoKeys = errors.New("keys: no keys in the directory")

// entry is one key in the manifest.
type entry struct {
	KID       string     `json:"kid"`
	Kind      Kind       `json:"kind"`
	Alg       string     `json:"alg"`
	State     State      `json:"state"`
	File      string     `json:"file"`
	Created   time.Time  `json:"created"`
	Activated *time.Time `json:"activated,omitempty"`
	Retired   *time.Time `json:"retired,omitempty"`
}

type manifest struct {
	Version int     `json:"version"`
	Keys    []entry `json:"keys"`
}

// KeyInfo describes a key for listings; it carries no key material.
type KeyInfo struct {
	KID       string
	Kind      Kind
	Alg       string
	State     State
	Created   time.Time
	Activated *time.Time
	Retired   *time.Time
	// PruneAfter is when a retired key can go: retired + retention.
	PruneAfter *time.Time
}

func infos(es []entry, retention time.Duration) []KeyInfo {
	out := make([]KeyInfo, 0, len(es))
	for _, e := range es {
		k := KeyInfo{KID: e.KID, Kind: e.Kind, Alg: e.Alg, State: e.State, Created: e.Created,
			Activated: e.Activated, Retired: e.Retired}
		if e.State == Retired && e.Retired != nil {
			t := e.Retired.Add(retention)
			k.PruneAfter = &t
		}
		out = append(out, k)
	}
	return out
}

// expired reports whether e is a retired key past its retention.
func expired(e entry, retention time.Duration, now time.Time) bool {
	return e.State == Retired && e.Retired != nil && !now.Before(e.Retired.Add(retention))
}

// snapshot is the manifest as one read saw it: its bytes, the metadata of
// the open file they came from (for permission checks and change
// detection) and what they say.
type snapshot struct {
	raw []byte
	st  fs.FileInfo
	m   manifest
}

// readManifest is the one reader of keyset.json: every use of the manifest,
// by a change under the lock, a listing or a load, reads it here, capped in
// size. A missing manifest is ErrNoKeys. When the bytes were read but do
// not parse, the snapshot still holds them, so Store can tell one broken
// content from another.
func (d *Dir) readManifest() (snapshot, error) {
	raw, st, err := d.read(filepath.Join(d.path, ManifestFile), maxManifestBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return snapshot{}, fmt.Errorf("%w (%s)", ErrNoKeys, d.path)
	}
	if err != nil {
		return snapshot{st: st}, fmt.Errorf("keys: read manifest: %w", err)
	}
	snap := snapshot{raw: raw, st: st}
	if err := json.Unmarshal(raw, &snap.m); err != nil {
		return snapshot{raw: raw, st: st}, fmt.Errorf("keys: %s is corrupt: %w", ManifestFile, err)
	}
	if snap.m.Version != 1 {
		return snapshot{raw: raw, st: st}, fmt.Errorf("keys: %s: unknown version %d", ManifestFile, snap.m.Version)
	}
	return snap, nil
}

// change runs f on the manifest with the directory locked, so f sees the
// manifest no other process is changing and may write a new one.
func (d *Dir) change(f func(m manifest) error) error {
	unlock, err := d.lock()
	if err != nil {
		return err
	}
	defer unlock()
	snap, err := d.readManifest()
	if err != nil {
		return err
	}
	return f(snap.m)
}

func (d *Dir) writeManifest(m manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("keys: encode manifest: %w", err)
	}
	return writeAtomic(filepath.Join(d.path, ManifestFile), append(b, '\n'))
}
