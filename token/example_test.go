package token_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/wxtoken/wxtoken/keys"
	"github.com/wxtoken/wxtoken/token"
)

// Issue a token at login, verify it on a later call and use the session_key
// it carries, with no storage in between.
func Example() {
	tmp, _ := os.MkdirTemp("", "wxtoken-example-")
	defer os.RemoveAll(tmp)
	dir := keys.NewDir(filepath.Join(tmp, "keys"), 3*time.Hour, nil)
	if _, err := dir.Init("ES256"); err != nil {
		panic(err)
	}
	store, err := keys.NewStore(dir, nil)
	if err != nil {
		panic(err)
	}
	svc, err := token.New(token.Config{
		Issuer: "https://auth.example.com", TTL: 2 * time.Hour,
		Audiences: []string{"wx4f4bc4dec97d474b"}, Keys: store,
	})
	if err != nil {
		panic(err)
	}
	issued, _ := svc.Issue(context.Background(), token.Identity{
		AppID: "wx4f4bc4dec97d474b", OpenID: "oGZUI0egBJY1zhBYw2KhdUfwVJJE", SessionKey: "tiihtNczf5v6AKRyjwEUhQ==",
	})
	session, err := svc.Verify(context.Background(), issued.Token)
	fmt.Println(err, session.OpenID, session.SessionKey, session.SessionKey.Reveal())
	// Output: <nil> oGZUI0egBJY1zhBYw2KhdUfwVJJE [redacted] tiihtNczf5v6AKRyjwEUhQ==
}
