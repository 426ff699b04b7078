// A stand-in for a Databricks workspace, for the quickstart demo (quickstart.sh). No
// dependencies: node:http, node:https and node:dgram only.
//
// Usage:
//   FAKE_DBX_CLIENT_ID=... FAKE_DBX_CLIENT_SECRET=... \
//     node demo/fake-databricks.mjs --tls-port P --http-port Q --cert CERT.pem --key KEY.pem \
//       [--dataplane-port D --dataplane-cert DP.pem --dataplane-key DP.key] [--dns-port N]
//
// Listeners, all on 127.0.0.1:
//   https://127.0.0.1:P   the workspace: what HAProxy forwards allowed requests to. HTTPS
//                         because the shipped haproxy.cfg always re-encrypts to Databricks and
//                         verifies the certificate (quickstart.sh makes a throw-away CA for it),
//                         so the demo runs that configuration unchanged.
//   http://127.0.0.1:Q    the same workspace routes, for idgate: its token endpoint and the
//                         serving-endpoint lookups. idgate accepts http:// only for loopback
//                         hosts; it has no option to trust a private CA for them, and the demo
//                         must not touch the system's trust store.
//   https://127.0.0.1:D   (with --dataplane-port) the DATA PLANE of route-optimized serving
//                         endpoints, as if at https://<endpoint id>.serving.cloud.databricks.com,
//                         with a certificate for *.serving.cloud.databricks.com from the same CA.
//   udp://127.0.0.1:N     (with --dns-port) a tiny DNS server for HAProxy's resolver: A 127.0.0.1
//                         for *.serving.cloud.databricks.com, NODATA for other types of those
//                         names, NXDOMAIN for every other name.
//
// Serving endpoints (ENDPOINTS below): `churn-model`, classic (invoked on the workspace host),
// and, with a data plane, `churn-fast`, route-optimized (invoked on its data plane only).
//
// Routes on the workspace listeners (P and Q):
//   POST /oidc/v1/token   Databricks' OAuth token endpoint:
//                         - client_credentials (OAuth M2M): checks what the real one checks:
//                           form body, grant_type, HTTP Basic client authentication with the
//                           configured id and secret, scope. Issues `dbx-demo-sp-N` tokens.
//                         - token exchange (RFC 8693, OAuth token federation): a JWT
//                           subject_token of type ...:jwt and the scope. Issues
//                           `dbx-demo-user-<sub>-N`, the caller's own Databricks token. The real
//                           endpoint checks the JWT against a federation policy; this fake only
//                           reads its `sub` (the quickstart's IdP signed it, idgate verified it).
//                         - jwt-bearer (data-plane tokens, as the Databricks SDK mints them): no
//                           client authentication; form grant_type=urn:ietf:params:oauth:
//                           grant-type:jwt-bearer, assertion=<a workspace token this fake issued>,
//                           authorization_details=<exactly the string the serving-endpoint API
//                           gives for a route-optimized endpoint>. Issues
//                           `dbx-demo-dp-<endpoint>-N`, valid on that endpoint's data plane only.
//   GET /api/2.0/serving-endpoints/<name>
//                         the endpoint's description (Bearer: a workspace token this fake
//                         issued): `route_optimized`, and for a route-optimized endpoint
//                         `data_plane_info.query_info.{endpoint_url, authorization_details}`;
//                         404 RESOURCE_DOES_NOT_EXIST for unknown names.
//   POST /serving-endpoints/<route-optimized name>/invocations
//                         400 INVALID_PARAMETER_VALUE, as Databricks: query its data plane.
//   anything else         echo: 200 with a JSON description of the request as received
//                         (method, path, every header, a small body), so you can see what
//                         HAProxy forwarded: X-Forwarded-User and the Databricks credential,
//                         never the caller's IdP token.
// Route on the data plane (D):
//   POST /<workspace id>/serving-endpoints/<name>/invocations, Host <endpoint id>.serving...:D
//                         for a route-optimized endpoint, with a data-plane token scoped to
//                         exactly that endpoint: the echo, saying it is the data plane. 401 with
//                         no token, 403 PERMISSION_DENIED with any other token, 404 otherwise.
//
// Once every listener is up it prints ONE JSON line on stdout:
//   {"workspace":"https://127.0.0.1:P","token_url":"http://127.0.0.1:Q/oidc/v1/token",
//    "data_plane":"https://127.0.0.1:D","dns":"udp://127.0.0.1:N","workspace_id":"...",
//    "endpoints":{"churn-model":null,"churn-fast":"https://<id>.serving...:D/<ws id>/..."}}
// It exits on SIGTERM/SIGINT and when stdin closes (so it cannot outlive quickstart.sh). It
// logs one line per request (and per DNS query) to stderr, never a credential.

