#!/usr/bin/env node
// A real OpenID Provider for the tests: the certified `oidc-provider` package, with a
// password login page, one public client (code flow + PKCE, refresh tokens) and JWT
// access tokens for secstream's audience. Python tests and browser tests start it on a
// free port; it is never part of the service.
//
//   node frontend/e2e/oidc/provider.mjs --port 0 --users users.json [--keys jwks.json]
//        [--client-id secstream-dashboard] [--redirect-uri http://127.0.0.1:8000/ ...]
//        [--audience secstream] [--access-token-ttl 300]
//
// When it listens it prints one JSON line on stdout: {"issuer": ..., "port": ...}.
//
// --users: {"alice": {"password": "pw", "claims": {"realm_access": {"roles": ["soc-lead"]}}}}
//          each user's claims go into the ID token, userinfo and the access token.
// --keys:  a JWKS with private keys; the first key signs. Without it, one RSA key is made.
//
// Test-only routes (what a real provider does by itself, driven by the test):
//   POST /_test/rotate  re-read --keys (write the new key first, the old one after it)
//                       and publish the new key set; answers the public JWKS
//   GET  /_test/stats   {"discovery": n, "jwks": n, "token": n}: requests served so far
import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { parseArgs } from "node:util";
import Provider from "oidc-provider";

const { values: args } = parseArgs({
  options: {
    port: { type: "string", default: "0" },
    host: { type: "string", default: "127.0.0.1" },
    users: { type: "string" },
    keys: { type: "string" },
    "client-id": { type: "string", default: "secstream-dashboard" },
    "redirect-uri": { type: "string", multiple: true, default: [] },
    audience: { type: "string", default: "secstream" },
    "access-token-ttl": { type: "string", default: "300" },
  },
});

const users = args.users ? JSON.parse(readFileSync(args.users, "utf8")) : {};
const accessTokenTtl = Number(args["access-token-ttl"]);
const resource = `urn:secstream:${args.audience}`;
const stats = { discovery: 0, jwks: 0, token: 0 };
const cookieKeys = [randomBytes(32).toString("hex")];

function loadKeys() {
  if (args.keys) return JSON.parse(readFileSync(args.keys, "utf8"));
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const jwk = privateKey.export({ format: "jwk" });
  return { keys: [{ ...jwk, kid: `generated-${randomBytes(4).toString("hex")}`, alg: "RS256", use: "sig" }] };
}

