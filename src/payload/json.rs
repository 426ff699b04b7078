//! Strict JSON for request bodies: the JSON the model server accepts (Python's `json.loads`,
//! which MLflow's scoring server uses: `NaN`, `Infinity` and `-Infinity` included), minus what
//! is ambiguous (a duplicate object key, which Python resolves by taking the last value and
//! other parsers differently) and what is unbounded (nesting deeper than a limit).
//!
//! Tokens come from `jiter` (pydantic's JSON iterator: strings, escapes, numbers and positions
//! are its); this module owns the three refusals and the error path ([`Strict`]), and either
//! builds the [`Value`] ([`parse`], for a JSON Schema) or only the little the input-format
//! check reads ([`scan`], a [`Skeleton`]): without a schema, no string, number or container
//! of the body is copied. A non-finite number is kept for the format and schema checks as a
//! number: `NaN` as 0 and `±Infinity` as `±f64::MAX` (documented in docs/payload.md).

use std::collections::HashSet;

use jiter::{Jiter, JiterError, NumberAny, NumberInt, Peek};
use serde_json::{Map, Number, Value};

use super::path::{Path, Problem};
use super::skeleton::{Keep, Skeleton};

/// Deepest nesting of arrays and objects a body may have (the top-level value is depth 1).
pub const MAX_DEPTH: usize = 64;

/// Keys of one object compared one by one up to this many; past it, through a hash set.
const LINEAR_KEYS: usize = 16;

/// Parse `body` as one JSON value (surrounding whitespace allowed), refusing duplicate keys and
/// nesting deeper than `max_depth`.
pub fn parse(body: &[u8], max_depth: usize) -> Result<Value, Problem> {
    Strict::run(body, max_depth, |s, peek| s.value(peek, 1))
}

/// [`parse`]'s checks, keeping only what the input-format check reads.
pub fn scan(body: &[u8], max_depth: usize) -> Result<Skeleton, Problem> {
    Strict::run(body, max_depth, |s, peek| s.skeleton(peek, 1, Keep::Body))
}

/// One step of the path to where the parser is (rendered only for a refusal).
#[derive(Clone, Copy)]
enum Seg {
    Index(usize),
    /// The key at this index of [`Strict::keys`].
    Key(usize),
}

/// The strict parser: jiter's tokens, the depth bound, duplicate keys, and where it is.
struct Strict<'j> {
    j: Jiter<'j>,
    max_depth: usize,
    path: Vec<Seg>,
    /// The keys of the objects being read, back to back in `text` (`spans` index it).
    text: String,
    spans: Vec<(usize, usize)>,
}

impl<'j> Strict<'j> {
    fn run<T>(
        body: &'j [u8],
        max_depth: usize,
        top: impl FnOnce(&mut Self, Peek) -> Result<T, Problem>,
    ) -> Result<T, Problem> {
        let mut s = Strict {
            j: Jiter::new(body).with_allow_inf_nan(),
            max_depth,
            path: Vec::new(),
            text: String::new(),
            spans: Vec::new(),
        };
        let peek = s.j.peek().map_err(|e| s.syntax(&e))?;
        let v = top(&mut s, peek)?;
        s.j.finish().map_err(|e| s.syntax(&e))?;
        Ok(v)
    }

    fn key_text(&self, i: usize) -> &str {
        let (a, b) = self.spans[i];
        &self.text[a..b]
    }

    /// The key of the member being read.
    fn key(&self) -> &str {
        self.key_text(self.spans.len() - 1)
    }

    fn problem(&self, message: String) -> Problem {
        let mut path = Path::default();
        for seg in &self.path {
            match *seg {
                Seg::Index(i) => path.push_index(i),
                Seg::Key(k) => path.push_key(self.key_text(k)),
            }
        }
        Problem::new(&path, message)
    }

    fn syntax(&self, e: &JiterError) -> Problem {
        let pos = self.j.error_position(e.index);
        self.problem(format!(
            "the body is not valid JSON (line {}, column {}): {}",
            pos.line, pos.column, e.error_type
        ))
    }

    fn deeper(&self, depth: usize) -> Result<(), Problem> {
        if depth > self.max_depth {
            return Err(self.problem(format!("nested deeper than {} levels", self.max_depth)));
        }
        Ok(())
    }

    /// A scalar, checked and dropped; `Some(peek)` for an array or object, still to be read.
    fn scalar(&mut self, peek: Peek) -> Result<Option<Peek>, Problem> {
        match peek {
            Peek::Null => self.j.known_null(),
            Peek::True | Peek::False => self.j.known_bool(peek).map(drop),
            Peek::String => self.j.known_str().map(drop),
            Peek::Array | Peek::Object => return Ok(Some(peek)),
            _ => self.j.known_number(peek).map(drop),
        }
        .map_err(|e| self.syntax(&e))?;
        Ok(None)
    }

    /// The items of an array (its `[` next), each handed to `item` with its peek and index.
    fn array(
        &mut self,
        depth: usize,
        mut item: impl FnMut(&mut Self, Peek, usize) -> Result<(), Problem>,
    ) -> Result<usize, Problem> {
        self.deeper(depth)?;
        let mut next = self.j.known_array().map_err(|e| self.syntax(&e))?;
        let mut i = 0;
        while let Some(peek) = next {
            self.path.push(Seg::Index(i));
            item(self, peek, i)?;
            self.path.pop();
            i += 1;
            next = self.j.array_step().map_err(|e| self.syntax(&e))?;
        }
        Ok(i)
    }

