// A stand-in for a Databricks workspace, for the quickstart demo (quickstart.sh). No
// dependencies: node:http and node:https only.
//
// Usage:
//   FAKE_DBX_CLIENT_ID=... FAKE_DBX_CLIENT_SECRET=... \
//     node demo/fake-databricks.mjs --tls-port P --http-port Q --cert CERT.pem --key KEY.pem
//
// Two listeners on 127.0.0.1, same handler:
//   https://127.0.0.1:P   what HAProxy forwards allowed requests to. HTTPS because the shipped
//                         haproxy.cfg always re-encrypts to Databricks and verifies the
//                         certificate (quickstart.sh makes a throw-away CA for it), so the demo
//                         runs that configuration unchanged.
//   http://127.0.0.1:Q    the token endpoint idgate calls. idgate accepts http:// only for
//                         loopback hosts; it has no option to trust a private CA, and the demo
//                         must not touch the system's trust store.
//
// Routes:
//   POST /oidc/v1/token   Databricks' OAuth token endpoint:
//                         - client_credentials (OAuth M2M): checks what the real one checks:
//                           form body, grant_type, HTTP Basic client authentication with the
//                           configured id and secret, scope. Issues `dbx-demo-sp-N` tokens.
//                         - token exchange (RFC 8693, OAuth token federation): a JWT
//                           subject_token of type ...:jwt and the scope. Issues
//                           `dbx-demo-user-<sub>-N`, the caller's own Databricks token. The real
//                           endpoint checks the JWT against a federation policy; this fake only
//                           reads its `sub` (the quickstart's IdP signed it, idgate verified it).
//   anything else         echo: 200 with a JSON description of the request as received
//                         (method, path, every header, a small body), so you can see what
//                         HAProxy forwarded: X-Forwarded-User and the Databricks credential,
//                         never the caller's IdP token.
//
// Once both listeners are up it prints ONE JSON line on stdout:
//   {"workspace":"https://127.0.0.1:P","token_url":"http://127.0.0.1:Q/oidc/v1/token"}
// It exits on SIGTERM/SIGINT and when stdin closes (so it cannot outlive quickstart.sh). It
// logs one line per request to stderr, never a credential.

import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';

/** Largest request body read: token requests are ~100 bytes; the echo only shows a preview. */
const MAX_BODY_BYTES = 1024 * 1024;
/** Bodies up to this size are shown in the echo (model-serving payloads in the demo are tiny). */
const ECHO_BODY_PREVIEW_BYTES = 4096;
const TOKEN_PATH = '/oidc/v1/token';
const TOKEN_TTL_SECONDS = 3600;

function arg(name) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0 || i + 1 >= process.argv.length) {
    console.error(`fake-databricks: missing --${name}`);
    process.exit(2);
  }
  return process.argv[i + 1];
}

const tlsPort = Number(arg('tls-port'));
const httpPort = Number(arg('http-port'));
const cert = fs.readFileSync(arg('cert'));
const key = fs.readFileSync(arg('key'));
// Secrets come from the environment, not argv (argv is visible to every user in `ps`).
const clientId = process.env.FAKE_DBX_CLIENT_ID;
const clientSecret = process.env.FAKE_DBX_CLIENT_SECRET;
const scope = process.env.FAKE_DBX_SCOPE ?? 'all-apis';
if (!clientId || !clientSecret) {
  console.error('fake-databricks: FAKE_DBX_CLIENT_ID and FAKE_DBX_CLIENT_SECRET must be set');
  process.exit(2);
}

let issued = 0;

function send(res, status, body, headers = {}) {
  const text = `${JSON.stringify(body, null, 2)}\n`;
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(text);
  return status;
}

// Databricks' error shape.
function error(res, status, code, message, headers) {
  return send(res, status, { error_code: code, message }, headers);
}

// RFC 6749 §2.3.1: client id and secret are form-urlencoded before being put in Basic auth.
function basicCredentials(header) {
  const m = /^Basic ([A-Za-z0-9+/=]+)$/.exec(header ?? '');
  if (!m) return null;
  const pair = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = pair.indexOf(':');
  if (colon < 0) return null;
  const dec = (s) => {
    try {
      return decodeURIComponent(s.replace(/\+/g, ' '));
    } catch {
      return null;
    }
  };
  return { id: dec(pair.slice(0, colon)), secret: dec(pair.slice(colon + 1)) };
}

