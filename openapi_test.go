package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/wxtoken/wxtoken/handlers"
	"github.com/wxtoken/wxtoken/server"
)

func loadSpec(t testing.TB) (*openapi3.T, routers.Router) {
	t.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile("openapi.yaml")
	if err != nil {
		t.Fatalf("load openapi.yaml: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.yaml is not valid OpenAPI: %v", err)
	}
	doc.Servers = nil // match requests to any host (the test server's port)
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return doc, router
}

// TestOpenAPIRoutesMatchImplementation: every route the server has is in
// the spec and every operation in the spec is served, in dev mode (which
// adds /dev/encrypt) and outside it.
func TestOpenAPIRoutesMatchImplementation(t *testing.T) {
	t.Parallel()
	doc, _ := loadSpec(t)
	spec := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			spec[method+" "+path] = true
		}
	}
	f := newFixture(t, testAppID)
	cfg := loadConfig(f.env.getenv)
	cfg.Dev = true // serve every route, /dev/encrypt included; the emulator URL is already set
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	apps, _, err := servedApps(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	emu, err := net.Listen("tcp", "127.0.0.1:0") // never served: only the routes are listed
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	srv, err := server.New(cfg.server(), server.Deps{Logger: logger, Apps: apps, Emulator: emu})
	if err != nil {
		t.Fatal(err)
	}
	routes := srv.Routes()
	served := map[string]bool{}
	for _, r := range routes {
		served[r.Method+" "+r.Path] = true
	}
	// HEAD is GET without the body (RFC 9110 9.3.2): every GET route must
	// answer it, and the spec describes it through the GET operation.
	for k := range served {
		if path, ok := strings.CutPrefix(k, "HEAD "); ok {
			if !served["GET "+path] {
				t.Errorf("HEAD %s is served without GET", path)
			}
			delete(served, k)
		}
	}
	for k := range spec {
		if path, ok := strings.CutPrefix(k, "GET "); ok && !routeServed(routes, http.MethodHead, path) {
			t.Errorf("GET %s does not answer HEAD", path)
		}
	}
	var missing, extra []string
	for k := range served {
		if !spec[k] {
			missing = append(missing, k)
		}
	}
	for k := range spec {
		if !served[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 || len(extra) > 0 {
		t.Errorf("served but not in openapi.yaml: %v; in openapi.yaml but not served: %v", missing, extra)
	}
	if len(served) < 10 {
		t.Errorf("only %d routes served", len(served))
	}

	// The problem types the spec lists are exactly the ones the code has.
	enum := doc.Components.Schemas["Problem"].Value.Properties["type"].Value.Enum
	inSpec := map[string]bool{}
	for _, v := range enum {
		inSpec[v.(string)] = true
	}
	for typ := range handlers.Kinds() {
		if !inSpec[typ] {
			t.Errorf("problem type %s missing from openapi.yaml", typ)
		}
		delete(inSpec, typ)
	}
	for typ := range inSpec {
		t.Errorf("openapi.yaml lists %s, which the code never answers", typ)
	}
}

// TestOpenAPIAnswersMatchSpec sends real requests to a dev server and
// validates each request and answer against openapi.yaml.
func TestOpenAPIAnswersMatchSpec(t *testing.T) {
	t.Parallel()
	doc, router := loadSpec(t)
	s := startServer(t, env{"WXTOKEN_ADDR": "127.0.0.1:0", "WXTOKEN_KEYS_DIR": t.TempDir() + "/k", "WXTOKEN_LOGIN_RATE": "0"}, "--dev")
	tok, _ := login(t, s.URL, "spec-code")
	enc := postJSON(t, s.URL+"/dev/encrypt", tok, map[string]any{"nickName": "Band"})
	var etag string
	{
		c := do(t, "GET", s.URL+"/.well-known/jwks.json", "", "", nil)
		etag = c.Header.Get("ETag")
	}

	type exchange struct {
		name, method, path, bearer, body string
		header                           map[string]string
		status                           int
		secondAuthorization              string // sent as a second Authorization header
	}
	exchanges := []exchange{
		{name: "login", method: "POST", path: "/v1/login", body: `{"code":"spec-code-2"}`, status: 200},
		{name: "login bad code", method: "POST", path: "/v1/login", body: `{"code":"err-40029"}`, status: 400},
		{name: "login blocked", method: "POST", path: "/v1/login", body: `{"code":"err-40226"}`, status: 403},
		{name: "login wechat limit", method: "POST", path: "/v1/login", body: `{"code":"err-45011"}`, status: 429},
		{name: "login busy", method: "POST", path: "/v1/login", body: `{"code":"err--1"}`, status: 503},
		{name: "login missing code", method: "POST", path: "/v1/login", body: `{}`, status: 400},
		{name: "decrypt", method: "POST", path: "/v1/decrypt", bearer: tok, body: string(enc.Body), status: 200},
		{name: "decrypt no token", method: "POST", path: "/v1/decrypt", body: string(enc.Body), status: 401},
		{name: "decrypt bad iv", method: "POST", path: "/v1/decrypt", bearer: tok, body: `{"encryptedData":"AAAAAAAAAAAAAAAAAAAAAA==","iv":"AA=="}`, status: 400},
		{name: "userinfo", method: "POST", path: "/v1/userinfo", bearer: tok, body: string(enc.Body), status: 200},
		{name: "decrypt too large", method: "POST", path: "/v1/decrypt", bearer: tok, body: `{"encryptedData":"` + strings.Repeat("A", 70<<10) + `","iv":"x"}`, status: 413},
		{name: "login not json", method: "POST", path: "/v1/login", body: `code=abc`, header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, status: 415},
		{name: "dev encrypt not json", method: "POST", path: "/dev/encrypt", bearer: tok, body: `a=1`, header: map[string]string{"Content-Type": "text/plain"}, status: 415},
		{name: "login wrong method", method: "PUT", path: "/v1/login", body: `{"code":"x"}`, status: 405},
		{name: "userinfo bad signature", method: "POST", path: "/v1/userinfo", bearer: tok, body: `{"rawData":"{}","signature":"00"}`, status: 400},
		{name: "phone", method: "POST", path: "/v1/phone-number", bearer: tok, body: `{"code":"p1"}`, status: 200},
		{name: "phone bad code", method: "POST", path: "/v1/phone-number", bearer: tok, body: `{"code":"err-40029"}`, status: 400},
		{name: "session check", method: "POST", path: "/v1/session/check", bearer: tok, status: 200},
		{name: "session check bad token", method: "POST", path: "/v1/session/check", bearer: "x.y.z", status: 401},
		{name: "session check two authorization headers", method: "POST", path: "/v1/session/check", bearer: tok, secondAuthorization: "Bearer " + tok, status: 400},
		{name: "decrypt two authorization headers", method: "POST", path: "/v1/decrypt", bearer: tok, body: string(enc.Body), secondAuthorization: "Bearer x.y.z", status: 400},
		{name: "dev encrypt", method: "POST", path: "/dev/encrypt", bearer: tok, body: `{"a":1}`, status: 200},
		{name: "jwks", method: "GET", path: "/.well-known/jwks.json", status: 200},
		{name: "jwks not modified", method: "GET", path: "/.well-known/jwks.json", header: map[string]string{"If-None-Match": etag}, status: 304},
		{name: "healthz", method: "GET", path: "/healthz", status: 200},
		{name: "readyz", method: "GET", path: "/readyz", status: 200},
		{name: "openapi", method: "GET", path: "/openapi.yaml", status: 200},
		{name: "metrics", method: "GET", path: "/metrics", status: 200},
		{name: "openid configuration", method: "GET", path: "/.well-known/openid-configuration", status: 200},
		{name: "authorization server metadata", method: "GET", path: "/.well-known/oauth-authorization-server", status: 200},
	}
	for _, ex := range exchanges {
		t.Run(ex.name, func(t *testing.T) {
			req, err := http.NewRequest(ex.method, s.URL+ex.path, strings.NewReader(ex.body))
			if err != nil {
				t.Fatal(err)
			}
			if ex.body != "" && ex.header["Content-Type"] == "" {
				req.Header.Set("Content-Type", "application/json")
			}
			if ex.bearer != "" {
				req.Header.Set("Authorization", "Bearer "+ex.bearer)
			}
			for k, v := range ex.header {
				req.Header.Set(k, v)
			}
			if ex.secondAuthorization != "" {
				req.Header.Add("Authorization", ex.secondAuthorization)
			}
			if ex.status == http.StatusMethodNotAllowed {
				// The spec has no operation to match; the answer is still a Problem.
				checkProblemAgainstSpec(t, doc, req)
				return
			}
			route, params, err := router.FindRoute(req)
			if err != nil {
				t.Fatalf("not in openapi.yaml: %v", err)
			}
			// Every status a route answers is declared by name; "default"
			// covers only 405 and 500.
			if route.Operation.Responses.Status(ex.status) == nil {
				t.Fatalf("openapi.yaml does not declare %d for %s %s", ex.status, ex.method, ex.path)
			}
			reqInput := &openapi3filter.RequestValidationInput{
				Request: req, PathParams: params, Route: route,
				Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
			}
			if ex.status < 400 || ex.status == 401 {
				if err := openapi3filter.ValidateRequest(context.Background(), reqInput); err != nil {
					t.Fatalf("request does not match the spec: %v", err)
				}
			}
			req.Body = io.NopCloser(strings.NewReader(ex.body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != ex.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, ex.status, body)
			}
			err = openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
				RequestValidationInput: reqInput,
				Status:                 resp.StatusCode,
				Header:                 resp.Header,
				Body:                   io.NopCloser(bytes.NewReader(body)),
				Options:                &openapi3filter.Options{IncludeResponseStatus: true},
			})
			if err != nil {
				t.Errorf("answer does not match the spec: %v\n%s", err, body)
			}
		})
	}
}

func routeServed(routes []handlers.Route, method, path string) bool {
	for _, r := range routes {
		if r.Method == method && r.Path == path {
			return true
		}
	}
	return false
}

// checkProblemAgainstSpec sends req and validates its answer against the
// spec's Problem schema and the "Other" response's media type.
func checkProblemAgainstSpec(t *testing.T, doc *openapi3.T, req *http.Request) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	other := doc.Components.Responses["Other"].Value
	if other.Content.Get(resp.Header.Get("Content-Type")) == nil {
		t.Fatalf("Content-Type %q is not the spec's", resp.Header.Get("Content-Type"))
	}
	var v any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	if err := doc.Components.Schemas["Problem"].Value.VisitJSON(v); err != nil {
		t.Fatalf("answer is not a Problem: %v", err)
	}
}