import dgram from 'node:dgram';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';

/** Largest request body read: token requests are ~100 bytes; the echo only shows a preview. */
const MAX_BODY_BYTES = 1024 * 1024;
/** Bodies up to this size are shown in the echo (model-serving payloads in the demo are tiny). */
const ECHO_BODY_PREVIEW_BYTES = 4096;
const TOKEN_PATH = '/oidc/v1/token';
const TOKEN_TTL_SECONDS = 3600;
/** Issued tokens remembered (oldest forgotten first): a demo issues a handful. */
const MAX_TOKENS = 10000;
const GRANT_TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const GRANT_JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
/** The workspace ID: the first path segment of data-plane URLs. */
const WORKSPACE_ID = '1234567890123456';
/** Route-optimized endpoints are served at `<endpoint id>.<DATA_PLANE_DOMAIN>`. */
const DATA_PLANE_DOMAIN = 'serving.cloud.databricks.com';
/** The demo's serving endpoints: name -> 32-hex endpoint id, and whether route-optimized. */
const ENDPOINTS = {
  'churn-model': { id: '0c4f6a2e9d8b47f1a3c5e7092b4d6f81', routeOptimized: false },
  'churn-fast': { id: '5e7f1d00a11ce4b2c8d0e6f1a3b5c7d9', routeOptimized: true },
};
/** Answers of the DNS server live this long (seconds). */
const DNS_TTL_SECONDS = 60;

function arg(name, optional = false) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0 || i + 1 >= process.argv.length) {
    if (optional) return undefined;
    console.error(`fake-databricks: missing --${name}`);
    process.exit(2);
  }
  return process.argv[i + 1];
}

function port(name, optional = false) {
  const v = arg(name, optional);
  if (v === undefined) return undefined;
  if (!/^[0-9]{1,5}$/.test(v) || Number(v) > 65535) {
    console.error(`fake-databricks: --${name} ${JSON.stringify(v)} is not a port number`);
    process.exit(2);
  }
  return Number(v);
}

const tlsPort = port('tls-port');
const httpPort = port('http-port');
const cert = fs.readFileSync(arg('cert'));
const key = fs.readFileSync(arg('key'));
const dataPlanePort = port('dataplane-port', true);
const dataPlaneCert = dataPlanePort === undefined ? undefined : fs.readFileSync(arg('dataplane-cert'));
const dataPlaneKey = dataPlanePort === undefined ? undefined : fs.readFileSync(arg('dataplane-key'));
const dnsPort = port('dns-port', true);
// Secrets come from the environment, not argv (argv is visible to every user in `ps`).
const clientId = process.env.FAKE_DBX_CLIENT_ID;
const clientSecret = process.env.FAKE_DBX_CLIENT_SECRET;
const scope = process.env.FAKE_DBX_SCOPE ?? 'all-apis';
if (!clientId || !clientSecret) {
  console.error('fake-databricks: FAKE_DBX_CLIENT_ID and FAKE_DBX_CLIENT_SECRET must be set');
  process.exit(2);
}

let issued = 0;
/** Every token issued: token -> { kind: 'sp' | 'user' | 'dp', endpoint?, expires (ms) }. */
const tokens = new Map();
/** Set once the data-plane listener is up (its port is part of the endpoint URLs). */
let dataPlaneActualPort;

function remember(token, kind, endpoint) {
  if (tokens.size >= MAX_TOKENS) tokens.delete(tokens.keys().next().value);
  tokens.set(token, { kind, endpoint, expires: Date.now() + TOKEN_TTL_SECONDS * 1000 });
}

/** What this fake knows of a token: its record if it issued it and it has not expired. */
function known(token) {
  const t = token === undefined ? undefined : tokens.get(token);
  return t && t.expires > Date.now() ? t : undefined;
}

function bearer(req) {
  const m = /^Bearer ([\x21-\x7e]+)$/.exec(req.headers.authorization ?? '');
  return m ? m[1] : undefined;
}

