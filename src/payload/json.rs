//! Strict JSON for request bodies: the JSON the model server accepts (Python's `json.loads`,
//! which MLflow's scoring server uses: `NaN`, `Infinity` and `-Infinity` included), minus what
//! is ambiguous (a duplicate object key, which Python resolves by taking the last value and
//! other parsers differently) and what is unbounded (nesting deeper than a limit).
//!
//! Tokens come from `jiter` (pydantic's JSON iterator: strings, escapes, numbers and positions
//! are its); this module builds the [`Value`] and owns the three refusals and the error path.
//! A non-finite number is kept for the format and schema checks as a number:
//! `NaN` as 0 and `±Infinity` as `±f64::MAX` (documented in docs/payload.md).

use jiter::{Jiter, JiterError, NumberAny, NumberInt, Peek};
use serde_json::{Map, Number, Value};

use super::path::{Path, Problem};

/// Deepest nesting of arrays and objects a body may have (the top-level value is depth 1).
pub const MAX_DEPTH: usize = 64;

/// Parse `body` as one JSON value (surrounding whitespace allowed), refusing duplicate keys and
/// nesting deeper than `max_depth`.
pub fn parse(body: &[u8], max_depth: usize) -> Result<Value, Problem> {
    let mut p = Parser {
        j: Jiter::new(body).with_allow_inf_nan(),
        path: Path::default(),
        max_depth,
    };
    let peek = p.j.peek().map_err(|e| p.syntax(&e))?;
    let v = p.value(peek, 1)?;
    p.j.finish().map_err(|e| p.syntax(&e))?;
    Ok(v)
}

struct Parser<'j> {
    j: Jiter<'j>,
    path: Path,
    max_depth: usize,
}

impl Parser<'_> {
    fn syntax(&self, e: &JiterError) -> Problem {
        let pos = self.j.error_position(e.index);
        Problem::new(
            &self.path,
            format!(
                "the body is not valid JSON (line {}, column {}): {}",
                pos.line, pos.column, e.error_type
            ),
        )
    }

    fn value(&mut self, peek: Peek, depth: usize) -> Result<Value, Problem> {
        match peek {
            Peek::Null => self.j.known_null().map(|()| Value::Null),
            Peek::True | Peek::False => self.j.known_bool(peek).map(Value::Bool),
            Peek::String => self.j.known_str().map(|s| Value::String(s.to_owned())),
            Peek::Array => return self.array(depth),
            Peek::Object => return self.object(depth),
            _ => self.j.known_number(peek).map(number),
        }
        .map_err(|e| self.syntax(&e))
    }

    fn deeper(&self, depth: usize) -> Result<(), Problem> {
        if depth > self.max_depth {
            return Err(Problem::new(
                &self.path,
                format!("nested deeper than {} levels", self.max_depth),
            ));
        }
        Ok(())
    }

    fn array(&mut self, depth: usize) -> Result<Value, Problem> {
        self.deeper(depth)?;
        let mut items = Vec::new();
        let mut next = self.j.known_array().map_err(|e| self.syntax(&e))?;
        while let Some(peek) = next {
            self.path.push_index(items.len());
            items.push(self.value(peek, depth + 1)?);
            self.path.pop();
            next = self.j.array_step().map_err(|e| self.syntax(&e))?;
        }
        Ok(Value::Array(items))
    }

    fn object(&mut self, depth: usize) -> Result<Value, Problem> {
        self.deeper(depth)?;
        let mut map = Map::new();
        let first = self.j.known_object().map(|k| k.map(str::to_owned));
        let mut key = first.map_err(|e| self.syntax(&e))?;
        while let Some(k) = key {
            self.path.push_key(&k);
            if map.contains_key(&k) {
                return Err(Problem::new(&self.path, "duplicate key".to_string()));
            }
            let peek = self.j.peek().map_err(|e| self.syntax(&e))?;
            let v = self.value(peek, depth + 1)?;
            self.path.pop();
            map.insert(k, v);
            let next = self.j.next_key().map(|k| k.map(str::to_owned));
            key = next.map_err(|e| self.syntax(&e))?;
        }
        Ok(Value::Object(map))
    }
}

