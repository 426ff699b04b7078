//! The payload checks in the pipeline (step 5b of the module docs; docs/payload.md): a rule
//! with `payload` refuses a body that is not a valid serving input, before any upstream
//! credential is obtained; with `payload_schema = "endpoint"`, once the credential is in hand,
//! against the endpoint's own schema.

use std::sync::Arc;
use std::time::Instant;

use crate::decision::{AuthzRequest, Reason, Verdict};
use crate::metrics::metrics;
use crate::payload::{self, Body, Outcome, Parsed, Problem, SchemaSource};

/// The refusal of a POST whose body HAProxy did not send to a rule that checks it.
const NOT_SENT: &str = "the gateway did not receive this request's body to check it \
    (HAProxy sends it with the authorize-serving message for POST \
    /serving-endpoints/{name}/invocations only)";
use crate::policy::Rule;
use crate::upstream::Broker;

/// What is left to do for the body once the rule allowed the request.
pub(super) enum Pending {
    /// Nothing: no check, or checked and passed.
    Done,
    /// Passed so far; the endpoint's schema is still to be applied.
    EndpointSchema(Parsed),
}

/// The checks that need nothing from the network. `Err`: the refusal.
pub(super) fn precheck(rule: &Rule, req: &AuthzRequest) -> Result<Pending, Box<Verdict>> {
    let Some(settings) = &rule.payload else {
        return Ok(Pending::Done);
    };
    // Only a message that carries the body (`authorize-serving`) is checked (contract §8).
    // A POST this rule allows that came without its body (HAProxy's idea of a serving
    // invocation differs from the rule's paths) is refused: unchecked, it would pass by.
    if req.body.is_none() && req.body_size.is_none() {
        if req.method.as_deref() == Some("POST") {
            return settle(rule, &Outcome::Invalid(Problem::body(NOT_SENT)));
        }
        return Ok(Pending::Done);
    }
    let body = Body {
        bytes: req.body.as_deref().unwrap_or_default(),
        announced: req.body_size,
        content_type: req.content_type.as_deref(),
    };
    let parsed = match payload::precheck(settings, &body) {
        Ok(p) => p,
        Err(done) => return settle(rule, &done),
    };
    match &settings.schema {
        None => settle(rule, &parsed.finish(None)),
        Some(SchemaSource::File(schema)) => settle(rule, &parsed.finish(Some(schema))),
        Some(SchemaSource::Endpoint) => Ok(Pending::EndpointSchema(parsed)),
    }
}

/// The endpoint-schema check, with the upstream credential (`authorization`) in hand. A
/// schema that cannot be had lets the body through on the checks it already passed (counted
/// as `schema_unavailable`): the schema refines the structural checks, and an unreachable
/// document must not take serving down. While fetches fail, the last schema fetched stands
/// in; a body that passes it is counted as `schema_stale`.
pub(super) async fn endpoint_schema(
    rule: &Rule,
    parsed: Parsed,
    upstreams: &Broker,
    upstream: &str,
    endpoint: Option<&str>,
    authorization: &str,
    now: Instant,
) -> Result<(), Box<Verdict>> {
    let found = match endpoint {
        Some(name) => upstreams
            .endpoint_schema(upstream, name, authorization, now)
            .await
            .ok(),
        None => None,
    };
    let Some(found) = found else {
        count("schema_unavailable");
        return Ok(());
    };
    let outcome = parsed.finish(Some(&found.schema));
    if found.stale && matches!(outcome, Outcome::Valid(_)) {
        count("schema_stale");
        return Ok(());
    }
    settle(rule, &outcome).map(drop)
}

fn count(result: &str) {
    metrics().payload_checks.with_label_values(&[result]).inc();
}

/// Count the outcome; a refusal as a verdict naming the rule (boxed: refusals are rare, and
/// the `Ok` path stays small).
fn settle(rule: &Rule, outcome: &Outcome) -> Result<Pending, Box<Verdict>> {
    count(outcome.label());
    let reason = match outcome {
        Outcome::Valid(_) | Outcome::Unchecked => return Ok(Pending::Done),
        Outcome::Invalid(_) => Reason::InvalidPayload,
        Outcome::TooLarge(_) => Reason::PayloadTooLarge,
    };
    Err(Box::new(Verdict {
        rule: Some(Arc::clone(&rule.name)),
        description: outcome.message().map(Into::into),
        ..Verdict::deny(reason)
    }))
}
