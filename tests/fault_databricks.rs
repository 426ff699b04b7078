//! The Databricks token endpoint failing while callers use a rule with a `client_credentials`
//! upstream, through HAProxy 2.6 and 3.4: answering 503, hanging past the upstream's budget,
//! and unreachable (connection refused) all give the caller a 503 naming
//! `upstream_unavailable` with `Retry-After`, well within HAProxy's SPOE processing timeout,
//! and nothing is forwarded. Once the endpoint recovers, requests go upstream with the
//! service principal's token instead of the caller's.

mod support;

use std::time::{Duration, Instant};

use support::databricks::{Fail, FakeDatabricks, CLIENT_ID, CLIENT_SECRET};
use support::haproxy::HaproxyVersion;
use support::stack::{agent_config, IdpStack};
use support::traffic::{assert_only_allowed_forwarded, Outcome};
use support::{free_port, poll_until, READY_TIMEOUT};

const PATH: &str = "/serving-endpoints/churn/invocations";
/// The upstream's own budget (below the SPOE `timeout processing 3s`, as the shipped
/// configuration advises): idgate answers 503 itself instead of being cut off by HAProxy.
const BUDGET: Duration = Duration::from_millis(1500);

fn extra(token_url: &str, secret: &std::path::Path) -> String {
    format!(
        "[[rule]]\nname = \"serving\"\nmethods = [\"POST\"]\npaths = [\"/serving-endpoints/*/invocations\"]\n\
         upstream = \"sp\"\n\n\
         [upstream.sp]\nkind = \"client_credentials\"\ntoken_url = \"{token_url}\"\n\
         client_id = \"{CLIENT_ID}\"\nclient_secret_file = \"{}\"\ntimeout = \"1s\"\n\
         total_budget = \"{}ms\"\n",
        secret.display(),
        BUDGET.as_millis()
    )
}

fn token_endpoint_failures_deny_with_503_and_forward_nothing(version: HaproxyVersion) {
    let rt = support::background_runtime();
    let fake = rt.block_on(FakeDatabricks::start());
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("sp.secret");
    std::fs::write(&secret, CLIENT_SECRET).unwrap();
    fake.fail_always(Some(Fail::Unavailable));
    let Some(s) = IdpStack::start(version, false, "", &extra(&fake.token_url, &secret)) else {
        return;
    };
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut id = 0u64;
    let mut deny = |what: &str| {
        id += 1;
        let started = Instant::now();
        let (o, body) = s.request(id, "POST", PATH, Some(&s.fresh_token()), false);
        let took = started.elapsed();
        assert_eq!(o.status, Some(503), "{what}: {body}\n{}", s.logs());
        assert!(
            body.contains("upstream_unavailable"),
            "{what}: the 503 is not idgate's: {body}"
        );
        assert!(took < Duration::from_secs(3), "{what}: took {took:?}");
        outcomes.push(o);
    };

    // 503 from the endpoint.
    deny("endpoint answers 503");
    assert!(fake.requests() >= 1);

    // Hanging past the budget: idgate gives up at its budget, HAProxy's 3 s never fire.
    fake.fail_always(Some(Fail::Hang(Duration::from_secs(10))));
    // Within the failure hold-off requests fail at once; past it one waits on the endpoint.
    let before = fake.requests();
    let tried = poll_until(READY_TIMEOUT, || {
        deny("endpoint hangs");
        (fake.requests() > before).then_some(())
    });
    assert!(tried.is_some(), "the hanging endpoint was never tried");

    // Unreachable: the agent reloaded with a token_url where nothing listens.
    let closed = format!("http://127.0.0.1:{}/oidc/v1/token", free_port());
    s.agent
        .write_config(&agent_config(&s.idp, "", &extra(&closed, &secret)));
    s.agent.signal("HUP");
    assert!(
        poll_until(READY_TIMEOUT, || {
            (s.agent
                .metric("idgate_config_reloads_total", &[("result", "success")])
                == Some(1.0))
            .then_some(())
        })
        .is_some(),
        "reload not applied\n{}",
        s.logs()
    );
    deny("endpoint unreachable");
    assert_eq!(
        s.echo.count(),
        0,
        "a request was forwarded without a credential"
    );
    // The failure is logged where it is decided: the URL, the side at fault and the cause.
    let logged = poll_until(Duration::from_secs(5), || {
        s.agent
            .log()
            .lines()
            .find(|l| {
                l.contains(&format!("\"url\":\"{closed}\"")) && l.contains("\"side\":\"network\"")
            })
            .map(str::to_owned)
    });
    let line = logged.unwrap_or_else(|| panic!("no failure line for {closed}\n{}", s.logs()));
    assert!(line.contains("Connection refused"), "{line}");
    assert!(!s.agent.log().contains(CLIENT_SECRET), "secret in the log");
    let m = s.agent.metrics();
    for result in ["http_5xx", "timeout", "network"] {
        let n = support::metric_value(
            &m,
            "idgate_upstream_token_requests_total",
            &[("upstream", "sp"), ("result", result)],
        );
        assert!(n >= Some(1.0), "token endpoint {result} not counted: {n:?}");
    }

    // Back to the working endpoint, which recovers: the request goes upstream with the
    // service principal's token, never the caller's.
    fake.fail_always(None);
    s.agent
        .write_config(&agent_config(&s.idp, "", &extra(&fake.token_url, &secret)));
    s.agent.signal("HUP");
    let caller = s.fresh_token();
    let ok = poll_until(READY_TIMEOUT, || {
        id += 1;
        let (o, body) = s.request(id, "POST", PATH, Some(&caller), true);
        let done = o.status == Some(200);
        assert!(
            matches!(o.status, Some(200 | 503)),
            "during recovery: {:?} {body}",
            o.status
        );
        outcomes.push(o);
        done.then_some(())
    });
    assert!(ok.is_some(), "never recovered\n{}", s.logs());
    let seen = s.echo.requests();
    let last = seen
        .last()
        .expect("the allowed request reached the upstream");
    let auth = last.header_all("authorization");
    assert_eq!(auth.len(), 1, "{:?}", last.headers);
    assert!(auth[0].starts_with("Bearer dbx-cc-"), "{auth:?}");
    assert!(!auth[0].contains(&caller));

    let forwarded = assert_only_allowed_forwarded(&outcomes, &s.echo, version.label());
    assert_eq!(forwarded, 1);
    assert_eq!(fake.rejected(), 0, "{:?}", fake.last_rejection());
}

haproxy_tests!(full: [token_endpoint_failures_deny_with_503_and_forward_nothing]);
