package handlers_test

import (
	"testing"

	"github.com/wxtoken/wxtoken/handlers"
)

func TestParseRiskCheck(t *testing.T) {
	tests := []struct {
		in   string
		want handlers.RiskCheck
		ok   bool
	}{
		{"", handlers.RiskCheck{}, true},
		{"off", handlers.RiskCheck{}, true},
		{"flag", handlers.RiskCheck{Mode: handlers.RiskFlag}, true},
		{"refuse:1", handlers.RiskCheck{Mode: handlers.RiskRefuse, RefuseAt: 1}, true},
		{"refuse:4", handlers.RiskCheck{Mode: handlers.RiskRefuse, RefuseAt: 4}, true},
		{"refuse:0", handlers.RiskCheck{}, false}, // would refuse everyone
		{"refuse:5", handlers.RiskCheck{}, false}, // no rank is 5
		{"refuse:", handlers.RiskCheck{}, false},
		{"refuse", handlers.RiskCheck{}, false},
		{"Flag", handlers.RiskCheck{}, false},
		{"on", handlers.RiskCheck{}, false},
	}
	for _, tc := range tests {
		got, err := handlers.ParseRiskCheck(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseRiskCheck(%q) = %+v, %v", tc.in, got, err)
			continue
		}
		if tc.ok && tc.in != "" && got.String() != tc.in {
			t.Errorf("%q prints as %q", tc.in, got.String())
		}
	}
}
