//! Databricks model serving's input formats (the keys MLflow's scoring server and Databricks'
//! foundation-model endpoints read), checked as far as the server itself would refuse them:
//!
//! | key | shape |
//! |---|---|
//! | `dataframe_split` | object with `data` (array; each row an array as long as `columns` when both are given), optional `columns` and `index` (arrays; `index` as long as `data`), nothing else (pandas refuses other keys) |
//! | `dataframe_records` | array of objects (one per row) |
//! | `instances` | array (TF serving row format) |
//! | `inputs` | any value but `null` (TF serving columnar format: a tensor, a list, or an object of named tensors) |
//! | `messages` | non-empty array of objects, each with a string `role` (chat) |
//! | `prompt` | string or array of strings (completions) |
//! | `input` | string or non-empty array (embeddings: strings, or token ids) |
//!
//! The body must be an object with exactly one of these keys. Other top-level keys are not
//! refused: MLflow ignores them next to the dataframe and tensor formats (`params` among
//! them), and passes them to the model for the chat, completions and embeddings formats
//! (`temperature`, `max_tokens`...).

use serde_json::Value;

use super::path::Problem;

/// The input formats, by their top-level key.
pub const FORMATS: [&str; 7] = [
    "dataframe_split",
    "dataframe_records",
    "instances",
    "inputs",
    "messages",
    "prompt",
    "input",
];

/// The body's input format (its key in [`FORMATS`]), or why it is none. `body` is the parsed
/// body ([`Value`]) or what [`super::json::scan`] kept of it.
pub fn check<N: Node>(body: &N) -> Result<&'static str, Problem> {
    if body.kind() != Kind::Object {
        return Err(Problem::body(format!(
            "the body must be a JSON object with one of the input fields {}; got {}",
            list(),
            body.kind().described()
        )));
    }
    let top = body;
    let present: Vec<&'static str> = FORMATS
        .into_iter()
        .filter(|k| top.get(k).is_some())
        .collect();
    let format = match present[..] {
        [one] => one,
        [] => {
            return Err(Problem::body(format!(
                "the body must have one of the input fields {}",
                list()
            )))
        }
        _ => {
            return Err(Problem::body(format!(
                "the body must have exactly one input field; got {}",
                present.join(", ")
            )))
        }
    };
    let v = top.get(format).expect("present");
    match format {
        "dataframe_split" => dataframe_split(v),
        "dataframe_records" => array_of(format, v, "an object (one per row)", Kind::Object),
        "instances" => array(format, v).map(drop),
        "inputs" if v.kind() == Kind::Null => Err(Problem::at(format, "must not be null")),
        "inputs" => Ok(()),
        "messages" => messages(v),
        "prompt" => match v.kind() {
            Kind::String => Ok(()),
            Kind::Array => array_of(format, v, "a string", Kind::String),
            k => Err(Problem::at(
                format,
                format!(
                    "must be a string or an array of strings; got {}",
                    k.described()
                ),
            )),
        },
        _ => match v.kind() {
            Kind::String => Ok(()),
            Kind::Array if v.is_empty() => Err(Problem::at(format, "must not be empty")),
            Kind::Array => Ok(()),
            k => Err(Problem::at(
                format,
                format!("must be a string or an array; got {}", k.described()),
            )),
        },
    }?;
    Ok(format)
}

/// The JSON type of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    /// As messages say it.
    pub fn described(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "a boolean",
            Kind::Number => "a number",
            Kind::String => "a string",
            Kind::Array => "an array",
            Kind::Object => "an object",
        }
    }
}

/// What the format check reads of a JSON value: a [`Value`], or a
/// [`Skeleton`](super::skeleton::Skeleton) (which holds only what this module reads).
pub trait Node: Sized {
    fn kind(&self) -> Kind;
    /// An object's member.
    fn get(&self, key: &str) -> Option<&Self>;
    /// An array's items.
    fn items(&self) -> &[Self];
    /// An array's length.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// An object's first key (in key order) that is not in `allowed`.
    fn other_key(&self, allowed: &[&str]) -> Option<&str>;
}