/** A route-optimized endpoint's data-plane host[:port], if there is a data plane. */
function dataPlaneAuthority(name) {
  const ep = ENDPOINTS[name];
  if (!ep?.routeOptimized || dataPlaneActualPort === undefined) return undefined;
  return `${ep.id}.${DATA_PLANE_DOMAIN}:${dataPlaneActualPort}`;
}

function dataPlanePath(name) {
  return `/${WORKSPACE_ID}/serving-endpoints/${name}/invocations`;
}

function endpointUrl(name) {
  const authority = dataPlaneAuthority(name);
  return authority && `https://${authority}${dataPlanePath(name)}`;
}

/** The authorization_details the serving-endpoint API hands out (RFC 9396, a JSON string). */
function authorizationDetails(name) {
  return JSON.stringify([
    {
      type: 'workspace_permission',
      object_type: 'serving-endpoints',
      object_path: `/serving-endpoints/${ENDPOINTS[name].id}`,
      actions: ['query_inference_endpoint'],
    },
  ]);
}

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
  if (form.get('grant_type') === GRANT_TOKEN_EXCHANGE) {
    return exchange(res, form);
  }
  if (form.get('grant_type') === GRANT_JWT_BEARER) {
    return dataPlaneToken(req, res, form);
  }
  if (form.get('grant_type') !== 'client_credentials') {
    return error(res, 400, 'unsupported_grant_type', `grant_type ${JSON.stringify(form.get('grant_type'))}: client_credentials, token-exchange or jwt-bearer`);
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
  const accessToken = `dbx-demo-sp-${issued}`;
  remember(accessToken, 'sp');
  return send(res, 200, {
    access_token: accessToken,
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
  const accessToken = `dbx-demo-user-${sub}-${issued}`;
  remember(accessToken, 'user');
  return send(res, 200, {
    access_token: accessToken,
    issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
    token_type: 'Bearer',
    expires_in: TOKEN_TTL_SECONDS,
    scope,
  });
}

// jwt-bearer: a data-plane token for one route-optimized endpoint, minted from a workspace
// token, as the Databricks SDK asks for it (exactly these three fields, no client auth).
function dataPlaneToken(req, res, form) {
  if (req.headers.authorization !== undefined) {
    return error(res, 400, 'invalid_request', 'jwt-bearer carries no client authentication');
  }
  const extra = [...form.keys()].filter((k) => !['grant_type', 'assertion', 'authorization_details'].includes(k));
  if (extra.length > 0 || form.getAll('assertion').length !== 1 || form.getAll('authorization_details').length !== 1) {
    return error(res, 400, 'invalid_request', 'jwt-bearer takes grant_type, assertion and authorization_details, once each');
  }
  const assertion = known(form.get('assertion'));
  if (!assertion || assertion.kind === 'dp') {
    return error(res, 400, 'invalid_grant', 'the assertion is not a workspace access token issued here (or it has expired)');
  }
  const details = form.get('authorization_details');
  const name = Object.keys(ENDPOINTS).find(
    (n) => dataPlaneAuthority(n) !== undefined && authorizationDetails(n) === details,
  );
  if (name === undefined) {
    return error(res, 400, 'invalid_request', 'authorization_details are not those the serving-endpoint API gives for a route-optimized endpoint');
  }
  issued += 1;
  const accessToken = `dbx-demo-dp-${name}-${issued}`;
  remember(accessToken, 'dp', name);
  return send(res, 200, {
    access_token: accessToken,
    token_type: 'Bearer',
    expires_in: TOKEN_TTL_SECONDS,
  });
}

// GET /api/2.0/serving-endpoints/<name>: ServingEndpointDetailed, as much as idgate reads.
function describeEndpoint(req, res, name) {
  if (req.method !== 'GET') return error(res, 405, 'BAD_REQUEST', 'GET only');
  const t = known(bearer(req));
  if (!t || t.kind === 'dp') {
    return error(res, 401, 'UNAUTHENTICATED', 'Credential was not sent or was of an unsupported type for this API.');
  }
  const ep = Object.hasOwn(ENDPOINTS, name) ? ENDPOINTS[name] : undefined;
  const url = endpointUrl(name);
  if (!ep || (ep.routeOptimized && !url)) {
    return error(res, 404, 'RESOURCE_DOES_NOT_EXIST', `Endpoint with name '${name}' does not exist.`);
  }
  const body = {
    name,
    id: ep.id,
    state: { ready: 'READY', config_update: 'NOT_UPDATING' },
    permission_level: 'CAN_QUERY',
    route_optimized: ep.routeOptimized,
  };
  if (url) {
    body.endpoint_url = url;
    body.data_plane_info = { query_info: { endpoint_url: url, authorization_details: authorizationDetails(name) } };
  }
  return send(res, 200, body);
}

function echo(req, res, body, listener, note) {
  const headers = {};
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i].toLowerCase();
    const value = req.rawHeaders[i + 1];
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  const out = {
    note: note ?? `fake Databricks workspace: the request as it arrived (${listener})`,
    method: req.method,
    path: req.url,
  };
  if (req.socket.servername) out.tls_sni = req.socket.servername;
  out.headers = headers;
  out.body_bytes = body.length;
  if (body.length > 0 && body.length <= ECHO_BODY_PREVIEW_BYTES) out.body = body.toString('utf8');
  return send(res, 200, out);
}

const DESCRIBE_PATH = /^\/api\/2\.0\/serving-endpoints\/([A-Za-z0-9._-]+)$/;
const INVOKE_PATH = /^\/serving-endpoints\/([A-Za-z0-9._-]+)\/invocations$/;
const DATA_PLANE_INVOKE_PATH = /^\/([0-9]+)\/serving-endpoints\/([A-Za-z0-9._-]+)\/invocations$/;

function workspace(req, res, body, listener) {
  const path = req.url.split('?')[0];
  let m;
  if (path === TOKEN_PATH) return token(req, res, body);
  if ((m = DESCRIBE_PATH.exec(path))) return describeEndpoint(req, res, m[1]);
  if ((m = INVOKE_PATH.exec(path)) && req.method === 'POST' && dataPlaneAuthority(m[1]) !== undefined) {
    return error(res, 400, 'INVALID_PARAMETER_VALUE', 'This endpoint is route-optimized: query it through its route-optimized URL');
  }
  return echo(req, res, body, listener);
}

// The data plane: one route-optimized endpoint per host name, endpoint-scoped tokens only.
function dataPlane(req, res, body) {
  const m = DATA_PLANE_INVOKE_PATH.exec(req.url.split('?')[0]);
  const name = m && m[1] === WORKSPACE_ID ? m[2] : undefined;
  const authority = name === undefined ? undefined : dataPlaneAuthority(name);
  const host = (req.headers.host ?? '').toLowerCase();
  if (authority === undefined || host !== authority) {
    return error(res, 404, 'RESOURCE_DOES_NOT_EXIST', 'No route-optimized endpoint at this host and path.');
  }
  if (req.method !== 'POST') return error(res, 405, 'BAD_REQUEST', 'POST only');
  const presented = bearer(req);
  if (presented === undefined) {
    return error(res, 401, 'UNAUTHENTICATED', 'Credential was not sent or was of an unsupported type for this API.');
  }
  const t = known(presented);
  if (!t || t.kind !== 'dp' || t.endpoint !== name) {
    return error(res, 403, 'PERMISSION_DENIED', `Route-optimized endpoint '${name}' accepts only an OAuth token scoped to it.`);
  }
  return echo(req, res, body, 'data plane', `fake Databricks DATA PLANE of route-optimized endpoint ${name}: the request as it arrived`);
}

function handler(listener, route) {
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
      else status = route(req, res, Buffer.concat(chunks), listener);
      // Method and path only: never a header (they carry credentials).
      console.error(`fake-databricks: ${listener} ${req.method} ${req.url.split('?')[0]} -> ${status}`);
    });
    req.on('error', () => res.destroy());
  };
}

