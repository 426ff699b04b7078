use super::*;

fn ignore(s: &str) -> Result<(), JsonError> {
    let strict = Strict::default();
    parse(s.as_bytes(), &strict, Ignore(&strict))
}

fn value(s: &str) -> Result<Value, JsonError> {
    let strict = Strict::default();
    parse(s.as_bytes(), &strict, ValueSeed(&strict))
}

#[test]
fn duplicates_are_reported_as_such_at_any_depth() {
    for dup in [
        r#"{"a":1,"a":2}"#,
        r#"{"a":1,"\u0061":2}"#,
        r#"[1,{"x":{"b":[],"a":null,"a":{}}}]"#,
        r#"{"o":{"k":{"k":1,"k":1}}}"#,
        // Nested objects refuse the name before reading its value.
        r#"{"a":1,"a":tru}"#,
    ] {
        assert_eq!(ignore(dup), Err(JsonError::Duplicate), "{dup}");
        assert_eq!(value(dup), Err(JsonError::Duplicate), "{dup}");
    }
}

#[test]
fn syntax_errors_are_invalid_whatever_they_say() {
    for bad in [
        "",
        "{",
        "tru",
        "{} x",
        r#"{"a":1,}"#,
        "1e999",
        // The text of the duplicate error, as data, is just data.
        r#"{"duplicate object member name":"duplicate object member name""#,
        r#"["duplicate object member name" "#,
    ] {
        assert_eq!(ignore(bad), Err(JsonError::Invalid), "{bad:?}");
        assert_eq!(value(bad), Err(JsonError::Invalid), "{bad:?}");
    }
    // Same name in sibling objects, or as a value: no duplicate.
    let ok = r#"{"a":{"a":"a"},"b":[{"a":1},{"a":2}],"duplicate object member name":1}"#;
    assert_eq!(ignore(ok), Ok(()));
    assert_eq!(value(ok), Ok(serde_json::from_str::<Value>(ok).unwrap()));
}

#[test]
fn values_are_what_serde_json_builds() {
    let s = r#"{"s":"x\n\u00e9","n":[1,-2,1.5,18446744073709551615],"b":[true,false,null],"o":{"e":{}}}"#;
    assert_eq!(value(s), Ok(serde_json::from_str::<Value>(s).unwrap()));
}

/// Names are found before and after the inline list spills into the set.
#[test]
fn many_members() {
    let object = |n: usize, dup: Option<(usize, usize)>| {
        let mut names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
        if let Some((a, b)) = dup {
            names[b] = names[a].clone();
        }
        let body: Vec<String> = names.iter().map(|k| format!(r#""{k}":1"#)).collect();
        format!("{{{}}}", body.join(","))
    };
    for n in [0, 1, SEEN_INLINE, SEEN_INLINE + 1, 40] {
        assert_eq!(ignore(&object(n, None)), Ok(()), "{n}");
    }
    for dup in [
        (0, 1),
        (0, 7),
        (2, 8),
        (7, 8),
        (5, 30),
        (20, 39),
        (39 - 1, 39),
    ] {
        assert_eq!(
            ignore(&object(40, Some(dup))),
            Err(JsonError::Duplicate),
            "{dup:?}"
        );
    }
    let mut seen = SeenNames::default();
    for i in 0..20 {
        assert!(seen.insert(Cow::Owned(format!("n{i}"))));
        assert!(!seen.insert(Cow::Borrowed("n0")));
    }
}
