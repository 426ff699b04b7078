// A real OIDC provider (the `oidc-provider` package) for idgate's integration tests.
//
// Usage: node tests/oidc/server.mjs [PORT]     (PORT 0 or absent: any free port)
//
// Listens on 127.0.0.1 only. Once listening it prints ONE JSON line on stdout:
//   {"issuer":"http://127.0.0.1:PORT"}
// and exits when stdin closes (so it cannot outlive the test process that started it).
//
// What it serves:
// - OIDC discovery, /jwks, and /token with the client_credentials grant. Access tokens are
//   JWTs (typ at+jwt) for the resource indicator https://haproxy.local (so aud is that).
// - clients (client_secret_basic, secret "<id>-secret"):
//     rs256-client, es256-client, eddsa-client  -> tokens signed with RS256 / ES256 / EdDSA
//     alice (RS256): groups ["ml-engineers"], email alice@example.com
//     bob   (ES256): groups ["analysts"],     email bob@example.com
// - test controls (loopback only, no auth: never expose this server):
//     POST /admin/rotate?keep=0|1   new RSA, EC and Ed25519 signing keys (new kids); keep=1 keeps
//                                   publishing the previous keys, keep=0 removes them
//     POST /admin/jwks?mode=ok|fail|garbage   /jwks answers normally, 503, or 200 with junk
//     GET  /admin/stats             {"jwks_requests":N,"generation":G,"kids":[...]}
//
// Keys are generated at startup (nothing secret is stored on disk).

import crypto from 'node:crypto';
import http from 'node:http';

import Provider, { errors } from 'oidc-provider';

const RESOURCE = 'https://haproxy.local';
const TOKEN_TTL_SECONDS = 300;

const CLIENT_ALGS = {
  'rs256-client': 'RS256',
  'es256-client': 'ES256',
  'eddsa-client': 'EdDSA',
  alice: 'RS256',
  bob: 'ES256',
};

const PEOPLE = {
  alice: { email: 'alice@example.com', groups: ['ml-engineers'] },
  bob: { email: 'bob@example.com', groups: ['analysts'] },
};

let generation = 0;
let signingKeys = [];
let retiredKeys = [];
let jwksMode = 'ok';
let jwksRequests = 0;

function makeKey(alg) {
  let pair;
  if (alg === 'RS256') pair = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  else if (alg === 'ES256') pair = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  else pair = crypto.generateKeyPairSync('ed25519');
  const jwk = pair.privateKey.export({ format: 'jwk' });
  return { ...jwk, alg, use: 'sig', kid: `${alg.toLowerCase()}-g${generation}` };
}

function rotate(keep) {
  generation += 1;
  retiredKeys = keep ? [...signingKeys, ...retiredKeys] : [];
  signingKeys = ['RS256', 'ES256', 'EdDSA'].map(makeKey);
}

function makeProvider(issuer) {
  const clients = Object.keys(CLIENT_ALGS).map((id) => ({
    client_id: id,
    client_secret: `${id}-secret`,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: 'read write',
  }));
  const provider = new Provider(issuer, {
    clients,
    scopes: ['openid', 'read', 'write'],
    // Current keys first: the provider signs with the first key matching the algorithm.
    jwks: { keys: [...signingKeys, ...retiredKeys] },
    cookies: { keys: ['idgate-test-only-cookie-key'] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => RESOURCE,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource, client) => {
          if (resource !== RESOURCE) throw new errors.InvalidTarget();
          return {
            scope: 'read write',
            audience: RESOURCE,
            accessTokenTTL: TOKEN_TTL_SECONDS,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: CLIENT_ALGS[client.clientId] } },
          };
        },
      },
    },
    ttl: { ClientCredentials: TOKEN_TTL_SECONDS },
    extraTokenClaims: async (ctx, token) => PEOPLE[token.clientId],
  });
  provider.on('server_error', (ctx, err) => console.error('oidc-provider server_error:', err));
  return provider;
}

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

const port = Number(process.argv[2] ?? process.env.PORT ?? 0);
let issuer;
let callback;

function rebuild() {
  callback = makeProvider(issuer).callback();
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, issuer);
  if (url.pathname === '/admin/rotate' && req.method === 'POST') {
    rotate(url.searchParams.get('keep') === '1');
    rebuild();
    json(res, 200, {
      kids: signingKeys.map((k) => k.kid),
      published: [...signingKeys, ...retiredKeys].map((k) => k.kid),
    });
    return;
  }
  if (url.pathname === '/admin/jwks' && req.method === 'POST') {
    const mode = url.searchParams.get('mode');
    if (!['ok', 'fail', 'garbage'].includes(mode)) {
      json(res, 400, { error: 'mode must be ok, fail or garbage' });
      return;
    }
    jwksMode = mode;
    json(res, 200, { mode });
    return;
  }
  if (url.pathname === '/admin/stats') {
    json(res, 200, {
      jwks_requests: jwksRequests,
      generation,
      kids: signingKeys.map((k) => k.kid),
    });
    return;
  }
  if (url.pathname === '/jwks') {
    jwksRequests += 1;
    if (jwksMode === 'fail') {
      json(res, 503, { error: 'temporarily_unavailable' });
      return;
    }
    if (jwksMode === 'garbage') {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<html><body>down for maintenance</body></html>');
      return;
    }
  }
  callback(req, res);
});

rotate(false);
server.listen(port, '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  rebuild();
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

// Exit with the parent: the harness holds our stdin open for as long as it wants us.
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
