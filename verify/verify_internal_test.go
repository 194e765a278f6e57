package verify

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestCacheControl(t *testing.T) {
	tests := []struct {
		name        string
		given       []string
		wantAge     time.Duration
		wantOK      bool
		wantForbids bool
	}{
		{"wxtoken's", []string{"public, max-age=300"}, 5 * time.Minute, true, false},
		{"none", nil, 0, false, false},
		{"no-cache", []string{"no-cache"}, 0, false, true},
		{"quoted, upper case", []string{`MAX-AGE="60"`}, time.Minute, true, false},
		{"negative ignored", []string{"max-age=-1"}, 0, false, false},
		{"garbage ignored", []string{"max-age=abc"}, 0, false, false},
		{"two headers", []string{"public", "max-age=10, no-store"}, 10 * time.Second, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			age, ok, forbids := cacheControl(tc.given)
			if age != tc.wantAge || ok != tc.wantOK || forbids != tc.wantForbids {
				t.Errorf("cacheControl(%q) = %v %v %v, want %v %v %v", tc.given, age, ok, forbids, tc.wantAge, tc.wantOK, tc.wantForbids)
			}
		})
	}
}

func TestBearerTokenAndChallenge(t *testing.T) {
	tests := []struct {
		name       string
		headers    []string
		wantErr    error
		wantStatus int
	}{
		{"none", nil, ErrNoToken, http.StatusUnauthorized},
		{"bearer", []string{"Bearer abc.def.ghi"}, nil, 0},
		{"lower-case scheme", []string{"bearer abc.def.ghi"}, nil, 0},
		{"basic", []string{"Basic YTpi"}, ErrMalformedRequest, http.StatusBadRequest},
		{"empty token", []string{"Bearer "}, ErrMalformedRequest, http.StatusBadRequest},
		{"two tokens", []string{"Bearer a b"}, ErrMalformedRequest, http.StatusBadRequest},
		{"two headers", []string{"Bearer a", "Bearer b"}, ErrMalformedRequest, http.StatusBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			for _, h := range tc.headers {
				r.Header.Add("Authorization", h)
			}
			_, err := BearerToken(r)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				if ch := ChallengeFor(`a "quoted" realm`, err); ch.Status != tc.wantStatus {
					t.Errorf("status %d, want %d", ch.Status, tc.wantStatus)
				}
			}
		})
	}
	if ch := ChallengeFor(`r"`, ErrKeysUnavailable); ch.Status != http.StatusServiceUnavailable || ch.WWWAuthenticate != "" {
		t.Errorf("keys unavailable: %+v", ch)
	}
	if ch := ChallengeFor(`r"`, ErrNoToken); ch.WWWAuthenticate != `Bearer realm="r\""` {
		t.Errorf("realm not escaped: %s", ch.WWWAuthenticate)
	}
}

// TestNewRefusesAnotherIssuer: a discovery document naming another issuer
// (a proxy or a typo serving someone else's keys) fails New.
func TestNewRefusesAnotherIssuer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"issuer":"https://elsewhere.example","jwks_uri":"https://elsewhere.example/jwks"}`))
	}))
	defer srv.Close()
	_, err := New(context.Background(), Config{Issuer: srv.URL, AppIDs: []string{"wx1"}})
	if err == nil {
		t.Fatal("New accepted a discovery document of another issuer")
	}
}

func TestConfigRefusesSymmetricAlgorithms(t *testing.T) {
	_, err := New(context.Background(), Config{Issuer: "https://a.example", AppIDs: []string{"wx1"}, Algorithms: []string{"HS256"}})
	if err == nil {
		t.Fatal("HS256 accepted")
	}
}