impl Node for Value {
    fn kind(&self) -> Kind {
        match self {
            Value::Null => Kind::Null,
            Value::Bool(_) => Kind::Bool,
            Value::Number(_) => Kind::Number,
            Value::String(_) => Kind::String,
            Value::Array(_) => Kind::Array,
            Value::Object(_) => Kind::Object,
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.as_object()?.get(key)
    }

    fn items(&self) -> &[Value] {
        self.as_array().map_or(&[], Vec::as_slice)
    }

    fn len(&self) -> usize {
        self.as_array().map_or(0, Vec::len)
    }

    fn other_key(&self, allowed: &[&str]) -> Option<&str> {
        self.as_object()?
            .keys()
            .map(String::as_str)
            .find(|k| !allowed.contains(k))
    }
}

fn list() -> String {
    FORMATS.join(", ")
}

fn array<'v, N: Node>(key: &str, v: &'v N) -> Result<&'v [N], Problem> {
    match v.kind() {
        Kind::Array => Ok(v.items()),
        k => Err(Problem::at(
            key,
            format!("must be an array; got {}", k.described()),
        )),
    }
}

/// `key` is an array whose every item is of kind `ok` (described as `what`).
fn array_of<N: Node>(key: &str, v: &N, what: &str, ok: Kind) -> Result<(), Problem> {
    for (i, item) in array(key, v)?.iter().enumerate() {
        if item.kind() != ok {
            return Err(sub(
                key,
                &format!("[{i}]"),
                format!("must be {what}; got {}", item.kind().described()),
            ));
        }
    }
    Ok(())
}

/// The keys of `dataframe_split`.
pub(super) const SPLIT_KEYS: [&str; 3] = ["columns", "data", "index"];

fn dataframe_split<N: Node>(split: &N) -> Result<(), Problem> {
    const KEY: &str = "dataframe_split";
    if split.kind() != Kind::Object {
        return Err(Problem::at(
            KEY,
            format!(
                "must be an object with `columns` and `data`; got {}",
                split.kind().described()
            ),
        ));
    }
    if let Some(other) = split.other_key(&SPLIT_KEYS) {
        return Err(Problem::at(
            KEY,
            format!("unexpected field {other:?} (allowed: columns, data, index)"),
        ));
    }
    let field = |name: &str| -> Result<Option<&N>, Problem> {
        match split.get(name) {
            None => Ok(None),
            Some(a) if a.kind() == Kind::Array => Ok(Some(a)),
            Some(other) => Err(sub(
                KEY,
                name,
                format!("must be an array; got {}", other.kind().described()),
            )),
        }
    };
    let columns = field("columns")?;
    let index = field("index")?;
    let Some(data) = field("data")? else {
        return Err(Problem::at(KEY, "missing field `data`"));
    };
    if let Some(cols) = columns {
        for (i, row) in data.items().iter().enumerate() {
            if row.kind() == Kind::Array && row.len() != cols.len() {
                return Err(sub(
                    KEY,
                    &format!("data[{i}]"),
                    format!("has {} values for {} columns", row.len(), cols.len()),
                ));
            }
        }
    }
    if let Some(index) = index {
        if index.len() != data.len() {
            return Err(sub(
                KEY,
                "index",
                format!(
                    "has {} entries for {} rows of data",
                    index.len(),
                    data.len()
                ),
            ));
        }
    }
    Ok(())
}

fn messages<N: Node>(v: &N) -> Result<(), Problem> {
    const KEY: &str = "messages";
    let items = array(KEY, v)?;
    if items.is_empty() {
        return Err(Problem::at(KEY, "must not be empty"));
    }
    for (i, m) in items.iter().enumerate() {
        if m.kind() != Kind::Object {
            return Err(sub(
                KEY,
                &format!("[{i}]"),
                format!(
                    "must be an object with `role` and `content`; got {}",
                    m.kind().described()
                ),
            ));
        }
        role(m).map_err(|why| sub(KEY, &format!("[{i}].role"), why.into()))?;
    }
    Ok(())
}

fn role<N: Node>(m: &N) -> Result<(), &'static str> {
    match m.get("role").map(Node::kind) {
        Some(Kind::String) => Ok(()),
        Some(_) => Err("must be a string"),
        None => Err("missing (e.g. \"user\", \"assistant\", \"system\")"),
    }
}

/// A problem at `key` followed by `rest` (`[3].role`, `data[2]`, `index`).
fn sub(key: &str, rest: &str, message: String) -> Problem {
    let sep = if rest.starts_with('[') { "" } else { "." };
    Problem {
        path: format!("{key}{sep}{rest}"),
        message,
    }
}

#[cfg(test)]
mod tests;
