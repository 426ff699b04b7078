//! Reading the parsed TOML tree into typed sections, one key at a time, so that every value of
//! the wrong shape is reported (not just the first one serde meets), each with its exact key
//! path (`issuer[0].algorithms[2]`, `upstream.serving-sp.token_url`, `rule[3].claims["x"]`)
//! and its line and column.
//!
//! A section's `read` function asks for each of its keys ([`Table::get`], [`Table::set`],
//! [`Table::list`]...); whatever is left in the table afterwards is an unknown key. A table
//! in which any value had the wrong shape reads as `None`: its semantic checks are skipped
//! (they would judge a value that is not there), those of every other table still run.

use std::collections::HashMap;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use super::files::FileDirs;
use super::{Position, Problem};

/// Everything found while loading one document.
pub(crate) struct Cx<'i> {
    text: &'i str,
    problems: Vec<Problem>,
    /// Byte offset of every key path read (the value, or a table's header): problems found
    /// by the semantic checks are located by their key.
    offsets: HashMap<String, usize>,
    /// Where relative `*_file` names are looked up.
    pub(crate) dirs: FileDirs,
}

impl<'i> Cx<'i> {
    pub(crate) fn new(text: &'i str, dirs: FileDirs) -> Self {
        Cx {
            text,
            problems: Vec::new(),
            offsets: HashMap::new(),
            dirs,
        }
    }

    /// Report a problem at `key`, located at that key's value when it was read (else at the
    /// nearest enclosing table).
    pub(crate) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let key = key.into();
        let mut k = key.as_str();
        let offset = loop {
            if let Some(&o) = self.offsets.get(k) {
                break Some(o);
            }
            match parent(k) {
                Some(p) => k = p,
                None => break None,
            }
        };
        let at = offset.map(|o| self.position(o));
        self.problems.push(Problem::located(key, message, at));
    }

    pub(crate) fn push_at(&mut self, key: impl Into<String>, offset: usize, message: &str) {
        let message = message.trim().replace('\n', " ");
        let at = Some(self.position(offset));
        self.problems.push(Problem::located(key, message, at));
    }

    pub(crate) fn has_problems(&self) -> bool {
        !self.problems.is_empty()
    }

    /// Every problem, in file order (those without a position last, in the order found).
    pub(crate) fn into_problems(mut self) -> Vec<Problem> {
        self.problems.sort_by_key(|p| (p.at.is_none(), p.at));
        self.problems
    }

    /// 1-based line and column (in characters) of byte `offset`.
    pub(crate) fn position(&self, offset: usize) -> Position {
        let text = self.text;
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = text[line_start..offset].chars().count() + 1;
        Position { line, column }
    }
}

/// `rule[0].paths[1]` -> `rule[0].paths` -> `rule[0]` -> `rule` -> none.
fn parent(key: &str) -> Option<&str> {
    let cut = if key.ends_with(']') {
        key.rfind('[')
    } else {
        key.rfind('.')
    };
    cut.map(|i| &key[..i])
}

/// One TOML table being read.
pub(crate) struct Table<'c, 'i> {
    cx: &'c mut Cx<'i>,
    /// Key path of the table itself; empty for the document.
    path: String,
    /// Its header (or the document's start).
    offset: usize,
    /// The keys not read yet.
    entries: DeTable<'i>,
    /// The keys asked for, for the "unknown field" message.
    known: Vec<&'static str>,
    /// No value had the wrong shape.
    ok: bool,
}

impl<'c, 'i> Table<'c, 'i> {
    /// The whole document.
    pub(crate) fn document(cx: &'c mut Cx<'i>, doc: DeTable<'i>) -> Self {
        Table {
            cx,
            path: String::new(),
            offset: 0,
            entries: doc,
            known: Vec::new(),
            ok: true,
        }
    }

    /// Key path of `key` in this table.
    pub(crate) fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// A value of the wrong shape at `key`: reported, and the table is not usable.
    pub(crate) fn invalid(&mut self, key: impl Into<String>, offset: usize, message: &str) {
        self.ok = false;
        self.cx.push_at(key, offset, message);
    }

    /// A problem with the value of `key` found after reading it (the table stays usable).
    pub(crate) fn problem(&mut self, key: &str, message: impl Into<String>) {
        let k = self.key(key);
        self.cx.push(k, message);
    }

    /// Where relative file names are looked up.
    pub(crate) fn dirs(&self) -> &super::files::FileDirs {
        &self.cx.dirs
    }

