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
