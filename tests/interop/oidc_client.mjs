// panva's openid-client (unmodified) as a relying party of the issuer, for
// tests/interop/test_openid_client.py.
//
// usage: node oidc_client.mjs ISSUER CLIENT_ID REDIRECT_URI
//   1. discovery (/.well-known/openid-configuration), then the authorization URL with PKCE (S256),
//      nonce and state: printed as one JSON line {"authorization_url": ...}
//   2. reads one line on stdin: the URL the browser landed on (the redirect URI with code, state, iss)
//   3. exchanges the code (openid-client checks state, iss, PKCE and validates the id_token: the
//      signature against the JWKS, iss, aud, exp, iat, nonce), calls userinfo, refreshes, and
//      prints one JSON line {"claims", "userinfo", "scope", ...}
// Any failure prints {"error": ..., "code": ...} and exits 1. Public client (auth method none).
import * as readline from "node:readline";
import * as client from "openid-client";

const [issuer, clientId, redirectUri] = process.argv.slice(2);

function out(value) {
  process.stdout.write(JSON.stringify(value) + "\n");
}

async function nextLine() {
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    lines.close();
    return line.trim();
  }
  throw new Error("no callback URL on stdin");
}

try {
  const config = await client.discovery(new URL(issuer), clientId, undefined, client.None(), {
    execute: [client.allowInsecureRequests], // the test's issuer is plain http on 127.0.0.1
  });
  const verifier = client.randomPKCECodeVerifier();
  const nonce = client.randomNonce();
  const state = client.randomState();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: "openid profile read",
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: "S256",
    nonce,
    state,
  });
  out({ authorization_url: url.href, nonce, state });

  const callback = new URL(await nextLine());
  const tokens = await client.authorizationCodeGrant(config, callback, {
    pkceCodeVerifier: verifier,
    expectedNonce: nonce,
    expectedState: state,
    idTokenExpected: true,
  });
  const claims = tokens.claims();
  const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
  const server = config.serverMetadata();
  out({
    claims,
    userinfo,
    scope: tokens.scope,
    token_type: tokens.token_type,
    refreshed: Boolean(refreshed.access_token && refreshed.refresh_token !== tokens.refresh_token),
    refreshed_id_token_sub: refreshed.id_token ? refreshed.claims().sub : null,
    end_session_url: client
      .buildEndSessionUrl(config, { id_token_hint: tokens.id_token, state: "bye" })
      .href,
    issuer: server.issuer,
  });
} catch (error) {
  out({ error: String(error), code: error?.code ?? null, cause: String(error?.cause ?? "") });
  process.exit(1);
}
