//! Payload checks for model serving (contract §8): is a request body something the serving
//! endpoint behind the gateway would accept? Pure: no IO, no clock (the endpoint's own schema
//! is fetched by [`crate::upstream`] and handed in as a [`Schema`]).
//!
//! | module | does |
//! |---|---|
//! | `json.rs` | strict JSON: duplicate keys and depth refused, `NaN`/`Infinity` accepted ([`json::parse`] to a `Value`, [`json::scan`] without one) |
//! | `formats.rs` | Databricks serving's input formats ([`formats::check`], on a `Value` or a [`Skeleton`]) |
//! | `skeleton.rs` | what the format check reads of a body, when no schema needs the whole of it ([`Skeleton`]) |
//! | `schema.rs` | JSON Schema (draft 2020-12) from a file or an endpoint's OpenAPI document ([`Schema`]) |
//! | `path.rs` | where a problem is (`dataframe_split.data[3][1]`) ([`Problem`]) |
//!
//! The rule's settings ([`Settings`]) are read by `config::payload`; the engine calls
//! [`check`] with the body HAProxy sent and acts on the [`Outcome`].

pub mod formats;
pub mod json;
mod path;
mod schema;
mod skeleton;

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

pub use path::Problem;
pub use schema::{schema_from_openapi, Schema};
pub use skeleton::Skeleton;

/// `payload = "serving"` and its keys on one rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub schema: Option<SchemaSource>,
    /// `payload_max_bytes`: a body larger than this is refused (`payload_too_large`).
    pub max_bytes: Option<u64>,
    /// `payload_oversize`: what to do with a body HAProxy could not send whole.
    pub oversize: Oversize,
}

/// `payload_schema`.
#[derive(Debug, Clone, PartialEq)]
pub enum SchemaSource {
    /// A JSON Schema file, compiled at load.
    File(Arc<Schema>),
    /// `"endpoint"`: the serving endpoint's OpenAPI document (`GET
    /// /api/2.0/serving-endpoints/{name}/openapi`), fetched with the rule's upstream credential.
    Endpoint,
}

/// `payload_oversize`: a body larger than HAProxy could put in the SPOE frame arrives cut (or
/// not at all), so it cannot be checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Oversize {
    /// Refuse it (`payload_too_large`, 413). The default: fail closed.
    #[default]
    Refuse,
    /// Forward it unchecked (counted in `idgate_payload_checks_total{result="unchecked"}`).
    Forward,
}

impl Oversize {
    pub fn as_str(self) -> &'static str {
        match self {
            Oversize::Refuse => "refuse",
            Oversize::Forward => "forward",
        }
    }
}

/// The body as the NOTIFY carried it.
#[derive(Debug, Clone, Copy)]
pub struct Body<'a> {
    /// What HAProxy sent (`req.body`); empty when absent.
    pub bytes: &'a [u8],
    /// The length the request announced (`req.body_size`: Content-Length, or what was
    /// buffered of a chunked body), when sent.
    pub announced: Option<u64>,
    /// `req.hdr(content-type)`, when present.
    pub content_type: Option<&'a str>,
}

impl Body<'_> {
    /// The body's length as the client sent it (the larger of the announced and the received).
    pub fn size(&self) -> u64 {
        let got = self.bytes.len() as u64;
        self.announced.map_or(got, |a| a.max(got))
    }

    /// HAProxy sent less than the request announced: the body did not fit (its buffer or the
    /// SPOE frame).
    pub fn is_cut(&self) -> bool {
        self.announced.is_some_and(|a| a > self.bytes.len() as u64)
    }
}

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A well-formed body in this input format.
    Valid(&'static str),
    /// Not checked: the body did not arrive whole and the rule forwards such bodies.
    Unchecked,
    /// `invalid_payload` (400).
    Invalid(Problem),
    /// `payload_too_large` (413), with why.
    TooLarge(String),
}

/// Check `body` against the rule's `settings` and `schema` (the file's, or the endpoint's
/// once fetched; `None`: no schema check).
pub fn check(settings: &Settings, schema: Option<&Schema>, body: &Body<'_>) -> Outcome {
    match precheck(settings, body) {
        Ok(parsed) => parsed.finish(schema),
        Err(done) => done,
    }
}

/// A body that passed everything but the schema.
#[derive(Debug)]
pub struct Parsed {
    /// The body as a `Value`: kept when the rule has a schema (`payload_schema`), else `None`
    /// (the body was only scanned).
    value: Option<Value>,
    format: &'static str,
}

