//! The adversarial suite: the shipped HAProxy configuration and the real `idgate` binary,
//! attacked as an attacker would, on HAProxy 2.6, 3.0, 3.2 and 3.4. The upstream records the exact
//! bytes it receives and answers `101` to upgrades like an h2c-capable server
//! (tests/support/raw_upstream.rs), so a tunnel, a smuggled field or a request that should
//! never have been forwarded shows up in the record.
//!
//! Every probe carries a unique marker (in its query string, header values or path); the
//! central assertion is that the marker of a refused probe never reaches the upstream. The
//! classes, each with the variants next to the reported ones:
//! - tunnels: `Upgrade` (h2c in every spelling, WebSocket) and CONNECT, with and without a
//!   token, followed by a pipelined request that must not travel through a tunnel;
//! - routing vs decision: encoded spellings of the serving path must be refused or routed to
//!   the serving backend (per-identity rate limit, 300 s timeout), never elsewhere;
//! - header smuggling: trailers (HTTP/1 chunked and HTTP/2), `Connection:` naming identity
//!   headers, raw non-ASCII bytes in the target (HTTP/1 and HTTP/2), ambiguous Host;
//! - headers an upstream might honour: method/URL overrides, forwarding headers, every other
//!   identity spelling;
//! - path folding: Unicode look-alikes, encoded `?`/`#`/whitespace, trailing dots;
//! - identity encoding: control and bidi characters, over-long values, groups that cannot be
//!   passed on, Entra ID group overage;
//! - credentials: tokens in the query string (refused, never logged), the token cookie removed
//!   before forwarding.

mod support;

#[path = "support/h2_raw.rs"]
mod h2_raw;
#[path = "support/raw_upstream.rs"]
mod raw_upstream;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{json, Value};
use support::auth_kit::{claims, MockIdp, Signer};
use support::haproxy::HaproxyVersion;
use support::stack::Stack;

use h2_raw::H2Outcome;
use raw_upstream::RawUpstream;

const PAT: &str = "dapi-adversarial-static-token";
const SERVING: &str = "/serving-endpoints/churn/invocations";
const CLUSTERS: &str = "/api/2.0/clusters/list";
const COOKIE: &str = "access_token";
const RATE_LIMIT: u32 = 5;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn agent_config(mock: &MockIdp, pat_file: &std::path::Path) -> String {
    format!(
        r#"
[log]
level = "info"

[auth]
cookie = "{COOKIE}"

[[issuer]]
name = "fixture"
issuer = "{iss}"
jwks_uri = "{jwks}"
audiences = ["api"]

[upstream.pat]
kind = "static"
token_file = "{pat}"

[[rule]]
name = "deny-credentials-apis"
paths = ["/api/*/token/**", "/api/*/token-management/**", "/api/*/secrets/**"]
effect = "deny"

[[rule]]
name = "health"
public = true
methods = ["GET", "HEAD"]
paths = ["/healthz"]

[[rule]]
name = "deny-contractors"
groups = ["contractors"]
paths = ["/**"]
effect = "deny"

[[rule]]
name = "serving-invoke"
methods = ["POST"]
paths = ["/serving-endpoints/*/invocations"]
groups = ["ml-engineers"]
upstream = "pat"

[[rule]]
name = "workspace"
methods = ["GET", "POST"]
paths = ["/api/2.*/**"]
groups = ["ml-engineers"]
upstream = "pat"
"#,
        iss = mock.base,
        jwks = mock.jwks_uri(),
        pat = pat_file.display(),
    )
}

/// The stack under attack.
struct Target {
    /// idgate + HAProxy, whose Databricks upstream is `up` (the stack's echo server sees
    /// nothing). Dropped first: HAProxy, then the agent, then `up`.
    stack: Stack,
    up: RawUpstream,
    signer: Signer,
    iss: String,
}

impl Target {
    fn front(&self) -> SocketAddr {
        self.stack.hap.params.frontend
    }

    fn logs(&self) -> String {
        self.stack.logs()
    }

