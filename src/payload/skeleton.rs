//! What the input-format check ([`super::formats`]) reads of a body, kept by
//! [`super::json::scan`] instead of the whole [`serde_json::Value`]: the body's kind, its
//! input-format members, and below them only the kinds, lengths and members the check of that
//! format looks at (a `dataframe_split`'s rows, `messages[i].role`...). Strings, numbers and
//! everything else are checked by the parser and dropped.

use jiter::Peek;

use super::formats::{Kind, Node, FORMATS, SPLIT_KEYS};

/// A JSON value as far as the format check reads it.
#[derive(Debug)]
pub struct Skeleton {
    kind: Kind,
    /// An array's length, an object's number of members.
    pub(super) len: usize,
    /// The items of an array, when [`Keep`] keeps them.
    pub(super) items: Vec<Skeleton>,
    /// The members of an object that [`Keep`] keeps.
    pub(super) fields: Vec<(&'static str, Skeleton)>,
    /// An object's smallest key that is not one [`Keep`] names (for `dataframe_split`,
    /// which allows no other key; serde_json's map is ordered by key, so this is the key
    /// [`Node::other_key`] of a `Value` finds first).
    other: Option<Box<str>>,
}

impl Skeleton {
    /// An empty skeleton of the kind `peek` announces.
    pub(super) fn of(peek: Peek) -> Skeleton {
        let kind = match peek {
            Peek::Null => Kind::Null,
            Peek::True | Peek::False => Kind::Bool,
            Peek::String => Kind::String,
            Peek::Array => Kind::Array,
            Peek::Object => Kind::Object,
            _ => Kind::Number,
        };
        Skeleton {
            kind,
            len: 0,
            items: Vec::new(),
            fields: Vec::new(),
            other: None,
        }
    }

    pub(super) fn note_other(&mut self, key: &str) {
        if self.other.as_deref().is_none_or(|o| key < o) {
            self.other = Some(key.into());
        }
    }
}

impl Node for Skeleton {
    fn kind(&self) -> Kind {
        self.kind
    }

    fn get(&self, key: &str) -> Option<&Skeleton> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    fn items(&self) -> &[Skeleton] {
        &self.items
    }

    fn len(&self) -> usize {
        match self.kind {
            Kind::Array => self.len,
            _ => 0,
        }
    }

    /// The smallest key not kept: `allowed` must be the names [`Keep`] kept.
    fn other_key(&self, _allowed: &[&str]) -> Option<&str> {
        self.other.as_deref()
    }
}

/// What to keep of a value, by where it is in the body.
#[derive(Debug, Clone, Copy)]
pub(super) enum Keep {
    /// The body: its input-format members.
    Body,
    /// The value of input-format member `.0`.
    Format(&'static str),
    /// `dataframe_split.data`: each row's kind and length.
    Rows,
    /// A `messages` item: its `role`'s kind.
    Message,
    /// The kind and length only.
    Kind,
}

impl Keep {
    /// What to keep of an array's items (`None`: only count them).
    pub(super) fn items(self) -> Option<Keep> {
        match self {
            Keep::Format("dataframe_records" | "prompt") | Keep::Rows => Some(Keep::Kind),
            Keep::Format("messages") => Some(Keep::Message),
            _ => None,
        }
    }

    /// Whether, and as what, to keep an object's member `key` (`None`: skip it).
    pub(super) fn member(self, key: &str) -> Option<(&'static str, Keep)> {
        let named = |names: &[&'static str]| names.iter().copied().find(|n| *n == key);
        match self {
            Keep::Body => named(&FORMATS).map(|f| (f, Keep::Format(f))),
            Keep::Format("dataframe_split") => named(&SPLIT_KEYS).map(|n| {
                let keep = if n == "data" { Keep::Rows } else { Keep::Kind };
                (n, keep)
            }),
            Keep::Message => named(&["role"]).map(|n| (n, Keep::Kind)),
            _ => None,
        }
    }

    /// Whether an object's other keys are noted ([`Skeleton::note_other`]).
    pub(super) fn notes_other_keys(self) -> bool {
        matches!(self, Keep::Format("dataframe_split"))
    }
}
