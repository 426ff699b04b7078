use serde_json::json;

use super::*;

fn refused(v: Value) -> String {
    check(&v).unwrap_err().to_string()
}

#[test]
fn every_format_accepts_its_documented_shapes() {
    for (body, format) in [
        (
            json!({"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3, 4]]}}),
            "dataframe_split",
        ),
        (
            json!({"dataframe_split": {"index": [0], "columns": ["a"], "data": [[1]]}, "params": {"k": 1}}),
            "dataframe_split",
        ),
        (
            json!({"dataframe_split": {"data": [[1, 2, 3]]}}),
            "dataframe_split",
        ),
        (
            json!({"dataframe_records": [{"a": 1, "b": 2}, {"a": 3}]}),
            "dataframe_records",
        ),
        (json!({"dataframe_records": []}), "dataframe_records"),
        (json!({"instances": [[1, 2], [3, 4]]}), "instances"),
        (json!({"instances": [{"t": [1, 2]}]}), "instances"),
        (json!({"inputs": {"a": [1, 2], "b": [3, 4]}}), "inputs"),
        (json!({"inputs": [[1.5, 2.5]]}), "inputs"),
        (json!({"inputs": "a prompt for a custom pyfunc"}), "inputs"),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 64, "temperature": 0.1}),
            "messages",
        ),
        (
            json!({"messages": [{"role": "assistant", "content": null, "tool_calls": []}]}),
            "messages",
        ),
        (json!({"prompt": "Once upon", "max_tokens": 5}), "prompt"),
        (json!({"prompt": ["a", "b"]}), "prompt"),
        (json!({"input": "embed me"}), "input"),
        (json!({"input": ["a", "b"]}), "input"),
        (json!({"input": [1, 2, 3]}), "input"),
    ] {
        assert_eq!(check(&body), Ok(format), "{body}");
    }
}

#[test]
fn the_body_needs_exactly_one_input_field() {
    assert!(refused(json!([1, 2])).contains("must be a JSON object"));
    assert!(refused(json!("x")).contains("got a string"));
    let e = refused(json!({"data": [[1]]}));
    assert!(
        e.starts_with("the body must have one of the input fields dataframe_split"),
        "{e}"
    );
    assert_eq!(
        refused(json!({"instances": [], "inputs": []})),
        "the body must have exactly one input field; got instances, inputs"
    );
}

#[test]
fn dataframe_split_problems_name_the_field() {
    assert_eq!(
        refused(json!({"dataframe_split": [[1]]})),
        "dataframe_split: must be an object with `columns` and `data`; got an array"
    );
    assert_eq!(
        refused(json!({"dataframe_split": {"columns": ["a"]}})),
        "dataframe_split: missing field `data`"
    );
    assert_eq!(
        refused(
            json!({"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [1, 2], [1, 2], [3]]}})
        ),
        "dataframe_split.data[3]: has 1 values for 2 columns"
    );
    assert_eq!(
        refused(json!({"dataframe_split": {"data": [[1]], "index": [0, 1]}})),
        "dataframe_split.index: has 2 entries for 1 rows of data"
    );
    assert_eq!(
        refused(json!({"dataframe_split": {"data": [[1]], "colums": ["a"]}})),
        "dataframe_split: unexpected field \"colums\" (allowed: columns, data, index)"
    );
    assert_eq!(
        refused(json!({"dataframe_split": {"data": {"a": 1}}})),
        "dataframe_split.data: must be an array; got an object"
    );
}

#[test]
fn other_formats_name_the_field() {
    assert_eq!(
        refused(json!({"dataframe_records": [{"a": 1}, [1]]})),
        "dataframe_records[1]: must be an object (one per row); got an array"
    );
    assert_eq!(
        refused(json!({"dataframe_records": {"a": [1]}})),
        "dataframe_records: must be an array; got an object"
    );
    assert_eq!(
        refused(json!({"instances": {"a": 1}})),
        "instances: must be an array; got an object"
    );
    assert_eq!(refused(json!({"inputs": null})), "inputs: must not be null");
    assert_eq!(
        refused(json!({"messages": []})),
        "messages: must not be empty"
    );
    assert_eq!(
        refused(json!({"messages": [{"role": "user", "content": "a"}, {"content": "b"}]})),
        "messages[1].role: missing (e.g. \"user\", \"assistant\", \"system\")"
    );
    assert_eq!(
        refused(json!({"messages": [{"role": 1}]})),
        "messages[0].role: must be a string"
    );
    assert_eq!(
        refused(json!({"messages": ["hi"]})),
        "messages[0]: must be an object with `role` and `content`; got a string"
    );
    assert_eq!(
        refused(json!({"prompt": ["a", 2]})),
        "prompt[1]: must be a string; got a number"
    );
    assert_eq!(
        refused(json!({"prompt": 5})),
        "prompt: must be a string or an array of strings; got a number"
    );
    assert_eq!(refused(json!({"input": []})), "input: must not be empty");
    assert_eq!(
        refused(json!({"input": {"x": 1}})),
        "input: must be a string or an array; got an object"
    );
}
