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

use serde_json::{Map, Value};

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

/// The body's input format (its key in [`FORMATS`]), or why it is none.
pub fn check(body: &Value) -> Result<&'static str, Problem> {
    let Value::Object(top) = body else {
        return Err(Problem::body(format!(
            "the body must be a JSON object with one of the input fields {}; got {}",
            list(),
            kind(body)
        )));
    };
    let present: Vec<&'static str> = FORMATS
        .into_iter()
        .filter(|k| top.contains_key(*k))
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
    let v = &top[format];
    match format {
        "dataframe_split" => dataframe_split(v),
        "dataframe_records" => array_of(format, v, "an object (one per row)", Value::is_object),
        "instances" => array(format, v).map(drop),
        "inputs" if v.is_null() => Err(Problem::at(format, "must not be null")),
        "inputs" => Ok(()),
        "messages" => messages(v),
        "prompt" => match v {
            Value::String(_) => Ok(()),
            Value::Array(_) => array_of(format, v, "a string", Value::is_string),
            _ => Err(Problem::at(
                format,
                format!("must be a string or an array of strings; got {}", kind(v)),
            )),
        },
        _ => match v {
            Value::String(_) => Ok(()),
            Value::Array(a) if a.is_empty() => Err(Problem::at(format, "must not be empty")),
            Value::Array(_) => Ok(()),
            _ => Err(Problem::at(
                format,
                format!("must be a string or an array; got {}", kind(v)),
            )),
        },
    }?;
    Ok(format)
}

fn list() -> String {
    FORMATS.join(", ")
}

/// The JSON type of `v`, for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn array<'v>(key: &str, v: &'v Value) -> Result<&'v [Value], Problem> {
    v.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| Problem::at(key, format!("must be an array; got {}", kind(v))))
}

/// `key` is an array whose every item passes `ok` (described as `what`).
fn array_of(key: &str, v: &Value, what: &str, ok: fn(&Value) -> bool) -> Result<(), Problem> {
    for (i, item) in array(key, v)?.iter().enumerate() {
        if !ok(item) {
            return Err(sub(
                key,
                &format!("[{i}]"),
                format!("must be {what}; got {}", kind(item)),
            ));
        }
    }
    Ok(())
}

fn dataframe_split(v: &Value) -> Result<(), Problem> {
    const KEY: &str = "dataframe_split";
    let Value::Object(split) = v else {
        return Err(Problem::at(
            KEY,
            format!(
                "must be an object with `columns` and `data`; got {}",
                kind(v)
            ),
        ));
    };
    if let Some(other) = split
        .keys()
        .find(|k| !matches!(k.as_str(), "columns" | "data" | "index"))
    {
        return Err(Problem::at(
            KEY,
            format!("unexpected field {other:?} (allowed: columns, data, index)"),
        ));
    }
    let field = |name: &str| -> Result<Option<&Vec<Value>>, Problem> {
        match split.get(name) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(other) => Err(sub(
                KEY,
                name,
                format!("must be an array; got {}", kind(other)),
            )),
        }
    };
    let columns = field("columns")?;
    let index = field("index")?;
    let Some(data) = field("data")? else {
        return Err(Problem::at(KEY, "missing field `data`"));
    };
    if let Some(cols) = columns {
        for (i, row) in data.iter().enumerate() {
            if let Value::Array(cells) = row {
                if cells.len() != cols.len() {
                    return Err(sub(
                        KEY,
                        &format!("data[{i}]"),
                        format!("has {} values for {} columns", cells.len(), cols.len()),
                    ));
                }
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

fn messages(v: &Value) -> Result<(), Problem> {
    const KEY: &str = "messages";
    let items = array(KEY, v)?;
    if items.is_empty() {
        return Err(Problem::at(KEY, "must not be empty"));
    }
    for (i, m) in items.iter().enumerate() {
        let Value::Object(m) = m else {
            return Err(sub(
                KEY,
                &format!("[{i}]"),
                format!(
                    "must be an object with `role` and `content`; got {}",
                    kind(m)
                ),
            ));
        };
        role(m).map_err(|why| sub(KEY, &format!("[{i}].role"), why.into()))?;
    }
    Ok(())
}

fn role(m: &Map<String, Value>) -> Result<(), &'static str> {
    match m.get("role") {
        Some(Value::String(_)) => Ok(()),
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
