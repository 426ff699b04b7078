//! The IdP failing after the agent loaded its keys, with requests going through HAProxy 2.6
//! and 3.4: down (HTTP 503), slow (longer than the issuer's `http_timeout`), garbage, an empty
//! key set, and finally gone (connection refused). Each fault is made visible by a token with
//! an unknown `kid`, which makes the agent refetch: the refetch fails and is counted
//! (`idgate_jwks_refresh_total{result="failure"}`), that token is refused, and fresh tokens
//! signed with the loaded key keep being accepted (validated with the cached keys, not
//! answered from the token cache). A key rotation at the IdP is picked up on the next
//! unknown `kid`. Nothing is forwarded without a verdict.

mod support;

use std::time::Duration;

use serde_json::json;
use support::auth_kit::{claims, Reply, Signer};
use support::haproxy::HaproxyVersion;
use support::stack::IdpStack;
use support::traffic::{assert_only_allowed_forwarded, Outcome};
use support::{poll_until, tcp_accepts, READY_TIMEOUT};

const ISSUER_EXTRA: &str = "http_timeout = \"500ms\"\nunknown_kid_refetch_interval = \"100ms\"";
const PATH: &str = "/api/2.0/clusters/list";

fn failures(s: &IdpStack) -> f64 {
    s.agent
        .metric(
            "idgate_jwks_refresh_total",
            &[("issuer", "corp"), ("result", "failure")],
        )
        .unwrap_or(0.0)
}

fn idp_faults_keep_cached_keys_working(version: HaproxyVersion) {
    let Some(s) = IdpStack::start(version, false, ISSUER_EXTRA, "") else {
        return;
    };
    let rotated = Signer::ec2("k2");
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut id = 0u64;
    let mut attempt = |token: Option<&str>, good: bool| {
        id += 1;
        let (o, body) = s.request(id, "GET", PATH, token, good);
        let status = o.status;
        outcomes.push(o);
        (status, body)
    };
    macro_rules! send {
        ($token:expr, $good:expr, $want:expr, $what:expr) => {{
            let (status, body) = attempt($token, $good);
            assert_eq!(status, Some($want), "{}: {body}\n{}", $what, s.logs());
            body
        }};
    }
    send!(Some(&s.fresh_token()), true, 200, "before any fault");

    type Fault<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let faults: Vec<Fault> = vec![
        (
            "down (503)",
            Box::new(|| s.idp.set_reply(Reply::Status(503))),
        ),
        ("slow", Box::new(|| s.idp.set_delay(Duration::from_secs(3)))),
        (
            "garbage",
            Box::new(|| s.idp.set_reply(Reply::Body("<html>oops</html>"))),
        ),
        (
            "empty key set",
            Box::new(|| s.idp.set_reply(Reply::Keys(json!({"keys": []})))),
        ),
    ];
    for (what, inject) in &faults {
        inject();
        let before = failures(&s);
        // A token the loaded keys cannot verify: refused, and it makes the agent refetch.
        let unknown = rotated.token(&claims(&s.idp.base));
        let counted = poll_until(READY_TIMEOUT, || {
            send!(Some(&unknown), false, 401, what);
            (failures(&s) > before).then_some(())
        });
        assert!(
            counted.is_some(),
            "{what}: refetch failure not counted\n{}",
            s.logs()
        );
        // Fresh tokens with the known key: validated with the cached keys.
        for _ in 0..3 {
            send!(Some(&s.fresh_token()), true, 200, what);
        }
        assert!(s.agent.is_ready(), "{what}: the agent became unready");
        s.idp.set_delay(Duration::ZERO);
        s.idp.set_keys(&[&s.signer]);
    }

    // The IdP rotates: the new kid is fetched on first sight and accepted.
    s.idp.set_keys(&[&s.signer, &rotated]);
    let mut c = claims(&s.idp.base);
    c["jti"] = json!("after-rotation");
    // Unknown-kid refetches are rate limited per issuer (`unknown_kid_refetch_interval`), and
    // the last fault above just spent one: until the next is allowed the new kid is refused as
    // `unknown_key` (and nothing is forwarded), then it is fetched and accepted.
    let rotated_token = rotated.token(&c);
    let body = poll_until(READY_TIMEOUT, || {
        match attempt(Some(&rotated_token), true) {
            (Some(200), body) => Some(body),
            (Some(401), body) if body.contains("unknown_key") => None,
            (status, body) => panic!("rotated key: {status:?} {body}\n{}", s.logs()),
        }
    })
    .unwrap_or_else(|| panic!("rotated key never accepted\n{}", s.logs()));
    assert!(body.contains("clusters"), "{body}");

    // The IdP is gone altogether: connection refused. Same story.
    s.idp.stop();
    let host = s.idp.base.trim_start_matches("http://").parse().unwrap();
    assert!(
        poll_until(READY_TIMEOUT, || (!tcp_accepts(host)).then_some(())).is_some(),
        "the MockIdp still accepts"
    );
    let before = failures(&s);
    let stranger = Signer::ec("k-unpublished").token(&claims(&s.idp.base));
    let counted = poll_until(READY_TIMEOUT, || {
        send!(Some(&stranger), false, 401, "idp gone");
        (failures(&s) > before).then_some(())
    });
    assert!(
        counted.is_some(),
        "connection refused not counted\n{}",
        s.logs()
    );
    send!(Some(&s.fresh_token()), true, 200, "idp gone");

    let forwarded = assert_only_allowed_forwarded(&outcomes, &s.echo, version.label());
    eprintln!(
        "{}: {} requests, {forwarded} forwarded, {} JWKS fetch failures counted",
        version.label(),
        outcomes.len(),
        failures(&s)
    );
}

haproxy_tests!(full: [idp_faults_keep_cached_keys_working]);
