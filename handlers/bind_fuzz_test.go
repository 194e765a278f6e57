package handlers

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
)

// FuzzRequestDecoders feeds arbitrary bodies and content types to the
// decoder of every endpoint: nothing may panic, and every refusal must be a
// Problem (rendered as problem+json), never a raw error.
func FuzzRequestDecoders(f *testing.F) {
	seeds := []string{
		`{"code":"0a3Xyz000abcDEF1GHi200R1Tu3Xyz0K"}`,
		`{"code":"a","appid":"wx4f4bc4dec97d474b"}`,
		`{"encryptedData":"CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDc","iv":"r7BXXKkLb8qrSNn05n0qiA=="}`,
		`{"rawData":"{\"nickName\":\"Band\"}","signature":"75e81ceda165f4ffa64f4068af58c64b8f54b88c","encryptedData":"x","iv":"y"}`,
		`{"code":42}`, `[]`, `null`, `{"code":"\u0000"}`, `{"a":{"b":[1,2,{"c":null}]}}`, "", "{", `{"code":"a"} {}`,
	}
	for _, s := range seeds {
		f.Add(s, "application/json")
	}
	f.Add(`code=abc`, "application/x-www-form-urlencoded")
	f.Add(`{"code":"a"}`, "application/json; charset=utf-8")
	f.Add(`{"code":"a"}`, "")
	f.Add(`{"code":"a"}`, ";;;")

	b := newBinder()
	e := echo.New()
	targets := []func() any{
		func() any { return &loginRequest{} },
		func() any { return &decryptRequest{} },
		func() any { return &userinfoRequest{} },
		func() any { return &phoneRequest{} },
		func() any { m := map[string]any{}; return &m },
	}
	f.Fuzz(func(t *testing.T, body, contentType string) {
		for _, newDst := range targets {
			req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
			if contentType != "" {
				req.Header.Set("Content-Type", contentType)
			}
			c := e.NewContext(req, httptest.NewRecorder())
			err := b.bind(c, newDst())
			if err == nil {
				continue
			}
			var p *Problem
			if !errors.As(err, &p) {
				t.Fatalf("bind returned a non-problem error %T: %v", err, err)
			}
			if p.Status < 400 || p.Status > 499 || p.Type == "" || p.Detail == "" {
				t.Fatalf("bad problem %+v", p)
			}
		}
	})
}

// FuzzBearerToken: any Authorization header parses without panicking, and a
// token is only ever returned when it is non-empty b64token characters.
func FuzzBearerToken(f *testing.F) {
	for _, s := range []string{"Bearer abc.def.ghi", "bearer x", "Basic dXNlcg==", "Bearer", "Bearer  ", "Bearer a b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		raw, given := bearerToken(header)
		if raw != "" && !given {
			t.Fatal("token without credentials")
		}
		if strings.ContainsAny(raw, " \t\r\n\",") {
			t.Fatalf("token %q has characters outside b64token", raw)
		}
	})
}
