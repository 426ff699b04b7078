//! A rule's payload keys (contract §8, docs/payload.md): `payload = "serving"`,
//! `payload_schema` (a JSON Schema file, or `"endpoint"`: the serving endpoint's OpenAPI
//! document), `payload_max_bytes`, `payload_oversize` (`"refuse"` | `"forward"`). A schema file
//! is read and compiled here, at load: a missing or invalid one is a configuration problem.

use std::path::Path;
use std::sync::Arc;

use super::read::{Cx, Table};
use crate::payload::{Oversize, Schema, SchemaSource, Settings};

/// Largest schema file read.
const SCHEMA_FILE_CAP: u64 = 4 << 20;

/// `payload_schema` value naming the endpoint's own OpenAPI schema.
pub(super) const ENDPOINT_SCHEMA: &str = "endpoint";

/// Read the payload keys of a rule; `None` when it has no `payload` (the other keys are then
/// reported: they would do nothing).
pub(crate) fn read(t: &mut Table<'_, '_>) -> Option<Settings> {
    let kind: Option<String> = t.get("payload");
    let schema: Option<String> = t.get("payload_schema");
    let max_bytes: Option<u64> = t.get("payload_max_bytes");
    let oversize: Option<String> = t.get("payload_oversize");
    match kind.as_deref() {
        None => {
            for (key, set) in [
                ("payload_schema", schema.is_some()),
                ("payload_max_bytes", max_bytes.is_some()),
                ("payload_oversize", oversize.is_some()),
            ] {
                if set {
                    t.problem(key, "needs `payload = \"serving\"` on the same rule");
                }
            }
            return None;
        }
        Some("serving") => {}
        Some(other) => {
            t.problem(
                "payload",
                format!("{other:?}: the only payload check is \"serving\""),
            );
            return None;
        }
    }
    if max_bytes == Some(0) {
        t.problem("payload_max_bytes", "must be at least 1");
    }
    let oversize = match oversize.as_deref() {
        None | Some("refuse") => Oversize::Refuse,
        Some("forward") => Oversize::Forward,
        Some(other) => {
            t.problem(
                "payload_oversize",
                format!("{other:?}: expected \"refuse\" or \"forward\""),
            );
            Oversize::Refuse
        }
    };
    let schema = match schema.as_deref() {
        None => None,
        Some(ENDPOINT_SCHEMA) => Some(SchemaSource::Endpoint),
        Some(name) => match load_schema(t, Path::new(name)) {
            Ok(s) => Some(SchemaSource::File(Arc::new(s))),
            Err(why) => {
                t.problem("payload_schema", why);
                None
            }
        },
    };
    Some(Settings {
        schema,
        max_bytes,
        oversize,
    })
}

fn load_schema(t: &Table<'_, '_>, name: &Path) -> Result<Schema, String> {
    let path = t.dirs().resolve(name)?;
    let read = || -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        let mut buf = Vec::new();
        std::fs::File::open(&path)?
            .take(SCHEMA_FILE_CAP + 1)
            .read_to_end(&mut buf)?;
        Ok(buf)
    };
    let bytes = read().map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > SCHEMA_FILE_CAP {
        return Err(format!(
            "{}: larger than {SCHEMA_FILE_CAP} bytes",
            path.display()
        ));
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    Schema::compile(path.display().to_string(), doc).map_err(|e| format!("{}: {e}", path.display()))
}

/// Checks against the rest of the rule: a deny rule forwards nothing to check, and the
/// endpoint's schema is fetched with the rule's upstream credential.
pub(crate) fn check(
    settings: &Settings,
    k: &dyn Fn(&str) -> String,
    allow: bool,
    upstream: Option<&str>,
    cx: &mut Cx<'_>,
) {
    if !allow {
        cx.push(
            k("payload"),
            "a deny rule forwards nothing, so it has no payload to check",
        );
    }
    if settings.schema == Some(SchemaSource::Endpoint) && upstream.is_none() {
        cx.push(
            k("payload_schema"),
            "\"endpoint\" fetches the endpoint's schema with the rule's upstream credential: \
             the rule needs an `upstream`",
        );
    }
}
