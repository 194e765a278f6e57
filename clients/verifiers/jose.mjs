// Verifies a wxtoken access token with jose, as a Node service would:
//   node jose.mjs <issuer> <appid> <token>
// Prints the claims as JSON, or the error and exits 1.
import { createRemoteJWKSet, jwtVerify } from "jose";

const [issuer, appid, token] = process.argv.slice(2);
// Discovery: the issuer's metadata names the JWKS and its algorithms.
const meta = await (await fetch(`${issuer.replace(/\/$/, "")}/.well-known/openid-configuration`)).json();
if (meta.issuer !== issuer) throw new Error(`discovery names ${meta.issuer}`);
// Cached for cacheMaxAge (10 min by default; set it to the JWKS max-age) and
// refetched on an unknown kid at most once per cooldownDuration (30 s).
const jwks = createRemoteJWKSet(new URL(meta.jwks_uri), { cacheMaxAge: 5 * 60_000 });
try {
  const { payload } = await jwtVerify(token, jwks, {
    issuer,
    audience: appid,
    algorithms: meta.id_token_signing_alg_values_supported,
    typ: "at+jwt",
    requiredClaims: ["exp", "iat", "sub", "jti"],
    clockTolerance: 30,
  });
  console.log(JSON.stringify({ openid: payload.sub, appid: payload.aud, jti: payload.jti }));
} catch (e) {
  console.error(`refused: ${e.code ?? e.name}`);
  process.exit(1);
}