    /// A valid token for `sub` in ml-engineers, with `extra` claims merged in (null removes).
    fn token(&self, sub: &str, extra: Value) -> String {
        let mut c = claims(&self.iss);
        c["sub"] = json!(sub);
        if let (Some(obj), Value::Object(more)) = (c.as_object_mut(), extra) {
            for (k, v) in more {
                if v.is_null() {
                    obj.remove(&k);
                } else {
                    obj.insert(k, v);
                }
            }
        }
        self.signer.token(&c)
    }

    /// Asserts that nothing carrying `marker` ever reached the upstream.
    fn never_forwarded(&self, marker: &str, what: &str) {
        let seen = self.up.text();
        assert!(
            !seen.contains(marker),
            "{what}: reached the upstream ({marker}):\n{seen}\n{}",
            self.logs()
        );
    }

    /// Asserts that `marker` reached the upstream.
    fn forwarded(&self, marker: &str, what: &str) {
        let ok = support::poll_until(IO_TIMEOUT, || self.up.text().contains(marker).then_some(()));
        assert!(
            ok.is_some(),
            "{what}: never reached the upstream ({marker})\n{}",
            self.logs()
        );
    }

    /// The upstream's record of the request carrying `marker` (head only).
    fn upstream_head(&self, marker: &str) -> String {
        self.forwarded(marker, "expected request");
        let text = self.up.text();
        let start = text[..text.find(marker).expect("marker")]
            .rfind("\r\n\r\n")
            .map_or(0, |i| i + 4);
        let end = text[start..]
            .find("\r\n\r\n")
            .map_or(text.len(), |i| start + i);
        text[start..end].to_string()
    }
}

/// Sends raw bytes on a new connection, returns the first response's status (None when the
/// connection closed without one) and the stream, to go on with.
fn send_raw(addr: SocketAddr, bytes: &[u8]) -> (Option<u16>, TcpStream) {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connecting to HAProxy");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.write_all(bytes).expect("writing the request");
    let status = read_status(&mut s);
    (status, s)
}

/// Reads one response head and its Content-Length body; the status code.
fn read_status(s: &mut TcpStream) -> Option<u16> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    let _ = s.read_exact(&mut body);
    head.split(' ').nth(1)?.parse().ok()
}

