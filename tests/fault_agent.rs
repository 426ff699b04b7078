//! idgate killed (SIGKILL: no drain, no DISCONNECT) in the middle of client load through
//! HAProxy 2.6 and 3.4: from then on every request is refused (503), none is forwarded; once
//! the agent is restarted HAProxy reconnects on its own and traffic recovers within a bound.

mod support;

use std::time::{Duration, Instant};

use support::haproxy::HaproxyVersion;
use support::stack::IdpStack;
use support::traffic::{assert_only_allowed_forwarded, summary, Outcome};

/// Load clients.
const CLIENTS: usize = 4;
/// How long HAProxy may take to notice the dead agent and refuse at once, and to use the
/// restarted one again: its health check (`inter 2s fall 2`, `downinter 1s rise 2`) and the
/// SPOE `timeout processing 3s` are what bound these, plus slack for a loaded CI machine.
const SWITCH_BOUND: Duration = Duration::from_secs(15);
/// Consecutive answers that show a settled state.
const RUN: usize = 20;

fn healthy(o: &Outcome) -> bool {
    if o.good {
        o.status == Some(200)
    } else {
        o.status == Some(401)
    }
}

fn killed_agent_fails_closed_and_recovers_after_restart(version: HaproxyVersion) {
    let Some(mut s) = IdpStack::start(version, false, "", "") else {
        return;
    };
    let load = s.load(CLIENTS);
    assert!(
        load.wait_for_run(RUN, SWITCH_BOUND, healthy),
        "no healthy traffic before the fault: {:?}\n{}",
        summary(&load.since(Instant::now() - Duration::from_secs(60))),
        s.logs()
    );

    s.agent.kill();
    let killed = Instant::now();
    // Every request is now refused by HAProxy itself: 503, good and bad alike; first after
    // the SPOE processing timeout (2.6) or at once (3.4), then at once when the health check
    // has marked the agent DOWN.
    assert!(
        s.hap.wait_agent_up(false, SWITCH_BOUND),
        "HAProxy never marked the killed agent DOWN\n{}",
        s.logs()
    );
    let down_in = killed.elapsed();
    assert!(
        load.wait_for_run(RUN, SWITCH_BOUND, |o| o.status == Some(503)),
        "requests not refused after the kill: {:?}\n{}",
        summary(&load.since(killed)),
        s.logs()
    );
    let during = load.since(killed);
    assert!(
        during
            .iter()
            .all(|o| matches!(o.status, Some(503 | 200 | 401))),
        "unexpected answers while the agent was down: {:?}",
        summary(&during)
    );

    s.agent.restart();
    let restarted = Instant::now();
    assert!(
        s.hap.wait_agent_up(true, SWITCH_BOUND),
        "HAProxy never saw the restarted agent UP\n{}",
        s.logs()
    );
    assert!(
        load.wait_for_run(RUN, SWITCH_BOUND, healthy),
        "traffic did not recover within {SWITCH_BOUND:?} of the restart: {:?}\n{}",
        summary(&load.since(restarted)),
        s.logs()
    );
    let recovered_in = load
        .since(restarted)
        .iter()
        .rev()
        .take_while(|o| healthy(o))
        .last()
        .map(|o| o.at - restarted);

    let outcomes = load.stop();
    let forwarded = assert_only_allowed_forwarded(&outcomes, &s.echo, version.label());
    let errors = outcomes.iter().filter(|o| o.status.is_none()).count();
    assert_eq!(
        errors,
        0,
        "HAProxy itself failed to answer: {:?}",
        summary(&outcomes)
    );
    eprintln!(
        "{}: {} requests, {forwarded} forwarded, {:?}; agent DOWN {down_in:?} after the kill, \
         traffic recovered {recovered_in:?} after the restart",
        version.label(),
        outcomes.len(),
        summary(&outcomes)
    );
}

haproxy_tests!(full: [killed_agent_fails_closed_and_recovers_after_restart]);
