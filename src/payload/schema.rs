//! JSON Schema (draft 2020-12, the `jsonschema` crate) for request bodies: from a file
//! (`payload_schema = "/path/schema.json"`) or from a serving endpoint's OpenAPI document
//! ([`schema_from_openapi`]).

use std::fmt;

use serde_json::{json, Value};

use super::path::{Path, Problem};

/// Longest schema message kept (the instance it quotes can be large).
const MESSAGE_CAP: usize = 300;

/// A compiled schema and where it came from.
pub struct Schema {
    /// A file name or `openapi:<endpoint>`, for logs.
    origin: String,
    document: Value,
    validator: jsonschema::Validator,
}

impl Schema {
    /// Compile `document` (draft 2020-12 unless it names another with `$schema`). External
    /// references are not fetched.
    pub fn compile(origin: impl Into<String>, document: Value) -> Result<Schema, String> {
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&document)
            .map_err(|e| format!("not a valid JSON Schema: {}", capped(&e.to_string())))?;
        Ok(Schema {
            origin: origin.into(),
            document,
            validator,
        })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The first place `body` breaks the schema, named by its path.
    pub fn validate(&self, body: &Value) -> Result<(), Problem> {
        let Some(e) = self.validator.iter_errors(body).next() else {
            return Ok(());
        };
        let pointer = e.instance_path().as_str().to_owned();
        Err(Problem {
            path: readable(body, &pointer),
            message: capped(&e.to_string()),
        })
    }
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema")
            .field("origin", &self.origin)
            .finish()
    }
}

impl PartialEq for Schema {
    fn eq(&self, other: &Self) -> bool {
        self.origin == other.origin && self.document == other.document
    }
}

fn capped(s: &str) -> String {
    match s.char_indices().nth(MESSAGE_CAP) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// A JSON pointer into `body` as a [`Path`] (`/a/0/b` -> `a[0].b`): a segment is an index when
/// the value it steps into is an array.
fn readable(body: &Value, pointer: &str) -> String {
    let mut path = Path::default();
    let mut at = Some(body);
    for raw in pointer.split('/').skip(1) {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        match at {
            Some(Value::Array(items)) => match seg.parse::<usize>() {
                Ok(i) => {
                    path.push_index(i);
                    at = items.get(i);
                }
                Err(_) => {
                    path.push_key(&seg);
                    at = None;
                }
            },
            Some(Value::Object(m)) => {
                path.push_key(&seg);
                at = m.get(&seg);
            }
            _ => {
                path.push_key(&seg);
                at = None;
            }
        }
    }
    path.as_str().to_owned()
}

/// The JSON Schema of an invocation's request body in a serving endpoint's OpenAPI document
/// (what `GET /api/2.0/serving-endpoints/{name}/openapi` returns, derived from the model's
/// signature): the `application/json` schema of the `requestBody` of the `post` operation of
/// the path ending in `/invocations`, with the document's `components` kept beside it so that
/// its `#/components/...` references resolve. The document may come wrapped in
/// `{"contents": "<document as a string>"}` (the API reference's shape).
pub fn schema_from_openapi(doc: &Value) -> Result<Value, String> {
    let unwrapped;
    let doc = match doc.get("contents") {
        Some(Value::String(s)) => {
            unwrapped = serde_json::from_str::<Value>(s)
                .map_err(|e| format!("`contents` is not a JSON OpenAPI document: {e}"))?;
            &unwrapped
        }
        _ => doc,
    };
    let paths = doc
        .get("paths")
        .and_then(Value::as_object)
        .ok_or("the OpenAPI document has no `paths`")?;
    let (_, op) = paths
        .iter()
        .find(|(p, _)| p.ends_with("/invocations"))
        .ok_or("the OpenAPI document has no `/invocations` path")?;
    let schema = op
        .pointer("/post/requestBody/content/application~1json/schema")
        .ok_or("the `/invocations` path has no `post` request body schema for application/json")?;
    let mut root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "allOf": [schema],
    });
    if let Some(c) = doc.get("components") {
        root["components"] = c.clone();
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(doc: Value) -> Schema {
        Schema::compile("test", doc).unwrap()
    }

    #[test]
    fn errors_name_the_field() {
        let s = schema(json!({
            "type": "object",
            "properties": {"dataframe_split": {"type": "object", "properties": {
                "data": {"type": "array", "items": {"type": "array", "prefixItems": [
                    {"type": "string"}, {"type": "number"}
                ]}}
            }}}
        }));
        let ok = json!({"dataframe_split": {"data": [["a", 1], ["b", 2.5]]}});
        assert_eq!(s.validate(&ok), Ok(()));
        let bad = json!({"dataframe_split": {"data": [["a", 1], ["b", 2], ["c", 3], ["d", "x"]]}});
        let p = s.validate(&bad).unwrap_err();
        assert_eq!(p.path, "dataframe_split.data[3][1]");
        assert!(
            p.message.contains("\"x\" is not of type \"number\""),
            "{}",
            p.message
        );
    }

    #[test]
    fn pointers_become_readable_paths() {
        let body = json!({"a": [{"b c": {"0": 1}}], "x/y": 1});
        assert_eq!(readable(&body, "/a/0/b c/0"), r#"a[0]["b c"]["0"]"#);
        assert_eq!(readable(&body, "/x~1y"), r#"["x/y"]"#);
        assert_eq!(readable(&body, ""), "");
    }

    #[test]
    fn invalid_schemas_are_refused() {
        let e = Schema::compile("t", json!({"type": "nope"})).unwrap_err();
        assert!(e.starts_with("not a valid JSON Schema"), "{e}");
    }

    #[test]
    fn openapi_request_body_schema_with_components() {
        let doc = json!({
            "openapi": "3.1.0",
            "paths": {"/serving-endpoints/churn/invocations": {"post": {"requestBody": {
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/In"}}}
            }}}},
            "components": {"schemas": {"In": {
                "type": "object", "required": ["inputs"],
                "properties": {"inputs": {"type": "array", "items": {"type": "number"}}}
            }}}
        });
        let s = schema(schema_from_openapi(&doc).unwrap());
        assert_eq!(s.validate(&json!({"inputs": [1, 2.5]})), Ok(()));
        assert_eq!(
            s.validate(&json!({"inputs": [1, "2"]})).unwrap_err().path,
            "inputs[1]"
        );
        let wrapped = json!({"contents": doc.to_string()});
        assert_eq!(
            schema_from_openapi(&wrapped).unwrap(),
            schema_from_openapi(&doc).unwrap()
        );
        assert!(schema_from_openapi(&json!({"paths": {}}))
            .unwrap_err()
            .contains("/invocations"));
        assert!(schema_from_openapi(&json!({"contents": "x"})).is_err());
    }
}
