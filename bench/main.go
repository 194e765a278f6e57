// Command bench measures wxtoken side by side with the two designs it is
// judged against, on one machine, with one command:
//
//	go run ./bench            # a full run: prints a table, writes bench/results.json and bench/throughput.svg
//	go run ./bench -smoke     # a few seconds: checks everything runs, answers 200 and writes its files
//
// It starts everything on loopback and nothing else: the WeChat emulator
// (package emulator, in a child process), Redis (Debian's redis-server, no
// persistence), and one contender at a time:
//
//   - floor: only the unavoidable work of each route (decode the body; login:
//     one jscode2session call over a keep-alive client and one raw ECDSA P-256
//     signature over a JWT-sized payload; bearer routes: the user-data AES-CBC
//     decrypt; encode the answer);
//   - table: the classic session-table design, {openid, session_key} under a
//     random 3rd_session id in Redis with a TTL (go-redis), looked up on every
//     bearer call;
//   - wxtoken: the real server binary, built from this module, once per
//     signing algorithm (ES256, EdDSA, RS256).
//
// Pinning: each contender runs alone on the server CPU (-server-cpu, default
// 0) with GOMAXPROCS=1; the bench itself, the load generators, the emulator
// and Redis run on the load CPU (-load-cpu, default 1). Both through
// taskset. The same bench binary serves the floor, the table and the
// emulator when started with -role.
//
// Load: wrk (C, epoll, a Lua script for bodies and bearer headers) drives the
// closed loop for each maximum: on one core it costs far less per request
// than any Go net/http client, so the server, not the client, saturates
// first; the bench reports wrk's own CPU use to prove it. vegeta (as a
// library) drives the open loop at half of each maximum, for latency
// percentiles without coordinated omission.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "bench:", err)
		}
		stop()
		os.Exit(1)
	}
}

// run is the whole program minus os.Exit: the orchestrator by default, or
// one of the servers it starts when -role is given.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	opts, err := parseOptions(args[1:], stderr)
	if errors.Is(err, errHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	switch opts.Role {
	case "":
		return orchestrate(ctx, opts, args, getenv, stdout, stderr)
	case roleEmulator:
		return serveEmulator(ctx, opts, getenv)
	case roleFloor, roleTable:
		return serveContender(ctx, opts, getenv)
	default:
		return fmt.Errorf("unknown -role %q", opts.Role)
	}
}