function claimsOf(accountId) {
  const user = users[accountId];
  return user ? { ...(user.claims ?? {}), sub: accountId } : undefined;
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>
<body><main><h1>${escapeHtml(title)}</h1>${body}</main></body></html>`;
}

function makeProvider(issuer, jwks) {
  const provider = new Provider(issuer, {
    jwks,
    cookies: { keys: cookieKeys },
    clients: [
      {
        client_id: args["client-id"],
        token_endpoint_auth_method: "none",
        application_type: "web",
        grant_types: ["authorization_code", "refresh_token"],
        response_types: ["code"],
        redirect_uris: args["redirect-uri"],
        post_logout_redirect_uris: args["redirect-uri"],
      },
    ],
    scopes: ["openid", "profile", "offline_access"],
    claims: { openid: ["sub"], profile: ["name", "roles", "groups", "realm_access"] },
    conformIdTokenClaims: false,
    findAccount: async (_ctx, accountId) =>
      claimsOf(accountId) && { accountId, claims: async () => claimsOf(accountId) },
    ttl: {
      AccessToken: accessTokenTtl,
      IdToken: accessTokenTtl,
      Session: 3600,
      Grant: 3600,
      Interaction: 600,
      RefreshToken: 3600,
    },
    pkce: { required: () => true },
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed("refresh_token"),
    rotateRefreshToken: true,
    // A first-party client: the person is not asked to consent again for it.
    loadExistingGrant: async (ctx) => {
      const grantId = ctx.oidc.result?.consent?.grantId
        || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) return ctx.oidc.provider.Grant.find(grantId);
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope("openid profile offline_access");
      grant.addResourceScope(resource, "secstream");
      await grant.save();
      return grant;
    },
    extraTokenClaims: async (_ctx, token) => {
      if (!token.accountId) return undefined;
      const { sub: _sub, ...rest } = claimsOf(token.accountId) ?? {};
      return rest;
    },
    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: {
        enabled: true,
        // Like Keycloak given an id_token_hint: no second question.
        logoutSource: async (ctx, form) => {
          ctx.body = page("Signing out", `${form}
<script>document.forms[0].insertAdjacentHTML("beforeend",'<input type="hidden" name="logout" value="yes">');document.forms[0].submit();</script>`);
        },
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => resource,
        useGrantedResource: async () => true,
        getResourceServerInfo: async () => ({
          scope: "secstream",
          audience: args.audience,
          accessTokenTTL: accessTokenTtl,
          accessTokenFormat: "jwt",
          jwt: { sign: { alg: jwks.keys[0].alg ?? "RS256" } },
        }),
      },
    },
    renderError: async (ctx, out) => {
      ctx.type = "html";
      ctx.body = page("Sign-in error", `<pre>${escapeHtml(JSON.stringify(out, null, 2))}</pre>`);
    },
  });
  provider.on("server_error", (_ctx, err) => console.error("provider error:", err));
  return provider;
}

async function readForm(req) {
  let body = "";
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 16_384) throw new Error("form too large");
  }
  return new URLSearchParams(body);
}

function send(res, status, type, body) {
  res.writeHead(status, { "content-type": type, "cache-control": "no-store" });
  res.end(body);
}

function loginPage(uid, message = "") {
  return page("Sign in to SEC-TESTER", `${message ? `<p role="alert">${escapeHtml(message)}</p>` : ""}
<form method="post" action="/interaction/${escapeHtml(uid)}/login">
  <label>Username <input name="username" autocomplete="username" required autofocus></label>
  <label>Password <input name="password" type="password" autocomplete="current-password" required></label>
  <button type="submit">Sign in</button>
</form>`);
}

async function interaction(provider, req, res, url) {
  const details = await provider.interactionDetails(req, res);
  const { uid, prompt } = details;
  if (prompt.name !== "login") {
    // A first-party client never reaches consent (see loadExistingGrant).
    return provider.interactionFinished(req, res, { consent: {} }, { mergeWithLastSubmission: true });
  }
  if (req.method === "GET") return send(res, 200, "text/html", loginPage(uid));
  if (req.method === "POST" && url.pathname.endsWith("/login")) {
    const form = await readForm(req);
    const username = form.get("username") ?? "";
    const user = users[username];
    if (!user || user.password !== form.get("password")) {
      return send(res, 401, "text/html", loginPage(uid, "Wrong username or password."));
    }
    return provider.interactionFinished(req, res, { login: { accountId: username } }, {
      mergeWithLastSubmission: false,
    });
  }
  return send(res, 405, "text/plain", "method not allowed");
}

let provider;
let handle;
function useProvider(next) {
  provider = next;
  handle = next.callback();
}
const server = createServer(async (req, res) => {
  const url = new URL(req.url, "http://localhost");
  try {
    if (url.pathname === "/_test/stats") return send(res, 200, "application/json", JSON.stringify(stats));
    if (url.pathname === "/_test/rotate" && req.method === "POST") {
      useProvider(makeProvider(provider.issuer, loadKeys()));
      const jwks = await (await fetch(`${provider.issuer}/jwks`)).text();
      stats.jwks -= 1; // the answer's own fetch is not a client's
      return send(res, 200, "application/json", jwks);
    }
    if (url.pathname.startsWith("/interaction/")) return await interaction(provider, req, res, url);
    if (url.pathname === "/.well-known/openid-configuration") stats.discovery += 1;
    if (url.pathname === "/jwks") stats.jwks += 1;
    if (url.pathname === "/token") stats.token += 1;
    return handle(req, res);
  } catch (err) {
    console.error(err);
    if (!res.headersSent) send(res, 500, "text/plain", String(err));
    else res.end();
  }
});

server.listen(Number(args.port), args.host, () => {
  const { port } = server.address();
  const issuer = `http://${args.host}:${port}`;
  useProvider(makeProvider(issuer, loadKeys()));
  process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => server.close(() => process.exit(0)) && setTimeout(() => process.exit(0), 500).unref());
}