// --- DNS (RFC 1035, as much as HAProxy's resolver needs) -------------------------------------
const DNS_TYPE_A = 1;
const DNS_CLASS_IN = 1;
const RCODE_FORMERR = 1;
const RCODE_NXDOMAIN = 3;
const RCODE_NOTIMP = 4;

function dnsName(name) {
  return name.endsWith(`.${DATA_PLANE_DOMAIN}`) && name.length > DATA_PLANE_DOMAIN.length + 1;
}

// The reply to one datagram, or null for something that is not a query. One question per
// query; ID, opcode and RD copied; the question echoed; an EDNS0 OPT record (HAProxy sends
// one) is accepted and not echoed.
function dnsAnswer(q) {
  if (q.length < 12 || (q[2] & 0x80) !== 0) return null;
  const opcode = (q[2] >> 3) & 0x0f;
  const rd = q[2] & 0x01;
  const header = (rcode, qd, an) =>
    Buffer.from([q[0], q[1], 0x80 | (opcode << 3) | rd, 0x80 | rcode, 0, qd, 0, an, 0, 0, 0, 0]);
  if (opcode !== 0) return { reply: header(RCODE_NOTIMP, 0, 0) };
  if (q.readUInt16BE(4) !== 1) return { reply: header(RCODE_FORMERR, 0, 0) };
  let i = 12;
  const labels = [];
  for (;;) {
    if (i >= q.length) return null;
    const len = q[i];
    if (len === 0) {
      i += 1;
      break;
    }
    if (len > 63 || i + 1 + len > q.length) return { reply: header(RCODE_FORMERR, 0, 0) };
    labels.push(q.subarray(i + 1, i + 1 + len).toString('latin1').toLowerCase());
    i += 1 + len;
  }
  if (i + 4 > q.length) return null;
  const qtype = q.readUInt16BE(i);
  const qclass = q.readUInt16BE(i + 2);
  const name = labels.join('.');
  const question = q.subarray(12, i + 4);
  const ours = dnsName(name);
  const a = ours && qtype === DNS_TYPE_A && qclass === DNS_CLASS_IN;
  // Ours but another type (AAAA): NOERROR without an answer (NODATA), not NXDOMAIN.
  const parts = [ours ? header(0, 1, a ? 1 : 0) : header(RCODE_NXDOMAIN, 1, 0), question];
  if (a) {
    const rr = Buffer.alloc(16);
    rr.writeUInt16BE(0xc00c, 0); // the question's name
    rr.writeUInt16BE(DNS_TYPE_A, 2);
    rr.writeUInt16BE(DNS_CLASS_IN, 4);
    rr.writeUInt32BE(DNS_TTL_SECONDS, 6);
    rr.writeUInt16BE(4, 10);
    Buffer.from([127, 0, 0, 1]).copy(rr, 12);
    parts.push(rr);
  }
  const result = a ? '127.0.0.1' : ours ? 'NODATA' : 'NXDOMAIN';
  return { reply: Buffer.concat(parts), log: `dns ${qtype === DNS_TYPE_A ? 'A' : `type ${qtype}`} ${name} -> ${result}` };
}

