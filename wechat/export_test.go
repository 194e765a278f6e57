package wechat

import "net/http"

// LoginTransport is the transport logins go through, for tests that count
// its connections from the client's side.
func LoginTransport(c *Client) *http.Transport { return c.login.Transport.(*http.Transport) }
