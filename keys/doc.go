// Package keys is the only code that touches wxtoken's key material.
//
// A keys directory holds signing keys (asymmetric, published in the JWKS)
// and encryption keys (AES-256-GCM, sealing the WeChat session_key inside
// tokens). Every key lives next → active → retired → gone: a next signing
// key is published before it signs, so caching verifiers know it in time;
// a next encryption key is loaded by every replica before any seals with it.
//
// NewDir is given the retention once (how long a retired key stays usable:
// token TTL + leeway); Load, List, Prune and a Store built on the Dir all go
// by it. Every use of the manifest reads it through one function.
//
// Dir changes the directory (init, rotate, prune) under a flock, writing
// each file to a temporary name and renaming it, with the manifest
// keyset.json renamed last as the commit point. Load never locks, so it
// works on read-only mounts such as a Kubernetes Secret. Store holds the
// live Ring for a running server; Store.Run keeps it current (polling the
// directory, reloading on SIGHUP, rotating when a Policy says the keys are
// due), keeping the last good keys when the directory is broken. Every read of
// the directory is bounded: only regular files are read (a FIFO is refused
// without blocking), each up to a size cap, by a load that runs outside
// every lock and that Store waits for only so long; a directory, manifest
// or key file writable by group or others is not loaded at all.
package keys