/// A parsed number as JSON: integers exactly (big ones as floats), non-finite floats as the
/// module docs say.
fn number(n: NumberAny) -> Value {
    let f = match n {
        NumberAny::Int(NumberInt::Int(i)) => return Value::Number(i.into()),
        // jiter reads integers of 19 digits and more as big integers: exact when they fit
        // 64 bits, else as the nearest float (as Python would hand them to numpy).
        NumberAny::Int(NumberInt::BigInt(b)) => {
            if let Ok(i) = i64::try_from(&b) {
                return Value::Number(i.into());
            }
            if let Ok(u) = u64::try_from(&b) {
                return Value::Number(u.into());
            }
            b.to_string().parse::<f64>().unwrap_or(f64::MAX)
        }
        NumberAny::Float(f) => f,
    };
    let finite = if f.is_nan() {
        0.0
    } else if f.is_infinite() {
        f64::MAX.copysign(f)
    } else {
        f
    };
    Number::from_f64(finite).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Value {
        parse(s.as_bytes(), MAX_DEPTH).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn err(s: &str) -> String {
        parse(s.as_bytes(), MAX_DEPTH).unwrap_err().to_string()
    }

    #[test]
    fn python_json_values_parse() {
        assert_eq!(
            ok(r#" {"a": [1, -2.5, true, null, "x\u00e9\n"], "b": {}} "#),
            serde_json::json!({"a": [1, -2.5, true, null, "xé\n"], "b": {}})
        );
        assert_eq!(
            ok("[NaN, Infinity, -Infinity]"),
            serde_json::json!([0.0, f64::MAX, -f64::MAX])
        );
        assert_eq!(
            ok("123456789012345678901234567890"),
            serde_json::json!(1.2345678901234568e29)
        );
        // Beyond f64's range: valid JSON that Python reads as infinity (serde_json refuses it);
        // accepted, as MLflow accepts it (fuzz/regressions/payload_check/huge-exponent-number).
        assert!(parse(b"[1e999, -1e999]", MAX_DEPTH).is_ok());
    }

    /// Python's `json.loads` accepts a lone surrogate escape (`"\ud800"`); jiter refuses it
    /// (it decodes to UTF-8, which cannot hold one). Documented in docs/payload.md.
    #[test]
    fn lone_surrogates_are_refused() {
        let e = err(r#"{"inputs": "\ud800"}"#);
        assert!(e.starts_with("inputs: the body is not valid JSON"), "{e}");
        assert_eq!(ok(r#""\ud83d\ude00""#), serde_json::json!("😀"));
    }

    #[test]
    fn duplicate_keys_are_refused_at_their_path() {
        assert_eq!(err(r#"{"a": 1, "a": 2}"#), "a: duplicate key");
        assert_eq!(
            err(r#"{"inputs": [{"x": 1}, {"x": 1, "y": 2, "x": 3}]}"#),
            "inputs[1].x: duplicate key"
        );
    }

    #[test]
    fn depth_is_bounded() {
        let deep = |n: usize| "[".repeat(n) + &"]".repeat(n);
        assert!(parse(deep(MAX_DEPTH).as_bytes(), MAX_DEPTH).is_ok());
        let e = parse(deep(MAX_DEPTH + 1).as_bytes(), MAX_DEPTH)
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("nested deeper than 64 levels"), "{e}");
        // Far deeper than any stack would allow without the bound: refused, no overflow.
        assert!(parse(deep(1_000_000).as_bytes(), MAX_DEPTH).is_err());
    }

    #[test]
    fn malformed_json_says_where() {
        for bad in [
            "",
            "{",
            r#"{"a": 1,}"#,
            "[1 2]",
            "nan",
            "'x'",
            r#"{"a": 1} x"#,
            "[01]",
            "\"\t\"",
            r#"{"a": tru}"#,
            "[1,]",
        ] {
            let e = err(bad);
            assert!(e.contains("not valid JSON (line 1, column"), "{bad:?}: {e}");
        }
        let e = err("{\"inputs\": [1, 2, }");
        assert!(
            e.starts_with("inputs[2]: ") || e.starts_with("inputs: "),
            "{e}"
        );
        assert!(parse(b"\xff", MAX_DEPTH).is_err());
    }

    fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| Value::Number(i.into())),
            any::<u64>().prop_map(|u| Value::Number(u.into())),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
            "\\PC{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::btree_map("\\PC{0,8}", inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Whatever serde_json writes (finite numbers, no duplicate keys) parses back to the
        /// same value, compact or pretty.
        #[test]
        fn serde_json_output_round_trips(v in arb_json()) {
            proptest::prop_assert_eq!(parse(v.to_string().as_bytes(), MAX_DEPTH).unwrap(), v.clone());
            let pretty = serde_json::to_string_pretty(&v).unwrap();
            proptest::prop_assert_eq!(parse(pretty.as_bytes(), MAX_DEPTH).unwrap(), v);
        }

        /// Arbitrary bytes never panic, and a refusal always says where and why.
        #[test]
        fn arbitrary_bytes_are_judged(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            if let Err(p) = parse(&b, MAX_DEPTH) {
                proptest::prop_assert!(!p.message.is_empty());
            }
        }
    }
}