fn get(target: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut r = format!("GET {target} HTTP/1.1\r\nHost: gateway.idgate.test\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

// ----- tunnels -----

fn tunnels(t: &Target) {
    let tok = t.token("tunnel-user", json!({}));
    let upgrades: [(&str, &str); 9] = [
        ("Upgrade, HTTP2-Settings", "h2c"),
        ("Upgrade, HTTP2-Settings", "H2C"),
        ("Upgrade, HTTP2-Settings", "h2c, foo"),
        ("Upgrade, HTTP2-Settings", "h2c "),
        ("Upgrade, HTTP2-Settings", "h2c\t"),
        ("upgrade", "websocket"),
        ("keep-alive, Upgrade", "WebSocket"),
        ("Upgrade", "HTTP/2.0"),
        ("foo", "h2c"),
    ];
    for (i, (conn, upgrade)) in upgrades.iter().enumerate() {
        for (path, auth) in [("/healthz", None), (CLUSTERS, Some(bearer(&tok)))] {
            let marker = format!("tunnel-{i}-{}", path.len());
            let mut h: Vec<(&str, &str)> = vec![
                ("Connection", conn),
                ("Upgrade", upgrade),
                ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                ("Sec-WebSocket-Version", "13"),
            ];
            if let Some(a) = &auth {
                h.push(("Authorization", a));
            }
            let (status, mut s) = send_raw(t.front(), &get(&format!("{path}?first"), &h));
            assert_ne!(
                status,
                Some(101),
                "upgrade {upgrade:?} switched protocols\n{}",
                t.logs()
            );
            // Whatever the first answer was, a request sent next on this connection must be
            // judged on its own: no token, a denied API.
            let _ = s.write_all(&get(&format!("/api/2.0/secrets/list?{marker}"), &[]));
            let _ = read_status(&mut s);
            t.never_forwarded(&marker, &format!("after Upgrade {upgrade:?} on {path}"));
        }
    }
    for (i, req) in [
        b"CONNECT workspace.idgate.test:443 HTTP/1.1\r\nHost: workspace.idgate.test:443\r\n\r\n"
            .to_vec(),
        b"CONNECT /healthz HTTP/1.1\r\nHost: gateway.idgate.test\r\n\r\n".to_vec(),
    ]
    .iter()
    .enumerate()
    {
        let (status, mut s) = send_raw(t.front(), req);
        assert_ne!(status, Some(200), "CONNECT {i} accepted\n{}", t.logs());
        let marker = format!("connect-tunnel-{i}");
        let _ = s.write_all(&get(&format!("/api/2.0/secrets/list?{marker}"), &[]));
        let _ = read_status(&mut s);
        t.never_forwarded(&marker, "after CONNECT");
        t.never_forwarded("CONNECT ", "CONNECT request line");
    }
}

// ----- routing vs decision -----

fn routing(t: &Target) {
    let tok = t.token("routing-user", json!({}));
    let auth = bearer(&tok);
    let spellings = [
        "/%73erving-endpoints/churn/invocations",
        "/serving%2Dendpoints/churn/invocations",
        "/serving-endpoint%73/churn/invocations",
        "/serving-endpoints/%63hurn/invocations",
        "/serving-endpoints/churn/invocation%73",
        "/serving-endpoints/churn/%69nvocations",
        "/%53erving-endpoints/churn/invocations",
        "/Serving-Endpoints/churn/invocations",
        "/serving-endpoints/churn/invocations/",
        "/serving-endpoints/churn/invocations?x=1",
    ];
    for (i, p) in spellings.iter().enumerate() {
        let marker = format!("route-marker-{i}");
        let sep = if p.contains('?') { '&' } else { '?' };
        let req = format!(
            "POST {p}{sep}{marker} HTTP/1.1\r\nHost: gateway.idgate.test\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        let (status, _) = send_raw(t.front(), req.as_bytes());
        if status == Some(200) {
            // Allowed: HAProxy must have routed it where idgate's serving rule sends it.
            // The access log has the path without the query string.
            let logged = format!("POST \"{}\"", p.split('?').next().unwrap_or(p));
            let line = support::poll_until(IO_TIMEOUT, || {
                t.stack
                    .hap
                    .log()
                    .lines()
                    .rfind(|l| l.contains(&logged))
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("no access log line for {p}\n{}", t.logs()));
            assert!(
                line.contains("databricks_serving/"),
                "{p} was allowed by the serving rule but routed elsewhere: {line}"
            );
        } else {
            t.never_forwarded(&marker, &format!("refused spelling {p}"));
        }
    }
    // The per-identity limit holds for the path idgate judged.
    let limited = t.token("rate-limited-user", json!({}));
    let mut statuses = Vec::new();
    for i in 0..RATE_LIMIT + 3 {
        let req = format!(
            "POST {SERVING}?rl-{i} HTTP/1.1\r\nHost: gateway.idgate.test\r\nAuthorization: Bearer {limited}\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        statuses.push(send_raw(t.front(), req.as_bytes()).0);
    }
    assert!(
        statuses.contains(&Some(429)),
        "the per-identity rate limit never answered 429: {statuses:?}\n{}",
        t.logs()
    );
}

// ----- header smuggling -----

fn smuggling(t: &Target) {
    let tok = t.token("smuggle-user", json!({}));
    let auth = bearer(&tok);
    // HTTP/1 chunked trailers.
    let req = format!(
        "POST {SERVING}?chunked-trailers HTTP/1.1\r\nHost: gateway.idgate.test\r\nAuthorization: {auth}\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\nX-Forwarded-User: forged-trailer\r\nAuthorization: Bearer forged-trailer\r\nX_Forwarded_Groups: forged-trailer\r\n\r\n"
    );
    let (status, _) = send_raw(t.front(), req.as_bytes());
    if t.stack.version.runs_haproxy_cfg() {
        assert_eq!(status, Some(411), "chunked, haproxy.cfg\n{}", t.logs());
    } else {
        assert_eq!(status, Some(200), "chunked, haproxy-3.x.cfg\n{}", t.logs());
    }
    t.never_forwarded("forged-trailer", "HTTP/1 trailers");

    // HTTP/2 trailers and raw bytes in :path.
    let base = |path: &'static [u8]| -> Vec<(&'static [u8], Vec<u8>)> {
        vec![
            (b":method", b"POST".to_vec()),
            (b":scheme", b"http".to_vec()),
            (b":authority", b"gateway.idgate.test".to_vec()),
            (b":path", path.to_vec()),
            (b"authorization", auth.clone().into_bytes()),
        ]
    };
    let h2 = |fields: &[(&'static [u8], Vec<u8>)],
              body: Option<&[u8]>,
              trailers: &[(&[u8], &[u8])]| {
        let refs: Vec<(&[u8], &[u8])> = fields.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        h2_raw::request(t.front(), &refs, body, trailers).expect("h2 exchange")
    };
    let trailers: [(&[u8], &[u8]); 2] = [
        (b"x-forwarded-user", b"forged-h2-trailer"),
        (b"authorization", b"Bearer forged-h2-trailer"),
    ];
    let out = h2(
        &base(b"/serving-endpoints/churn/invocations?h2-trailers"),
        Some(b"{}"),
        &trailers,
    );
    let mut with_len = base(b"/serving-endpoints/churn/invocations?h2-trailers-cl");
    with_len.push((b"content-length", b"2".to_vec()));
    let out_cl = h2(&with_len, Some(b"{}"), &trailers);
    let raw_path = h2(
        &base("/api/2.0/clusters/list\u{212a}?h2-raw-path".as_bytes()),
        None,
        &[],
    );
    let raw_query = h2(
        &base("/api/2.0/clusters/list?h2-raw-query=\u{212a}".as_bytes()),
        None,
        &[],
    );
    if t.stack.version.runs_haproxy_cfg() {
        // HTTP/2 is off on haproxy.cfg's frontend (2.6 and 3.0 cannot drop request trailers).
        for o in [&out, &out_cl, &raw_path, &raw_query] {
            assert!(
                matches!(o, H2Outcome::Refused(_)),
                "h2 with haproxy.cfg: {o:?}\n{}",
                t.logs()
            );
        }
    } else {
        assert_eq!(out, H2Outcome::Status(200), "h2 trailers\n{}", t.logs());
        assert_eq!(
            out_cl,
            H2Outcome::Status(200),
            "h2 trailers + cl\n{}",
            t.logs()
        );
        t.forwarded(
            "h2-trailers-cl",
            "h2 request with trailers (body forwarded)",
        );
        for o in [&raw_path, &raw_query] {
            assert_eq!(o, &H2Outcome::Status(400), "raw :path bytes\n{}", t.logs());
        }
    }
    t.never_forwarded("forged-h2-trailer", "HTTP/2 trailers");
    t.never_forwarded("h2-raw-path", "non-ASCII :path");
    t.never_forwarded("h2-raw-query", "non-ASCII :path query");

    // Raw non-ASCII bytes in an HTTP/1 request line.
    for (i, target) in [
        b"/api/2.0/clusters/list\xe2\x84\xaa?h1-raw-0".to_vec(),
        b"/api/2.0/clusters/list?h1-raw-1=\xe2\x84\xaa".to_vec(),
        b"/api/2.0/clusters/list?h1-raw-2=\x7f".to_vec(),
    ]
    .iter()
    .enumerate()
    {
        let mut req = b"GET ".to_vec();
        req.extend_from_slice(target);
        req.extend_from_slice(
            format!(" HTTP/1.1\r\nHost: gateway.idgate.test\r\nAuthorization: {auth}\r\n\r\n")
                .as_bytes(),
        );
        let (status, _) = send_raw(t.front(), &req);
        assert_ne!(status, Some(200), "raw bytes {i}\n{}", t.logs());
        t.never_forwarded(&format!("h1-raw-{i}"), "raw non-ASCII request target");
    }

    // Connection naming the identity headers and the credential: HAProxy's own Connection
    // header only.
    let marker = "connection-hop";
    let (status, _) = send_raw(
        t.front(),
        &get(
            &format!("{CLUSTERS}?{marker}"),
            &[
                ("Authorization", &auth),
                (
                    "Connection",
                    "X-Forwarded-User, X-Forwarded-Email, Authorization, keep-alive",
                ),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Connection", "X-Forwarded-User"),
            ],
        ),
    );
    assert_eq!(status, Some(200), "allowed request\n{}", t.logs());
    let head = t.upstream_head(marker).to_ascii_lowercase();
    for line in head.lines() {
        if let Some(v) = line
            .strip_prefix("connection:")
            .or(line.strip_prefix("proxy-connection:"))
        {
            assert!(
                !v.contains("x-forwarded") && !v.contains("authorization"),
                "client Connection reached the upstream: {head}"
            );
        }
    }
    assert!(head.contains("x-forwarded-user: smuggle-user"), "{head}");
    assert!(
        head.contains(&format!(
            "authorization: bearer {}",
            PAT.to_ascii_lowercase()
        )),
        "{head}"
    );

    // Ambiguous or malformed Host: refused before the agent is asked.
    for (i, host) in [
        "a.example, b.example",
        "a.example,b.example",
        "a.example b.example",
        "user@a.example",
        "a.example:80:80",
        "a.example/x",
        "",
    ]
    .iter()
    .enumerate()
    {
        let marker = format!("bad-host-{i}");
        let req = format!(
            "GET {CLUSTERS}?{marker} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\n\r\n"
        );
        let (status, _) = send_raw(t.front(), req.as_bytes());
        assert_ne!(status, Some(200), "Host {host:?}\n{}", t.logs());
        t.never_forwarded(&marker, &format!("Host {host:?}"));
    }
    // Absolute-form target naming another authority than Host.
    let req = format!(
        "GET http://evil.example{CLUSTERS}?absolute-form HTTP/1.1\r\nHost: gateway.idgate.test\r\nAuthorization: {auth}\r\n\r\n"
    );
    let _ = send_raw(t.front(), req.as_bytes());
    t.never_forwarded("evil.example", "absolute-form authority");
}

// ----- headers an upstream might honour -----

fn honoured_headers(t: &Target) {
    let tok = t.token("headers-user", json!({}));
    let auth = bearer(&tok);
    let forged = [
        "X-HTTP-Method-Override",
        "X-HTTP-Method",
        "X-Method-Override",
        "X-Original-URL",
        "X-Rewrite-URL",
        "X-Original-URI",
        "X-Forwarded-For",
        "Forwarded",
        "X-Real-IP",
        "X-Forwarded-Host",
        "X-Forwarded-Proto",
        "X-Forwarded-Port",
        "X-Forwarded-Prefix",
        "True-Client-IP",
        "X-Client-IP",
        "X-Cluster-Client-IP",
        "CF-Connecting-IP",
        "Remote-User",
        "X-Remote-User",
        "X-Auth-Request-User",
        "X-Auth-Request-Email",
        "X-Auth-Request-Groups",
        "X-Auth-Request-Access-Token",
        "X-User",
        "X-Email",
        "X-Forwarded-Login",
        "X-Forwarded-Access-Token",
        "X-Authenticated-User",
        "X-MS-CLIENT-PRINCIPAL-NAME",
        "X-Goog-Authenticated-User-Email",
        "X-Amzn-Oidc-Identity",
        "Cf-Access-Authenticated-User-Email",
        "X-Idgate-Anything",
        "X_Remote_User",
        "X.Forwarded.User",
        "X-Forwarded-User",
        "X_Forwarded_User",
        "x-forwarded_email",
    ];
    let values: Vec<(String, String)> = forged
        .iter()
        .enumerate()
        .map(|(i, h)| (h.to_string(), format!("forged-honoured-{i}")))
        .collect();
    let mut headers: Vec<(&str, &str)> = values
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    headers.push(("Authorization", &auth));
    let marker = "honoured-headers";
    let (status, _) = send_raw(t.front(), &get(&format!("{CLUSTERS}?{marker}"), &headers));
    assert_eq!(status, Some(200), "allowed request\n{}", t.logs());
    let head = t.upstream_head(marker);
    assert!(
        !head.contains("forged-honoured"),
        "client header reached the upstream:\n{head}"
    );
    let lower = head.to_ascii_lowercase();
    assert_eq!(lower.matches("x-forwarded-for:").count(), 1, "{head}");
    assert!(lower.contains("x-forwarded-for: 127.0.0.1"), "{head}");
    assert!(lower.contains("x-forwarded-proto: http"), "{head}");
    assert_eq!(lower.matches("x-forwarded-user:").count(), 1, "{head}");
}

// ----- path folding -----

fn path_folding(t: &Target) {
    let tok = t.token("folding-user", json!({}));
    let auth = bearer(&tok);
    let paths = [
        "/api/2.0/to%E2%84%AAen/create",
        "/api/2.0/%E2%84%AAoken/create",
        "/api/2.0/%C5%BFecrets/list",
        "/api/2.0/%EF%BD%93ecrets/list",
        "/api/2%EF%BC%8E0/secrets/list",
        "/api/2.0/secrets%EF%BC%8Flist",
        "/api/2.0/secrets%3F/list",
        "/api/2.0/secrets%3f",
        "/api/2.0/secrets%23/list",
        "/api/2.0/secrets%20/list",
        "/api/2.0/secrets%09/list",
        "/api/2.0/secrets%00/list",
        "/api/2.0/secrets./list",
        "/api/2.0/secrets%2e/list",
        "/api/2.0/secrets%2E%2E/list",
        "/api/2.0/%73ecrets/list",
        "/api/2.0/secret%73/list",
        "/api/2.0/secrets%5Clist",
        "/api/2.0/secrets;x/list",
        "/api/2.0//secrets/list",
        "/api/2.0/SECRETS/list",
        "/api/2.0/Secrets/List",
        "/api/2.0/token",
        "/api/2.0/token/",
        "/api/2.0/%2574oken/create",
        "/api/2.0/secrets%C0%AFlist",
        "/api/2.0/%u0073ecrets/list",
        "/api/2.0/secrets%E2%80%8B/list",
    ];
    for (i, p) in paths.iter().enumerate() {
        let marker = format!("folding-{i}");
        let (status, _) = send_raw(
            t.front(),
            &get(&format!("{p}?{marker}"), &[("Authorization", &auth)]),
        );
        assert!(
            matches!(status, Some(400) | Some(403)),
            "{p}: {status:?}\n{}",
            t.logs()
        );
        t.never_forwarded(&marker, &format!("path {p}"));
    }
    // A plain path next to them is forwarded (the probes above are refused for their path).
    let (status, _) = send_raw(
        t.front(),
        &get(
            &format!("{CLUSTERS}?folding-control"),
            &[("Authorization", &auth)],
        ),
    );
    assert_eq!(status, Some(200), "{}", t.logs());
    t.forwarded("folding-control", "plain path");
}

// ----- identity encoding -----

fn identity_encoding(t: &Target) {
    let long = "a".repeat(1025);
    let cases: Vec<(&str, Value)> = vec![
        ("sub with U+0001", json!({"sub": "alice\u{1}"})),
        ("sub with DEL", json!({"sub": "alice\u{7f}"})),
        ("sub with NEL", json!({"sub": "alice\u{85}"})),
        ("sub with RLO", json!({"sub": "\u{202e}ecila"})),
        ("sub with LRI", json!({"sub": "alice\u{2066}"})),
        ("sub with ZWSP", json!({"sub": "ali\u{200b}ce"})),
        ("sub with LS", json!({"sub": "alice\u{2028}x"})),
        ("sub too long", json!({"sub": long})),
        (
            "email with CRLF",
            json!({"email": "a@example.com\r\nX-Forwarded-User: root"}),
        ),
        ("email with RLO", json!({"email": "\u{202e}moc.elpmaxe@a"})),
        (
            "group with comma",
            json!({"groups": ["ml-engineers", "admins,ml"]}),
        ),
        ("empty group", json!({"groups": ["ml-engineers", ""]})),
        (
            "group with FSI",
            json!({"groups": ["ml-engineers", "x\u{2068}"]}),
        ),
        (
            "Entra ID group overage",
            json!({"groups": null, "_claim_names": {"groups": "src1"},
                   "_claim_sources": {"src1": {"endpoint": "https://graph.microsoft.com/v1.0/users/00000000-0000-0000-0000-000000000000/getMemberObjects"}}}),
        ),
        ("hasgroups", json!({"groups": null, "hasgroups": true})),
    ];
    for (i, (what, extra)) in cases.into_iter().enumerate() {
        let tok = t.token(&format!("ident-{i}"), extra);
        let marker = format!("identity-{i}");
        let (status, _) = send_raw(
            t.front(),
            &get(
                &format!("{CLUSTERS}?{marker}"),
                &[("Authorization", &bearer(&tok))],
            ),
        );
        assert_eq!(status, Some(401), "{what}\n{}", t.logs());
        t.never_forwarded(&marker, what);
    }
    // 200 Entra-style GUID groups fit; the user is passed on with all of them.
    let guids: Vec<String> = (0..200)
        .map(|i| format!("{i:08x}-0000-4000-8000-000000000000"))
        .chain(std::iter::once("ml-engineers".to_string()))
        .collect();
    let tok = t.token("many-groups", json!({"groups": guids}));
    let (status, _) = send_raw(
        t.front(),
        &get(
            &format!("{CLUSTERS}?identity-guids"),
            &[("Authorization", &bearer(&tok))],
        ),
    );
    assert_eq!(status, Some(200), "200 GUID groups\n{}", t.logs());
    let head = t.upstream_head("identity-guids");
    assert!(head.contains("x-forwarded-user: many-groups"), "{head}");
    assert!(
        head.contains("000000c7-0000-4000-8000-000000000000"),
        "last group missing: {head}"
    );
}

// ----- credentials in logs and upstream -----

fn credentials(t: &Target) {
    let tok = t.token("cookie-user", json!({}));
    for (i, p) in ["access_token", "id_token"].iter().enumerate() {
        let secret = format!("query-secret-{i}");
        let (status, _) = send_raw(t.front(), &get(&format!("{CLUSTERS}?{p}={secret}"), &[]));
        assert_eq!(status, Some(400), "{p} in query\n{}", t.logs());
        t.never_forwarded(&secret, "token in query string");
    }
    // No query string in HAProxy's access log at all (other parameter names exist).
    let (status, _) = send_raw(
        t.front(),
        &get(
            &format!("{CLUSTERS}?sig=query-not-logged"),
            &[("Authorization", &bearer(&tok))],
        ),
    );
    assert_eq!(status, Some(200), "{}", t.logs());
    t.forwarded("query-not-logged", "query string");
    let log = t.stack.hap.log();
    assert!(
        !log.contains("query-not-logged"),
        "query string in the access log:\n{log}"
    );
    assert!(
        !log.contains("query-secret"),
        "token in the access log:\n{log}"
    );
    assert!(!log.contains(&tok), "caller token in the access log");

    // The token cookie is removed, the other cookies are kept.
    for (i, (cookie, want)) in [
        (format!("{COOKIE}={tok}"), None),
        (format!("{COOKIE}={tok}; theme=dark"), Some("theme=dark")),
        (format!("lang=en; {COOKIE}={tok}"), Some("lang=en")),
        (
            format!("lang=en; {COOKIE}={tok}; theme=dark"),
            Some("lang=en; theme=dark"),
        ),
        (
            format!("lang=en;{COOKIE}={tok};theme=dark"),
            Some("lang=en;theme=dark"),
        ),
    ]
    .iter()
    .enumerate()
    {
        let marker = format!("cookie-{i}");
        let (status, _) = send_raw(
            t.front(),
            &get(&format!("{CLUSTERS}?{marker}"), &[("Cookie", cookie)]),
        );
        assert_eq!(status, Some(200), "{cookie}\n{}", t.logs());
        let head = t.upstream_head(&marker);
        assert!(
            !head.contains(&tok),
            "the token cookie reached the upstream: {head}"
        );
        let cookies: Vec<&str> = head
            .lines()
            .filter_map(|l| l.strip_prefix("cookie: ").or(l.strip_prefix("Cookie: ")))
            .collect();
        match want {
            None => assert!(cookies.is_empty(), "{head}"),
            Some(w) => assert_eq!(cookies, vec![*w], "{head}"),
        }
    }
    let (status, _) = send_raw(
        t.front(),
        &get(
            &format!("{CLUSTERS}?cookie-dup"),
            &[("Cookie", &format!("{COOKIE}={tok}; {COOKIE}=other"))],
        ),
    );
    assert_eq!(status, Some(400), "two token cookies\n{}", t.logs());
    t.never_forwarded("cookie-dup", "two token cookies");
}

// ----- HAProxy's own errors -----

/// With the upstream gone, HAProxy's own 503 is a Databricks-shaped JSON error with
/// Retry-After and the request ID where the SDKs read it (not HAProxy's HTML page).
fn upstream_down(mut t: Target) {
    let tok = t.token("down-user", json!({}));
    let addr = t.up.addr;
    drop(std::mem::replace(&mut t.up, RawUpstream::start()));
    assert!(
        TcpStream::connect_timeout(&addr, IO_TIMEOUT).is_err(),
        "upstream still up"
    );
    let mut s = TcpStream::connect_timeout(&t.front(), IO_TIMEOUT).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(&get(
        CLUSTERS,
        &[("Authorization", &bearer(&tok)), ("Connection", "close")],
    ))
    .expect("write");
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 503"), "{raw}\n{}", t.logs());
    assert!(head.contains("content-type: application/json"), "{raw}");
    assert!(head.contains("retry-after: 1"), "{raw}");
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["error_code"], "TEMPORARILY_UNAVAILABLE", "{body}");
    assert_eq!(
        v["details"][0]["@type"], "type.googleapis.com/google.rpc.RequestInfo",
        "{body}"
    );
    assert!(
        !v["details"][0]["request_id"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "{body}"
    );
}

fn adversarial(version: HaproxyVersion) {
    if version.require().is_none() {
        return;
    }
    let rt = support::background_runtime();
    let signer = Signer::rsa("adv-k1");
    let mock = rt.block_on(MockIdp::start(&[&signer]));
    let dir = tempfile::tempdir().expect("temp dir");
    let pat_file = dir.path().join("pat.secret");
    support::write_secret(&pat_file, PAT);
    let up = RawUpstream::start();
    let limit = RATE_LIMIT.to_string();
    let Some(stack) = Stack::start_with(
        version,
        &agent_config(&mock, &pat_file),
        Some(up.upstream()),
        &[
            ("IDGATE_TOKEN_COOKIE", COOKIE),
            ("IDGATE_SERVING_RATE_LIMIT", &limit),
        ],
    ) else {
        return;
    };
    let t = Target {
        stack,
        up,
        signer,
        iss: mock.base.clone(),
    };
    tunnels(&t);
    routing(&t);
    smuggling(&t);
    honoured_headers(&t);
    credentials(&t);
    path_folding(&t);
    identity_encoding(&t);
    upstream_down(t);
}

haproxy_tests!(full: [], compat: [adversarial]);
