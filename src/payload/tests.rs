use std::sync::Arc;

use serde_json::json;

use super::*;

fn settings() -> Settings {
    Settings {
        schema: None,
        max_bytes: None,
        oversize: Oversize::Refuse,
    }
}

fn body(bytes: &[u8]) -> Body<'_> {
    Body {
        bytes,
        announced: Some(bytes.len() as u64),
        content_type: Some("application/json"),
    }
}

#[test]
fn valid_bodies_pass_with_nan_and_infinity() {
    let b = br#"{"dataframe_split": {"columns": ["x"], "data": [[NaN], [Infinity], [-Infinity]]}}"#;
    assert_eq!(
        check(&settings(), None, &body(b)),
        Outcome::Valid("dataframe_split")
    );
    let mut b = body(br#"{"prompt": "hi"}"#);
    b.content_type = Some("Application/JSON; charset=UTF-8");
    assert_eq!(check(&settings(), None, &b), Outcome::Valid("prompt"));
    b.content_type = None;
    b.announced = None;
    assert_eq!(check(&settings(), None, &b), Outcome::Valid("prompt"));
}

#[test]
fn invalid_bodies_say_why() {
    let invalid = |b: &[u8]| match check(&settings(), None, &body(b)) {
        Outcome::Invalid(p) => p.to_string(),
        other => panic!("{other:?}"),
    };
    assert_eq!(invalid(b"  "), "the body is empty; send a JSON object");
    assert_eq!(
        invalid(br#"{"inputs": [1], "inputs": [2]}"#),
        "inputs: duplicate key"
    );
    assert!(invalid(br#"{"inputs": [1,]}"#).contains("not valid JSON"));
    let mut csv = body(b"a,b\n1,2\n");
    csv.content_type = Some("text/csv");
    assert_eq!(
        check(&settings(), None, &csv),
        Outcome::Invalid(Problem::body(
            "Content-Type must be application/json; got \"text/csv\""
        ))
    );
    csv.content_type = Some("application/json; format=pandas-split");
    assert!(
        matches!(check(&settings(), None, &csv), Outcome::Invalid(p) if p.message.contains("format=pandas-split"))
    );
}

#[test]
fn size_limit_and_cut_bodies() {
    let b = br#"{"inputs": [1, 2, 3]}"#;
    let limited = Settings {
        max_bytes: Some(10),
        ..settings()
    };
    assert_eq!(
        check(&limited, None, &body(b)),
        Outcome::TooLarge("the body has 21 bytes; this endpoint accepts at most 10".into())
    );
    // The announced length counts even when less arrived.
    let cut = Body {
        bytes: &b[..5],
        announced: Some(100_000),
        content_type: None,
    };
    assert!(
        matches!(check(&limited, None, &cut), Outcome::TooLarge(m) if m.contains("100000 bytes"))
    );
    assert!(matches!(
        check(&settings(), None, &cut),
        Outcome::TooLarge(m) if m.contains("more than the gateway can check (5 arrived)")
    ));
    let forward = Settings {
        oversize: Oversize::Forward,
        ..settings()
    };
    assert_eq!(check(&forward, None, &cut), Outcome::Unchecked);
    // A body within its announced length is checked whatever the setting.
    assert_eq!(check(&forward, None, &body(b)), Outcome::Valid("inputs"));
}

#[test]
fn schema_is_applied_after_the_format() {
    let schema = Arc::new(
        Schema::compile(
            "t",
            json!({"properties": {"inputs": {"items": {"type": "integer"}}}}),
        )
        .unwrap(),
    );
    let s = Settings {
        schema: Some(SchemaSource::File(schema.clone())),
        ..settings()
    };
    assert_eq!(
        check(&s, Some(&schema), &body(br#"{"inputs": [1, 2]}"#)),
        Outcome::Valid("inputs")
    );
    match check(&s, Some(&schema), &body(br#"{"inputs": [1, 2.5]}"#)) {
        Outcome::Invalid(p) => assert_eq!(p.path, "inputs[1]"),
        other => panic!("{other:?}"),
    }
    // The format is checked first: a schema cannot admit a body the server would refuse.
    assert!(
        matches!(check(&s, Some(&schema), &body(br#"{"x": 1}"#)), Outcome::Invalid(p) if p.message.contains("input fields"))
    );
}

/// Without a schema the body is only scanned ([`json::scan`]); with one it is parsed into a
/// `Value` ([`json::parse`]). Both must judge every body the same, message and path included.
fn same_without_and_with_a_tree(b: &[u8]) {
    let accept_all = Schema::compile("all", json!({})).unwrap();
    assert_eq!(
        check_json(b, None),
        check_json(b, Some(&accept_all)),
        "{}",
        String::from_utf8_lossy(b)
    );
}

#[test]
fn scanning_judges_as_parsing() {
    for b in [
        r#"{"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3]]}}"#,
        r#"{"dataframe_split": {"data": [[1, 2], {"x": 1}, [3]], "columns": ["a", "b"]}}"#,
        r#"{"dataframe_split": {"data": [[1], [1, 2]], "columns": ["a"], "index": [0]}}"#,
        r#"{"dataframe_split": {"zz": 1, "data": [], "b": 2, "columns": 3}}"#,
        r#"{"dataframe_split": {"columns": 1, "index": "x"}}"#,
        r#"{"dataframe_split": {"index": [1], "data": [[1]]}}"#,
        r#"{"dataframe_split": {"columns": []}}"#,
        r#"{"dataframe_split": []}"#,
        r#"{"dataframe_records": [{"a": 1}, [1], {"b": 2}]}"#,
        r#"{"dataframe_records": {"a": 1}}"#,
        r#"{"instances": [[1, 2]], "params": {"x": [1, {"y": null}]}}"#,
        r#"{"instances": {"a": 1}}"#,
        r#"{"inputs": null}"#,
        r#"{"inputs": {"a": [1, NaN, -Infinity]}}"#,
        r#"{"messages": [{"role": "user", "content": "hi"}, {"content": "x"}]}"#,
        r#"{"messages": [{"role": 1}]}"#,
        r#"{"messages": [1]}"#,
        r#"{"messages": []}"#,
        r#"{"prompt": ["a", 2]}"#,
        r#"{"prompt": 2}"#,
        r#"{"input": []}"#,
        r#"{"input": 1.5e999}"#,
        r#"{"input": "x", "prompt": "y"}"#,
        r#"{"params": 1}"#,
        r#"[1, 2]"#,
        r#""text""#,
        r#"{"inputs": [1], "inputs": [2]}"#,
        r#"{"inputs": {"a": 1, "b": 2, "a": 3}}"#,
        r#"{"inputs": [1, 2,]}"#,
        r#"{"inputs": "\ud800"}"#,
        r#"{"inputs": [1]} x"#,
        "",
        " \n",
        "{\"a\\nb\": {\"\u{e9}\": [1, {\"0\": tru}]}}",
    ] {
        same_without_and_with_a_tree(b.as_bytes());
    }
    let deep = |n: usize| format!(r#"{{"inputs": {}{}}}"#, "[".repeat(n), "]".repeat(n));
    same_without_and_with_a_tree(deep(63).as_bytes());
    same_without_and_with_a_tree(deep(64).as_bytes());
    // Objects past the linear duplicate search, with the duplicate at either end.
    for (at, n) in [(0, 40), (39, 40), (16, 17), (5, 16)] {
        let mut keys: Vec<String> = (0..n).map(|i| format!("\"k{i}\": {i}")).collect();
        keys.push(format!("\"k{at}\": 0"));
        let b = format!(r#"{{"inputs": {{{}}}}}"#, keys.join(", "));
        same_without_and_with_a_tree(b.as_bytes());
        assert!(check_json(b.as_bytes(), None).is_err_and(|p| p.message == "duplicate key"));
    }
}

proptest::proptest! {
    /// Bodies built from the input formats' pieces, valid or not, judged the same.
    #[test]
    fn scanning_judges_random_bodies_as_parsing(parts in proptest::collection::vec(
        proptest::prop_oneof![
            proptest::strategy::Just("{"), proptest::strategy::Just("}"),
            proptest::strategy::Just("["), proptest::strategy::Just("]"),
            proptest::strategy::Just(","), proptest::strategy::Just(":"),
            proptest::strategy::Just("\"dataframe_split\""), proptest::strategy::Just("\"data\""),
            proptest::strategy::Just("\"columns\""), proptest::strategy::Just("\"index\""),
            proptest::strategy::Just("\"messages\""), proptest::strategy::Just("\"role\""),
            proptest::strategy::Just("\"prompt\""), proptest::strategy::Just("\"input\""),
            proptest::strategy::Just("\"inputs\""), proptest::strategy::Just("\"dataframe_records\""),
            proptest::strategy::Just("\"x\""), proptest::strategy::Just("1"),
            proptest::strategy::Just("null"), proptest::strategy::Just("NaN"),
        ],
        0..40,
    )) {
        same_without_and_with_a_tree(parts.concat().as_bytes());
    }
}
