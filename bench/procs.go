package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
// It is 100 on every Linux architecture Go runs on (the kernel ABI fixes
// it), so it is not read through sysconf.
const clockTicks = 100

// proc is a child process pinned to one CPU with taskset. taskset execs the
// command, so the child's pid is the pinned program's own: its /proc
// figures are the server's, not a wrapper's.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	err  error
}

// startPinned runs argv on cpu with env added to the bench's environment;
// stdout and stderr go to logDir/name.log, for a look after a failure.
func startPinned(name string, cpu int, argv []string, env []string, logDir string) (*proc, error) {
	logf, err := os.Create(filepath.Join(logDir, name+".log"))
	if err != nil {
		return nil, err
	}
	full := append([]string{"-c", strconv.Itoa(cpu)}, argv...)
	cmd := exec.Command("taskset", full...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logf, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// pid is the child's process id.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports an early exit, with the end of its log, while waiting for
// it to come up.
func (p *proc) exited() error {
	select {
	case <-p.done:
		tail, _ := os.ReadFile(p.log.Name())
		if len(tail) > 2000 {
			tail = tail[len(tail)-2000:]
		}
		return fmt.Errorf("%s exited (%v): %s", p.name, p.err, bytes.TrimSpace(tail))
	default:
		return nil
	}
}

// stop asks the child to finish (SIGTERM), then kills it after a grace.
func (p *proc) stop() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	p.log.Close()
}

// cpuTime is the user plus system CPU time the process has used so far,
// from fields 14 and 15 of /proc/<pid>/stat (all its threads).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(string(b))
}

// parseStatCPU reads utime+stime from a /proc/<pid>/stat line. The command
// name (field 2) may hold spaces, so fields are counted after its ')'.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("proc stat: no command field")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, errors.New("proc stat: too few fields")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("proc stat: %w", err)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// rssBytes is the resident set size, VmRSS in /proc/<pid>/status.
func rssBytes(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("proc status: %w", err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("proc status: no VmRSS")
}

// freeAddr finds a free loopback port. The port is released before the
// child binds it; nothing else on a benchmark machine races for it.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// waitReady polls until check succeeds, the process exits or 30 s pass.
func waitReady(ctx context.Context, p *proc, check func(context.Context) error) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := check(ctx)
		if err == nil {
			return nil
		}
		if e := p.exited(); e != nil {
			return e
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after 30s: %w", p.name, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// httpOK is a readiness check: GET url answers 200.
func httpOK(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}
}

// tcpOpen is a readiness check: addr accepts connections.
func tcpOpen(addr string) func(context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// pinSelf re-executes the bench under taskset on the load CPU, so that
// every thread of it (vegeta's workers, the wrk and emulator children it
// starts, which inherit the mask) stays off the server CPU. The marker
// variable stops the loop.
func pinSelf(args []string, cpu int, getenv func(string) string) error {
	const marker = "WXTOKEN_BENCH_PINNED"
	if getenv(marker) == strconv.Itoa(cpu) {
		return nil
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		return errors.New("taskset is missing: apt-get install -y util-linux")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	argv := append([]string{"taskset", "-c", strconv.Itoa(cpu), self}, args[1:]...)
	return syscall.Exec(taskset, argv, append(os.Environ(), marker+"="+strconv.Itoa(cpu)))
}
