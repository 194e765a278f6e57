// Package token issues and verifies wxtoken's access tokens.
//
// A token is an RFC 9068 JWT ("typ": "at+jwt") signed with the active
// asymmetric key of the keys directory. Its claims are iss, sub (the openid),
// aud and client_id (the appid), iat, exp, jti, auth_time (when the user
// logged in with wx.login(); a renewal keeps it, and Issue refuses a renewal
// more than MaxLifetime after it), unionid when WeChat gave one,
// risk_rank when the app asks WeChat's risk rank at login, and "wxsk": the WeChat session_key sealed with AES-256-GCM under the
// service's own encryption key, bound to iss, aud, sub and jti as associated
// data so it cannot be moved into another token.
//
// Downstream services verify the signature offline with the JWKS and ignore
// wxsk; only wxtoken, which holds the encryption key, can open it. This is
// what replaces the classic "3rd_session" table: no storage is needed to go
// from a token back to the session_key.
//
// Verify refuses a token living longer than MaxLifetime and NumericDates
// that are not JSON numbers. With Config.CacheEntries it remembers tokens it
// verified (by SHA-256, bounded, until exp plus the leeway, under the key
// ring that verified them), so a token's signature is checked once per
// key ring rather than on every call.
//
//	svc, _ := token.New(token.Config{Issuer: iss, TTL: 2 * time.Hour, Audiences: []string{appid}, Keys: store})
//	issued, _ := svc.Issue(ctx, token.Identity{AppID: appid, OpenID: openid, SessionKey: sk})
//	session, err := svc.Verify(ctx, issued.Token) // session.SessionKey is usable in memory
package token
