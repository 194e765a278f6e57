package handlers

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
)

// Discovery metadata (OpenID Connect Discovery 1.0 and RFC 8414). wxtoken is
// no authorization server in the OAuth sense: it has no authorization or
// token endpoint, no grant, no ID token. The documents exist so a verifier
// configured with the issuer alone finds the keys, so they say only what is
// true:
//
//   - issuer: WXTOKEN_ISSUER byte for byte (verifiers compare it exactly);
//   - jwks_uri: the keys;
//   - response_types_supported and grant_types_supported: empty arrays. Both
//     documents mark response_types_supported REQUIRED, and RFC 8414 gives an
//     omitted grant_types_supported the default ["authorization_code",
//     "implicit"]; an empty list is the only value that is both present and
//     true;
//   - OIDC only: subject_types_supported ["pairwise"] (sub is the openid,
//     which WeChat makes different for every appid) and
//     id_token_signing_alg_values_supported = the algorithms of the published
//     keys. wxtoken issues no ID tokens; the field is REQUIRED by OIDC
//     discovery and is where OIDC verifiers (coreos/go-oidc among them) read
//     which algorithms to accept: left out, go-oidc accepts only RS256 and
//     refuses every ES256 token. Every JWT wxtoken signs uses one of these
//     algorithms, so a verifier pinning them pins exactly right.
//
// Nothing is listed for flows that do not exist (no authorization_endpoint,
// token_endpoint, userinfo_endpoint, scopes or claims).

// discoveryDoc is the RFC 8414 document; the OIDC one adds two fields.
type discoveryDoc struct {
	Issuer                 string   `json:"issuer"`
	JWKSURI                string   `json:"jwks_uri"`
	ResponseTypesSupported []string `json:"response_types_supported"`
	GrantTypesSupported    []string `json:"grant_types_supported"`
}

type oidcDiscoveryDoc struct {
	discoveryDoc
	SubjectTypesSupported []string `json:"subject_types_supported"`
	IDTokenSigningAlgs    []string `json:"id_token_signing_alg_values_supported"`
}

func (h *server) discovery() discoveryDoc {
	return discoveryDoc{
		Issuer:                 h.cfg.Issuer,
		JWKSURI:                strings.TrimSuffix(h.cfg.Issuer, "/") + "/.well-known/jwks.json",
		ResponseTypesSupported: []string{},
		GrantTypesSupported:    []string{},
	}
}

// algorithms lists the published keys' algorithms, sorted so the document
// (and a cache's comparison of it) does not depend on key order.
func (h *server) algorithms() []string {
	algs := h.cfg.Algorithms()
	slices.Sort(algs)
	return slices.Compact(algs)
}

// discoveryCache lets the documents be cached like the JWKS: the algorithm
// list changes only when a key of another algorithm is published, and that
// key is published a JWKS max-age before it signs.
func (h *server) discoveryCache(c echo.Context) {
	c.Response().Header().Set("Cache-Control", "public, max-age="+strconv.Itoa(int(h.cfg.JWKSMaxAge.Seconds())))
}

func (h *server) openIDConfiguration(c echo.Context) error {
	h.discoveryCache(c)
	return c.JSON(http.StatusOK, oidcDiscoveryDoc{
		discoveryDoc:          h.discovery(),
		SubjectTypesSupported: []string{"pairwise"},
		IDTokenSigningAlgs:    h.algorithms(),
	})
}

func (h *server) authorizationServerMetadata(c echo.Context) error {
	h.discoveryCache(c)
	return c.JSON(http.StatusOK, h.discovery())
}