    /// The members of an object (its `{` next), each handed to `member` with its value's peek
    /// (the key is [`Strict::key`]); a key seen before in the object is refused.
    fn object(
        &mut self,
        depth: usize,
        mut member: impl FnMut(&mut Self, Peek) -> Result<(), Problem>,
    ) -> Result<usize, Problem> {
        self.deeper(depth)?;
        let (first_span, first_byte) = (self.spans.len(), self.text.len());
        let mut many: Option<HashSet<Box<str>>> = None;
        let mut key = match self.j.known_object() {
            Ok(k) => k.map(|k| push_key(&mut self.text, &mut self.spans, k)),
            Err(e) => return Err(self.syntax(&e)),
        };
        let mut n = 0;
        while key.is_some() {
            n += 1;
            let k = self.spans.len() - 1;
            self.path.push(Seg::Key(k));
            if self.seen_before(first_span, &mut many) {
                return Err(self.problem("duplicate key".to_string()));
            }
            let peek = self.j.peek().map_err(|e| self.syntax(&e))?;
            member(self, peek)?;
            self.path.pop();
            key = match self.j.next_key() {
                Ok(k) => k.map(|k| push_key(&mut self.text, &mut self.spans, k)),
                Err(e) => return Err(self.syntax(&e)),
            };
        }
        self.spans.truncate(first_span);
        self.text.truncate(first_byte);
        Ok(n)
    }

    /// Whether the last key pushed is one of the object's earlier ones (those from `first`).
    fn seen_before(&self, first: usize, many: &mut Option<HashSet<Box<str>>>) -> bool {
        let last = self.spans.len() - 1;
        let key = self.key_text(last);
        if let Some(set) = many {
            return !set.insert(key.into());
        }
        if last - first < LINEAR_KEYS {
            return (first..last).any(|i| self.key_text(i) == key);
        }
        let set: HashSet<Box<str>> = (first..=last).map(|i| self.key_text(i).into()).collect();
        let dup = set.len() <= last - first;
        *many = Some(set);
        dup
    }

    fn value(&mut self, peek: Peek, depth: usize) -> Result<Value, Problem> {
        match peek {
            Peek::Null => self.j.known_null().map(|()| Value::Null),
            Peek::True | Peek::False => self.j.known_bool(peek).map(Value::Bool),
            Peek::String => self.j.known_str().map(|s| Value::String(s.to_owned())),
            Peek::Array => {
                let mut items = Vec::new();
                self.array(depth, |s, peek, _| {
                    items.push(s.value(peek, depth + 1)?);
                    Ok(())
                })?;
                return Ok(Value::Array(items));
            }
            Peek::Object => {
                let mut map = Map::new();
                self.object(depth, |s, peek| {
                    let k = s.key().to_owned();
                    map.insert(k, s.value(peek, depth + 1)?);
                    Ok(())
                })?;
                return Ok(Value::Object(map));
            }
            _ => self.j.known_number(peek).map(number),
        }
        .map_err(|e| self.syntax(&e))
    }

    /// A value checked and dropped.
    fn skip(&mut self, peek: Peek, depth: usize) -> Result<(), Problem> {
        match self.scalar(peek)? {
            None => Ok(()),
            Some(Peek::Array) => self
                .array(depth, |s, peek, _| s.skip(peek, depth + 1))
                .map(drop),
            Some(_) => self
                .object(depth, |s, peek| s.skip(peek, depth + 1))
                .map(drop),
        }
    }

    /// A value checked, with what `keep` says the format check reads of it.
    fn skeleton(&mut self, peek: Peek, depth: usize, keep: Keep) -> Result<Skeleton, Problem> {
        let mut out = Skeleton::of(peek);
        match self.scalar(peek)? {
            None => {}
            Some(Peek::Array) => {
                let items = keep.items();
                let len = self.array(depth, |s, peek, _| match items {
                    Some(k) => {
                        out.items.push(s.skeleton(peek, depth + 1, k)?);
                        Ok(())
                    }
                    None => s.skip(peek, depth + 1),
                })?;
                out.len = len;
            }
            Some(_) => {
                let len = self.object(depth, |s, peek| match keep.member(s.key()) {
                    Some((name, k)) => {
                        let v = s.skeleton(peek, depth + 1, k)?;
                        out.fields.push((name, v));
                        Ok(())
                    }
                    None => {
                        if keep.notes_other_keys() {
                            out.note_other(s.key());
                        }
                        s.skip(peek, depth + 1)
                    }
                })?;
                out.len = len;
            }
        }
        Ok(out)
    }
}

/// Copy key `k` to the end of `text` and record its span.
fn push_key(text: &mut String, spans: &mut Vec<(usize, usize)>, k: &str) {
    let start = text.len();
    text.push_str(k);
    spans.push((start, text.len()));
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
        let e = scan(deep(1_000_000).as_bytes(), MAX_DEPTH).unwrap_err();
        assert!(e.message.ends_with("nested deeper than 64 levels"), "{e}");
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