impl Parsed {
    /// The schema check (`None`: none), and the outcome.
    pub fn finish(self, schema: Option<&Schema>) -> Outcome {
        match (schema, &self.value) {
            (None, _) => Outcome::Valid(self.format),
            (Some(s), Some(v)) => match s.validate(v) {
                Ok(()) => Outcome::Valid(self.format),
                Err(p) => Outcome::Invalid(p),
            },
            // Not reached: `precheck` keeps the value whenever the rule has a schema. Were it
            // ever, the body is refused rather than passed unchecked.
            (Some(_), None) => Outcome::Invalid(Problem::body(
                "the gateway did not keep this body for its schema check",
            )),
        }
    }
}

/// Everything before the schema: the size limit, a body HAProxy could not send whole, the
/// content type, strict JSON and the input format. `Err`: the outcome is already known.
pub fn precheck(settings: &Settings, body: &Body<'_>) -> Result<Parsed, Outcome> {
    if let Some(max) = settings.max_bytes {
        if body.size() > max {
            return Err(Outcome::TooLarge(format!(
                "the body has {} bytes; this endpoint accepts at most {max}",
                body.size()
            )));
        }
    }
    if body.is_cut() {
        return Err(match settings.oversize {
            Oversize::Forward => Outcome::Unchecked,
            Oversize::Refuse => Outcome::TooLarge(format!(
                "the body has {} bytes, more than the gateway can check ({} arrived)",
                body.size(),
                body.bytes.len()
            )),
        });
    }
    if let Some(ct) = body.content_type {
        json_content_type(ct).map_err(|why| Outcome::Invalid(Problem::body(why)))?;
    }
    parse(body.bytes, settings.schema.is_some()).map_err(Outcome::Invalid)
}

/// The body parsed strictly and in one of the input formats; into a `Value` when a schema
/// is to be applied (`tree`), else only scanned (no copy of its strings, numbers and
/// containers is made: [`json::scan`]). Both judge every body alike.
fn parse(bytes: &[u8], tree: bool) -> Result<Parsed, Problem> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::body("the body is empty; send a JSON object"));
    }
    if !tree {
        let format = formats::check(&json::scan(bytes, json::MAX_DEPTH)?)?;
        return Ok(Parsed {
            value: None,
            format,
        });
    }
    let value = json::parse(bytes, json::MAX_DEPTH)?;
    let format = formats::check(&value)?;
    Ok(Parsed {
        value: Some(value),
        format,
    })
}

/// [`check`] without the size and content-type checks: the body parsed strictly, in one of
/// the input formats, valid against `schema` if any (benchmarks, fuzzing).
pub fn check_json(bytes: &[u8], schema: Option<&Schema>) -> Result<&'static str, Problem> {
    let parsed = parse(bytes, schema.is_some())?;
    if let (Some(s), Some(v)) = (schema, &parsed.value) {
        s.validate(v)?;
    }
    Ok(parsed.format)
}

/// `application/json`, with at most a UTF-8 `charset` (what MLflow's scoring server takes
/// as JSON).
fn json_content_type(ct: &str) -> Result<(), String> {
    let mut parts = ct.split(';').map(str::trim);
    let mime = parts.next().unwrap_or_default();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(format!(
            "Content-Type must be application/json; got {:?}",
            cap(mime, 64)
        ));
    }
    for p in parts.filter(|p| !p.is_empty()) {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        let ok = k.trim().eq_ignore_ascii_case("charset")
            && v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8");
        if !ok {
            return Err(format!(
                "Content-Type parameter {:?} is not supported (only charset=utf-8)",
                cap(p, 64)
            ));
        }
    }
    Ok(())
}

fn cap(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Longest refusal message (it goes into the `description` variable and the error body).
const MESSAGE_CAP: usize = 900;

impl Outcome {
    /// The refusal's message, header-safe and capped (`None` for a body that passes).
    pub fn message(&self) -> Option<String> {
        let text = match self {
            Outcome::Valid(_) | Outcome::Unchecked => return None,
            Outcome::Invalid(p) => p.to_string(),
            Outcome::TooLarge(why) => why.clone(),
        };
        let mut out = String::with_capacity(text.len().min(MESSAGE_CAP));
        for c in text.chars().map(|c| if c.is_control() { ' ' } else { c }) {
            if out.len() + c.len_utf8() > MESSAGE_CAP {
                out.push('…');
                break;
            }
            out.push(c);
        }
        Some(out)
    }

    /// Its `result` label in `idgate_payload_checks_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Valid(_) => "valid",
            Outcome::Unchecked => "unchecked",
            Outcome::Invalid(_) => "invalid",
            Outcome::TooLarge(_) => "too_large",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Valid(format) => write!(f, "valid ({format})"),
            Outcome::Unchecked => f.write_str("unchecked (body larger than a frame)"),
            Outcome::Invalid(p) => write!(f, "{p}"),
            Outcome::TooLarge(why) => f.write_str(why),
        }
    }
}

#[cfg(test)]
mod tests;
