//! Strict JSON: the layer every header and payload byte is read through.
//!
//! serde_json's `Map` silently keeps the last of two duplicate member names (RFC 7519 §4 says
//! reject or take the last; we reject). Every JSON object of a header or payload, at any depth,
//! kept or dropped, is read through [`Object`], the one place member names are compared. A duplicate stops the parse with an error and sets the parse's
//! [`Strict`] flag, which is how [`parse`] tells [`JsonError::Duplicate`] from
//! [`JsonError::Invalid`] (serde's error carries only a message).
//!
//! The visitors here are for values nobody keeps ([`Ignore`]) and values kept as a
//! `serde_json::Value` ([`ValueSeed`]). The header's and the claims' visitors live with them
//! (`header.rs`, `claims.rs`) and read their objects through [`Object`] too. Every visitor
//! carries the parse's `&Strict`.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why bytes were not accepted as JSON.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum JsonError {
    /// An object has the same member name twice (compared after unescaping).
    Duplicate,
    /// Not JSON, trailing bytes, or not the shape the visitor reads (an object).
    Invalid,
}

/// One parse's state shared by all its visitors: whether it stopped at a duplicate name.
#[derive(Debug, Default)]
pub(super) struct Strict {
    duplicate: Cell<bool>,
}

impl Strict {
    /// The error that stops the parse at a duplicate member name, recorded in the flag.
    fn duplicate<E: de::Error>(&self) -> E {
        self.duplicate.set(true);
        E::custom("duplicate object member name")
    }
}

/// Deserialize `bytes` (one JSON value, nothing after it) with `seed`, whose visitors must share
/// `strict`.
pub(super) fn parse<'de, S: DeserializeSeed<'de>>(
    bytes: &'de [u8],
    strict: &Strict,
    seed: S,
) -> Result<S::Value, JsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v)) {
        Ok(v) => Ok(v),
        // Nothing catches an error and goes on, so a set flag means this is the duplicate.
        Err(_) if strict.duplicate.get() => Err(JsonError::Duplicate),
        Err(_) => Err(JsonError::Invalid),
    }
}

/// One JSON object being read, member by member: `next_name`, then the value (`value` or
/// `skip_value`), and `record` to refuse a name seen before in this object. A visitor that keeps
/// a member in a slot of its own (one per name) refuses the second value itself, with
/// [`Object::duplicate`].
///
/// Where the name is recorded relative to its value is the visitor's: it decides which error a
/// duplicate name whose second value is also malformed reports. The header, the payload and
/// `_claim_names` record after the value; nested objects and filled slots refuse before it.
pub(super) struct Object<'s, 'de, A> {
    map: A,
    strict: &'s Strict,
    seen: SeenNames<'de>,
}

impl<'s, 'de, A: MapAccess<'de>> Object<'s, 'de, A> {
    #[inline]
    pub(super) fn new(strict: &'s Strict, map: A) -> Self {
        Object {
            map,
            strict,
            seen: SeenNames::default(),
        }
    }

    /// The next member's name, borrowed from the input when it has no escapes.
    #[inline]
    pub(super) fn next_name(&mut self) -> Result<Option<Cow<'de, str>>, A::Error> {
        Ok(self.map.next_key::<Name<'de>>()?.map(|Name(n)| n))
    }

    /// The current member's value.
    #[inline]
    pub(super) fn value<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.map.next_value_seed(seed)
    }

    /// The current member's value, checked and dropped.
    #[inline]
    pub(super) fn skip_value(&mut self) -> Result<(), A::Error> {
        self.map.next_value_seed(Ignore(self.strict))
    }

    /// Remember `name`; the duplicate error when this object had it already.
    #[inline]
    pub(super) fn record(&mut self, name: Cow<'de, str>) -> Result<(), A::Error> {
        if self.seen.insert(name) {
            Ok(())
        } else {
            Err(self.duplicate())
        }
    }

    /// The duplicate error, for a name the visitor tracks itself.
    #[inline]
    pub(super) fn duplicate(&self) -> A::Error {
        self.strict.duplicate()
    }
}

/// An object member name, borrowed from the input when it has no escapes.
struct Name<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The member names of one object so far. The first few live in a list on the stack (most
/// objects are small, and this runs for every object of every first-seen token); past that a
/// set, so that a hostile object with thousands of members stays linear-ish.
#[derive(Default)]
struct SeenNames<'de> {
    few: [Option<Cow<'de, str>>; SEEN_INLINE],
    many: BTreeSet<Cow<'de, str>>,
}

const SEEN_INLINE: usize = 8;

impl<'de> SeenNames<'de> {
    /// Add `name`; false when it was there already.
    #[inline]
    fn insert(&mut self, name: Cow<'de, str>) -> bool {
        if self.many.is_empty() {
            for slot in &mut self.few {
                match slot {
                    Some(seen) if *seen == name => return false,
                    Some(_) => {}
                    None => {
                        *slot = Some(name);
                        return true;
                    }
                }
            }
            // The list is full: everything moves to the set, which is used from now on.
            self.many
                .extend(self.few.iter_mut().filter_map(Option::take));
        }
        self.many.insert(name)
    }
}

/// A finite JSON number (serde_json never produces another, but `Value` cannot hold one).
#[inline]
pub(super) fn finite<E: de::Error>(v: f64) -> Result<Number, E> {
    Number::from_f64(v).ok_or_else(|| E::custom("non-finite number"))
}

/// Any JSON value, checked (syntax, duplicate names at any depth) and dropped.
#[derive(Clone, Copy)]
pub(super) struct Ignore<'s>(pub(super) &'s Strict);

impl<'de> DeserializeSeed<'de> for Ignore<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Ignore<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let mut obj = Object::new(self.0, map);
        while let Some(name) = obj.next_name()? {
            obj.record(name)?;
            obj.skip_value()?;
        }
        Ok(())
    }
}

/// Any JSON value as a `serde_json::Value`, refusing duplicate names at any depth.
#[derive(Clone, Copy)]
pub(super) struct ValueSeed<'s>(pub(super) &'s Strict);

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        finite(v).map(Value::Number)
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(e) = seq.next_element_seed(self)? {
            v.push(e);
        }
        Ok(Value::Array(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        let mut m = Map::new();
        let mut obj = Object::new(self.0, map);
        // The map itself knows its names: it is the seen set here.
        while let Some(name) = obj.next_name()? {
            match m.entry(name.into_owned()) {
                serde_json::map::Entry::Occupied(_) => return Err(obj.duplicate()),
                serde_json::map::Entry::Vacant(slot) => {
                    slot.insert(obj.value(self)?);
                }
            }
        }
        Ok(Value::Object(m))
    }
}

#[cfg(test)]
mod tests;
