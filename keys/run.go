package keys

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// Policy says how a running Store keeps its keys current: how often it
// polls the directory, when it rotates, and which signals make it reload.
type Policy struct {
	// ReloadInterval is how often the directory is polled for changes
	// (see Watch); 0 means every second.
	ReloadInterval time.Duration
	// RotateEvery, when positive, rotates the keys once the active signing
	// key has been active that long. Replicas sharing the directory all
	// rotate; the directory lock makes exactly one of them do it.
	RotateEvery time.Duration
	// Hangup delivers the signals that ask for a reload at once, for
	// operators who would rather not wait for the next poll. Nil: Run
	// subscribes to this process's SIGHUP itself. A caller that must not
	// miss a SIGHUP sent just after start subscribes before starting Run
	// and passes its channel; tests pass one of their own.
	Hangup <-chan os.Signal
}

// Run keeps the Store current until ctx ends: it polls the directory,
// reloads on every Hangup signal and, with RotateEvery set, rotates the
// keys when they are due and reloads them. It returns once its loops have
// stopped.
func (s *Store) Run(ctx context.Context, p Policy) {
	hup := p.Hangup
	if hup == nil {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGHUP)
		defer signal.Stop(ch)
		hup = ch
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { s.Watch(ctx, p.ReloadInterval) })
	if p.RotateEvery > 0 {
		wg.Go(func() { s.autoRotate(ctx, p.RotateEvery) })
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			s.log.Info("SIGHUP: reloading keys")
			_ = s.Reload()
		}
	}
}

// rotateCheck is how often autoRotate asks whether a rotation is due: a
// tenth of the period, between 100ms and a minute, so a rotation happens at
// most that late.
func rotateCheck(every time.Duration) time.Duration {
	return min(max(every/10, 100*time.Millisecond), time.Minute)
}

// autoRotate rotates the keys every period and reloads them after its own
// rotation; a failed rotation is logged and tried again at the next check.
func (s *Store) autoRotate(ctx context.Context, every time.Duration) {
	tick(ctx, rotateCheck(every), func() {
		rotated, err := s.dir.RotateIfDue(every)
		if err != nil {
			s.log.Error("automatic key rotation failed", "err", err.Error())
			return
		}
		if rotated {
			s.log.Info("automatic key rotation done")
			_ = s.Reload()
		}
	})
}

// tick calls f every interval until ctx ends; a call that takes longer
// than interval delays the next instead of piling calls up.
func tick(ctx context.Context, interval time.Duration, f func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}