function token(req, res, body) {
  if (req.method !== 'POST') return error(res, 405, 'invalid_request', 'POST only');
  const ct = (req.headers['content-type'] ?? '').split(';')[0].trim();
  if (ct !== 'application/x-www-form-urlencoded') {
    return error(res, 400, 'invalid_request', `content-type must be application/x-www-form-urlencoded, got ${JSON.stringify(ct)}`);
  }
  const form = new URLSearchParams(body.toString('utf8'));
  if (form.get('grant_type') === 'urn:ietf:params:oauth:grant-type:token-exchange') {
    return exchange(res, form);
  }
  if (form.get('grant_type') !== 'client_credentials') {
    return error(res, 400, 'unsupported_grant_type', `grant_type ${JSON.stringify(form.get('grant_type'))}: client_credentials or token-exchange`);
  }
  const creds = basicCredentials(req.headers.authorization);
  if (!creds) {
    return error(res, 401, 'invalid_client', 'client authentication (HTTP Basic) required', {
      'www-authenticate': 'Basic realm="fake-databricks"',
    });
  }
  if (creds.id !== clientId || creds.secret !== clientSecret) {
    return error(res, 401, 'invalid_client', 'client authentication failed');
  }
  if (form.get('scope') !== scope) {
    return error(res, 400, 'invalid_scope', `scope ${JSON.stringify(form.get('scope'))}, expected ${JSON.stringify(scope)}`);
  }
  issued += 1;
  return send(res, 200, {
    access_token: `dbx-demo-sp-${issued}`,
    token_type: 'Bearer',
    expires_in: TOKEN_TTL_SECONDS,
    scope,
  });
}

function exchange(res, form) {
  if (form.get('subject_token_type') !== 'urn:ietf:params:oauth:token-type:jwt') {
    return error(res, 400, 'invalid_request', 'subject_token_type must be urn:ietf:params:oauth:token-type:jwt');
  }
  if (form.get('scope') !== scope) {
    return error(res, 400, 'invalid_scope', `scope ${JSON.stringify(form.get('scope'))}, expected ${JSON.stringify(scope)}`);
  }
  let sub;
  try {
    const payload = (form.get('subject_token') ?? '').split('.')[1] ?? '';
    sub = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')).sub;
  } catch {
    sub = undefined;
  }
  if (typeof sub !== 'string' || !/^[A-Za-z0-9._@-]{1,64}$/.test(sub)) {
    return error(res, 400, 'invalid_grant', 'subject_token is not a JWT with a usable sub');
  }
  issued += 1;
  return send(res, 200, {
    access_token: `dbx-demo-user-${sub}-${issued}`,
    issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
    token_type: 'Bearer',
    expires_in: TOKEN_TTL_SECONDS,
    scope,
  });
}

function echo(req, res, body, listener) {
  const headers = {};
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i].toLowerCase();
    const value = req.rawHeaders[i + 1];
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  const out = {
    note: `fake Databricks workspace: the request as it arrived (${listener})`,
    method: req.method,
    path: req.url,
    headers,
    body_bytes: body.length,
  };
  if (body.length > 0 && body.length <= ECHO_BODY_PREVIEW_BYTES) out.body = body.toString('utf8');
  return send(res, 200, out);
}

function handler(listener) {
  return (req, res) => {
    const chunks = [];
    let size = 0;
    let tooBig = false;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) tooBig = true;
      else chunks.push(c);
    });
    req.on('end', () => {
      let status;
      if (tooBig) status = error(res, 413, 'BAD_REQUEST', `body larger than ${MAX_BODY_BYTES} bytes`);
      else if (req.url.split('?')[0] === TOKEN_PATH) status = token(req, res, Buffer.concat(chunks));
      else status = echo(req, res, Buffer.concat(chunks), listener);
      // Method and path only: never a header (they carry credentials).
      console.error(`fake-databricks: ${listener} ${req.method} ${req.url.split('?')[0]} -> ${status}`);
    });
    req.on('error', () => res.destroy());
  };
}

function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server.address().port));
  });
}

try {
  const tls = await listen(https.createServer({ cert, key }, handler('https')), tlsPort);
  const plain = await listen(http.createServer(handler('http')), httpPort);
  process.stdout.write(
    `${JSON.stringify({ workspace: `https://127.0.0.1:${tls}`, token_url: `http://127.0.0.1:${plain}${TOKEN_PATH}` })}\n`,
  );
} catch (e) {
  console.error(`fake-databricks: cannot listen: ${e.message}`);
  process.exit(1);
}

process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
