package main

import (
	"context"
	"net/http"
	"testing"

	"github.com/wxtoken/wxtoken/clients/go/wxtokenclient"
)

// TestGeneratedGoClient: the client oapi-codegen generates from openapi.yaml
// (default settings) logs in, gets user data from /dev/encrypt and decrypts
// it against a live dev server, reading typed answers.
func TestGeneratedGoClient(t *testing.T) {
	t.Parallel()
	s := startServer(t, env{"WXTOKEN_ADDR": "127.0.0.1:0", "WXTOKEN_KEYS_DIR": t.TempDir() + "/k", "WXTOKEN_LOGIN_RATE": "0"}, "--dev")
	ctx := context.Background()
	c, err := wxtokenclient.NewClientWithResponses(s.URL)
	if err != nil {
		t.Fatal(err)
	}

	in, err := c.LoginWithResponse(ctx, wxtokenclient.LoginJSONRequestBody{Code: "generated-client"})
	if err != nil {
		t.Fatal(err)
	}
	if in.JSON200 == nil {
		t.Fatalf("login: %d %s", in.StatusCode(), in.Body)
	}
	if in.JSON200.TokenType != "Bearer" || in.JSON200.Openid == "" || in.JSON200.ExpiresIn < 1 {
		t.Fatalf("login answer: %+v", in.JSON200)
	}
	bearer := wxtokenclient.RequestEditorFn(func(_ context.Context, req *http.Request) error {
		req.Header.Set("Authorization", "Bearer "+in.JSON200.AccessToken)
		return nil
	})

	enc, err := c.DevEncryptWithResponse(ctx, wxtokenclient.DevEncryptJSONRequestBody{"nickName": "Band"})
	if err != nil {
		t.Fatal(err)
	}
	if enc.StatusCode() != http.StatusUnauthorized || enc.ApplicationproblemJSON401 == nil || enc.ApplicationproblemJSON401.Type != "urn:wxtoken:problem:unauthorized" {
		t.Fatalf("dev encrypt without a token: %d %s", enc.StatusCode(), enc.Body)
	}
	enc, err = c.DevEncryptWithResponse(ctx, wxtokenclient.DevEncryptJSONRequestBody{"nickName": "Band"}, bearer)
	if err != nil {
		t.Fatal(err)
	}
	if enc.JSON200 == nil {
		t.Fatalf("dev encrypt: %d %s", enc.StatusCode(), enc.Body)
	}

	dec, err := c.DecryptWithResponse(ctx, wxtokenclient.DecryptJSONRequestBody{
		EncryptedData: enc.JSON200.EncryptedData, Iv: enc.JSON200.Iv,
	}, bearer)
	if err != nil {
		t.Fatal(err)
	}
	if dec.JSON200 == nil {
		t.Fatalf("decrypt: %d %s", dec.StatusCode(), dec.Body)
	}
	data := dec.JSON200.Data
	if data.Watermark.Appid == "" || data.Watermark.Timestamp <= 0 || data.AdditionalProperties["nickName"] != "Band" {
		t.Errorf("decrypted: %+v", data)
	}
}
