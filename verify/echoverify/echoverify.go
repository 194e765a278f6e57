// Package echoverify is verify's middleware for Echo v4, kept apart so a
// net/http service importing verify does not pull in Echo.
package echoverify

import (
	"github.com/labstack/echo/v4"

	"github.com/wxtoken/wxtoken/verify"
)

// ClaimsKey is the echo.Context key holding the verified *verify.Claims;
// the request's context carries them too (verify.ClaimsFrom).
const ClaimsKey = "wxtoken.claims"

// Middleware verifies the bearer token of each request. A refused request
// gets the RFC 6750 challenge verify.WriteChallenge writes, so a service's
// error handler never has to know about tokens.
func Middleware(v *verify.Verifier, realm string) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			claims, err := v.Authenticate(c.Request())
			if err != nil {
				verify.WriteChallenge(c.Response(), realm, err)
				return nil
			}
			c.Set(ClaimsKey, claims)
			c.SetRequest(c.Request().WithContext(verify.WithClaims(c.Request().Context(), claims)))
			return next(c)
		}
	}
}

// Claims returns the claims Middleware verified.
func Claims(c echo.Context) (*verify.Claims, bool) {
	claims, ok := c.Get(ClaimsKey).(*verify.Claims)
	return claims, ok && claims != nil
}
