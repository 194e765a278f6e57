package secret_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/wxtoken/wxtoken/secret"
)

func TestStringNeverPrints(t *testing.T) {
	const value = "tiihtNczf5v6AKRyjwEUhQ=="
	s := secret.String(value)
	var logs bytes.Buffer
	jl := slog.New(slog.NewJSONHandler(&logs, nil))
	tl := slog.New(slog.NewTextHandler(&logs, nil))
	jl.Info("x", "k", s, "any", slog.AnyValue(s))
	tl.Info("x", "k", s, "struct", struct{ K secret.String }{s})
	j, err := json.Marshal(struct{ K secret.String }{s})
	if err != nil {
		t.Fatal(err)
	}
	outs := []string{
		fmt.Sprint(s), fmt.Sprintf("%v %s %q %x %#v %+v", s, s, s, s, s, s),
		fmt.Sprintf("%v", struct{ K secret.String }{s}), string(j), logs.String(),
	}
	for _, out := range outs {
		if strings.Contains(out, value) {
			t.Errorf("secret leaked in %q", out)
		}
		if !strings.Contains(out, "[redacted]") {
			t.Errorf("no redaction marker in %q", out)
		}
	}
	if s.Reveal() != value {
		t.Errorf("Reveal() = %q", s.Reveal())
	}
	if s.Empty() || !secret.String("").Empty() {
		t.Error("Empty() wrong")
	}
}
