"""Verifies a wxtoken access token with PyJWT (Debian's python3-jwt 2.6), as
a Python service would:  python3 pyjwt.py <issuer> <appid> <token>
Prints the claims as JSON, or the error and exits 1."""
import json
import sys
import urllib.request

import jwt

issuer, appid, token = sys.argv[1:4]
# Discovery: the issuer's metadata names the JWKS and its algorithms.
with urllib.request.urlopen(issuer.rstrip("/") + "/.well-known/openid-configuration", timeout=10) as r:
    meta = json.load(r)
if meta["issuer"] != issuer:
    sys.exit("discovery names " + meta["issuer"])
# Caches the set for lifespan seconds (set it to the JWKS max-age); an
# unknown kid refetches at once, with no rate limit.
jwks = jwt.PyJWKClient(meta["jwks_uri"], cache_jwk_set=True, lifespan=300)
try:
    if jwt.get_unverified_header(token).get("typ", "").lower() not in ("at+jwt", "application/at+jwt"):
        raise jwt.InvalidTokenError("typ is not at+jwt")
    key = jwks.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        key.key,
        algorithms=meta["id_token_signing_alg_values_supported"],
        audience=appid,
        issuer=issuer,
        leeway=30,
        options={"require": ["exp", "iat", "sub", "jti"]},
    )
except (jwt.PyJWTError, jwt.PyJWKClientError) as e:
    sys.exit("refused: " + type(e).__name__)
print(json.dumps({"openid": claims["sub"], "appid": claims["aud"], "jti": claims["jti"]}))