function listen(server, p) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(p, '127.0.0.1', () => resolve(server.address().port));
  });
}

function listenDns(p) {
  return new Promise((resolve, reject) => {
    const sock = dgram.createSocket('udp4');
    sock.once('error', reject);
    sock.on('message', (msg, peer) => {
      const a = dnsAnswer(msg);
      if (!a) return;
      sock.send(a.reply, peer.port, peer.address);
      if (a.log) console.error(`fake-databricks: ${a.log}`);
    });
    sock.bind(p, '127.0.0.1', () => {
      sock.removeAllListeners('error');
      sock.on('error', (e) => console.error(`fake-databricks: dns: ${e.message}`));
      resolve(sock.address().port);
    });
  });
}

try {
  const ready = {};
  const tls = await listen(https.createServer({ cert, key }, handler('https', workspace)), tlsPort);
  const plain = await listen(http.createServer(handler('http', workspace)), httpPort);
  ready.workspace = `https://127.0.0.1:${tls}`;
  ready.token_url = `http://127.0.0.1:${plain}${TOKEN_PATH}`;
  if (dataPlanePort !== undefined) {
    const server = https.createServer({ cert: dataPlaneCert, key: dataPlaneKey }, handler('data-plane', dataPlane));
    dataPlaneActualPort = await listen(server, dataPlanePort);
    ready.data_plane = `https://127.0.0.1:${dataPlaneActualPort}`;
  }
  if (dnsPort !== undefined) ready.dns = `udp://127.0.0.1:${await listenDns(dnsPort)}`;
  ready.workspace_id = WORKSPACE_ID;
  ready.endpoints = Object.fromEntries(Object.keys(ENDPOINTS).map((n) => [n, endpointUrl(n) ?? null]));
  process.stdout.write(`${JSON.stringify(ready)}\n`);
} catch (e) {
  console.error(`fake-databricks: cannot listen: ${e.message}`);
  process.exit(1);
}

process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
