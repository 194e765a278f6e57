package keys_test

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/wxtoken/wxtoken/keys"
)

// TestRun: a running Store picks up a rotation made by someone else when
// told on its hangup channel (the poll is an hour away), and with
// RotateEvery set it rotates by itself once the active key is due, and
// serves the new key. Run returns once its context ends.
func TestRun(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// rotateEvery is the policy's automatic rotation period.
		rotateEvery time.Duration
		// act changes things once Run is running.
		act func(t *testing.T, d *keys.Dir, clk *clock, hup chan<- os.Signal)
	}{
		{
			name: "reloads on hangup",
			act: func(t *testing.T, d *keys.Dir, _ *clock, hup chan<- os.Signal) {
				if err := d.Rotate(false); err != nil {
					t.Fatal(err)
				}
				hup <- syscall.SIGHUP
			},
		},
		{
			name:        "rotates when due",
			rotateEvery: time.Second,
			act: func(_ *testing.T, _ *keys.Dir, clk *clock, _ chan<- os.Signal) {
				clk.add(2 * time.Second)
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, clk := newDir(t, "ES256")
			s, err := keys.NewStore(d, nil)
			if err != nil {
				t.Fatal(err)
			}
			before := s.Current().SigningKey().KID
			hup := make(chan os.Signal, 1)
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan struct{})
			go func() {
				defer close(done)
				s.Run(ctx, keys.Policy{ReloadInterval: time.Hour, RotateEvery: tc.rotateEvery, Hangup: hup})
			}()
			tc.act(t, d, clk, hup)
			eventually(t, "a new signing key served", func() bool { return s.Current().SigningKey().KID != before })
			cancel()
			<-done
		})
	}
}
