// Verifies one issuer access token with panva's jose, knowing only the issuer's JWKS URL.
// Usage: node verify.mjs JWKS_URI ISSUER AUDIENCE TOKEN  -> prints {"ok":true,"payload":...} or {"ok":false,"code":...}
import { createRemoteJWKSet, jwtVerify } from "jose";

const [jwksUri, issuer, audience, token] = process.argv.slice(2);
const jwks = createRemoteJWKSet(new URL(jwksUri));
try {
  const { payload, protectedHeader } = await jwtVerify(token, jwks, { issuer, audience, typ: "at+jwt" });
  console.log(JSON.stringify({ ok: true, payload, alg: protectedHeader.alg }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, code: error.code ?? error.name }));
}
