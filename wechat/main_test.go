package wechat_test

import (
	"os"
	"testing"

	"github.com/wxtoken/wxtoken/internal/wxtest"
)

// TestMain lets up to 8 parallel tests run at once: they wait on the
// emulator's hangs, on retry backoff and on breaker cooldowns, not on the
// CPU.
func TestMain(m *testing.M) {
	wxtest.ParallelWaiting(8)
	os.Exit(m.Run())
}