    fn take(&mut self, key: &'static str) -> Option<Spanned<DeValue<'i>>> {
        self.known.push(key);
        let v = self.entries.remove(key)?;
        self.cx.offsets.insert(self.key(key), v.span().start);
        Some(v)
    }

    fn value<T: DeserializeOwned>(&mut self, path: String, v: Spanned<DeValue<'i>>) -> Option<T> {
        let start = v.span().start;
        match T::deserialize(ValueDeserializer::from(v)) {
            Ok(t) => Some(t),
            Err(e) => {
                let at = e.span().map_or(start, |s| s.start);
                self.invalid(path, at, e.message());
                None
            }
        }
    }

    fn wrong_type(&mut self, path: String, v: &Spanned<DeValue<'i>>, expected: &str) {
        let what = v.get_ref().type_str();
        self.invalid(
            path,
            v.span().start,
            &format!("invalid type: {what}, expected {expected}"),
        );
    }

    /// The value of `key`, if present and of the right shape.
    pub(crate) fn get<T: DeserializeOwned>(&mut self, key: &'static str) -> Option<T> {
        let v = self.take(key)?;
        self.value(self.key(key), v)
    }

    /// Report `key`, when present, as meaningless here (`message` says why), at its value.
    pub(crate) fn refuse(&mut self, key: &'static str, message: &str) {
        if let Some(v) = self.take(key) {
            let at = v.span().start;
            self.invalid(self.key(key), at, message);
        }
    }

    /// Overwrite the default in `slot` with the value of `key`, if present and well-formed.
    pub(crate) fn set<T: DeserializeOwned>(&mut self, key: &'static str, slot: &mut T) {
        if let Some(v) = self.get(key) {
            *slot = v;
        }
    }

    /// A key without a default.
    pub(crate) fn required<T: DeserializeOwned>(&mut self, key: &'static str) -> Option<T> {
        if !self.entries.contains_key(key) {
            self.known.push(key);
            let at = self.offset;
            self.invalid(self.key(key), at, &format!("missing field `{key}`"));
            return None;
        }
        self.get(key)
    }

    /// [`Table::list`] for a key without a default.
    pub(crate) fn required_list<T: DeserializeOwned>(
        &mut self,
        key: &'static str,
    ) -> Option<Vec<T>> {
        if !self.entries.contains_key(key) {
            return self.required(key);
        }
        self.list(key)
    }

    /// An array, each element read on its own (every bad one reported at `key[i]`). `None`
    /// when absent or when any element is bad.
    pub(crate) fn list<T: DeserializeOwned>(&mut self, key: &'static str) -> Option<Vec<T>> {
        let v = self.take(key)?;
        let path = self.key(key);
        if !matches!(v.get_ref(), DeValue::Array(_)) {
            self.wrong_type(path, &v, "an array");
            return None;
        }
        let DeValue::Array(items) = v.into_inner() else {
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut all = true;
        for (i, item) in items.into_iter().enumerate() {
            let p = format!("{path}[{i}]");
            self.cx.offsets.insert(p.clone(), item.span().start);
            match self.value(p, item) {
                Some(t) => out.push(t),
                None => all = false,
            }
        }
        all.then_some(out)
    }

    /// A table of `name = value` entries whose names are parsed too (`claims`), each at
    /// `key["name"]`. `None` when absent or when any entry is bad.
    pub(crate) fn entries<K, V>(&mut self, key: &'static str) -> Option<Vec<(K, V)>>
    where
        K: FromStr<Err = String>,
        V: DeserializeOwned,
    {
        let v = self.take(key)?;
        let path = self.key(key);
        if !matches!(v.get_ref(), DeValue::Table(_)) {
            self.wrong_type(path, &v, "a table");
            return None;
        }
        let DeValue::Table(table) = v.into_inner() else {
            return None;
        };
        let mut out = Vec::with_capacity(table.len());
        let mut all = true;
        for (name, value) in table {
            let p = format!("{path}[{:?}]", name.get_ref());
            self.cx.offsets.insert(p.clone(), value.span().start);
            let k = match name.get_ref().parse::<K>() {
                Ok(k) => Some(k),
                Err(e) => {
                    self.invalid(p.clone(), name.span().start, &e);
                    None
                }
            };
            match (k, self.value::<V>(p, value)) {
                (Some(k), Some(v)) => out.push((k, v)),
                _ => all = false,
            }
        }
        all.then_some(out)
    }

    /// The sub-table `key`, read by `read` (an absent table reads as an empty one, so
    /// defaults apply). `None` when it is not a table or holds a bad value.
    pub(crate) fn table<T>(
        &mut self,
        key: &'static str,
        read: impl FnOnce(&mut Table<'_, 'i>) -> T,
    ) -> Option<T> {
        match self.take(key) {
            Some(v) => self.sub(self.key(key), v, read),
            None => {
                let path = self.key(key);
                let offset = self.offset;
                self.read_sub(path, offset, DeTable::default(), read)
            }
        }
    }

    /// An array of tables (`[[rule]]`), element `i` at `key[i]`; `None` for an element that
    /// is not a table or holds a bad value.
    pub(crate) fn tables<T>(
        &mut self,
        key: &'static str,
        mut read: impl FnMut(&mut Table<'_, 'i>) -> T,
    ) -> Vec<Option<T>> {
        let Some(v) = self.take(key) else {
            return Vec::new();
        };
        let path = self.key(key);
        if !matches!(v.get_ref(), DeValue::Array(_)) {
            self.wrong_type(path, &v, "an array of tables");
            return Vec::new();
        }
        let DeValue::Array(items) = v.into_inner() else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let p = format!("{path}[{i}]");
            self.cx.offsets.insert(p.clone(), item.span().start);
            out.push(self.sub(p, item, &mut read));
        }
        out
    }

    /// A table of named tables (`[upstream.NAME]`), each at `key.NAME`.
    pub(crate) fn named_tables<T>(
        &mut self,
        key: &'static str,
        mut read: impl FnMut(&str, &mut Table<'_, 'i>) -> T,
    ) -> Vec<(String, Option<T>)> {
        let Some(v) = self.take(key) else {
            return Vec::new();
        };
        let path = self.key(key);
        if !matches!(v.get_ref(), DeValue::Table(_)) {
            self.wrong_type(path, &v, "a table");
            return Vec::new();
        }
        let DeValue::Table(table) = v.into_inner() else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(table.len());
        for (name, item) in table {
            let name = name.into_inner().into_owned();
            let p = format!("{path}.{name}");
            self.cx.offsets.insert(p.clone(), item.span().start);
            let parsed = self.sub(p, item, |t| read(&name, t));
            out.push((name, parsed));
        }
        out
    }

    fn sub<T>(
        &mut self,
        path: String,
        v: Spanned<DeValue<'i>>,
        read: impl FnOnce(&mut Table<'_, 'i>) -> T,
    ) -> Option<T> {
        if !matches!(v.get_ref(), DeValue::Table(_)) {
            self.wrong_type(path, &v, "a table");
            return None;
        }
        let offset = v.span().start;
        let DeValue::Table(entries) = v.into_inner() else {
            return None;
        };
        self.read_sub(path, offset, entries, read)
    }

    fn read_sub<T>(
        &mut self,
        path: String,
        offset: usize,
        entries: DeTable<'i>,
        read: impl FnOnce(&mut Table<'_, 'i>) -> T,
    ) -> Option<T> {
        let mut t = Table {
            cx: &mut *self.cx,
            path,
            offset,
            entries,
            known: Vec::new(),
            ok: true,
        };
        let value = read(&mut t);
        t.finish().then_some(value)
    }

    /// Report the keys nobody asked for; true when the table had no bad value.
    pub(crate) fn finish(mut self) -> bool {
        let unknown = std::mem::take(&mut self.entries);
        for (k, _) in unknown {
            let expected = self
                .known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let message = format!(
                "unknown field `{}`, expected one of {expected}",
                k.get_ref()
            );
            self.invalid(self.key(k.get_ref()), k.span().start, &message);
        }
        self.ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents() {
        assert_eq!(parent("rule[0].claims[\"a.b\"]"), Some("rule[0].claims"));
        assert_eq!(parent("rule[0].paths"), Some("rule[0]"));
        assert_eq!(parent("rule[0]"), Some("rule"));
        assert_eq!(parent("rule"), None);
    }

    #[test]
    fn positions_count_characters() {
        let cx = Cx::new("a = 1\nb = \"\u{e9}x\"\n", FileDirs::default());
        assert_eq!(cx.position(0), Position { line: 1, column: 1 });
        assert_eq!(cx.position(6), Position { line: 2, column: 1 });
        // After the two-byte é.
        assert_eq!(cx.position(13), Position { line: 2, column: 7 });
    }
}
