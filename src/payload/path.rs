//! Where in the body a problem is, written the way a data scientist reads it:
//! `dataframe_split.data[3][1]`, `messages[0].role`, `inputs["my col"]`.

use std::fmt::{self, Write};

/// Longest key kept in a path (a longer one is cut and marked with `…`): the path goes into
/// the refusal message, which is capped.
const KEY_CAP: usize = 48;

/// A location being walked (pushed and popped as the walk goes down and up).
#[derive(Debug, Default, Clone)]
pub struct Path {
    text: String,
    /// Length of `text` before each segment, to pop.
    marks: Vec<usize>,
}

impl Path {
    pub fn push_key(&mut self, key: &str) {
        self.marks.push(self.text.len());
        // A key that starts with a digit is quoted: `.0` would read as an index.
        let plain = key.bytes().next().is_some_and(|b| !b.is_ascii_digit())
            && key.len() <= KEY_CAP
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if plain {
            if !self.text.is_empty() {
                self.text.push('.');
            }
            self.text.push_str(key);
        } else {
            let mut cut: String = key.chars().take(KEY_CAP).collect();
            if cut.len() < key.len() {
                cut.push('…');
            }
            // JSON string syntax: control characters escaped, so the path is header-safe.
            let quoted = serde_json::to_string(&cut).unwrap_or_default();
            let _ = write!(self.text, "[{quoted}]");
        }
    }

    pub fn push_index(&mut self, i: usize) {
        self.marks.push(self.text.len());
        let _ = write!(self.text, "[{i}]");
    }

    pub fn pop(&mut self) {
        if let Some(m) = self.marks.pop() {
            self.text.truncate(m);
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Why a body is refused: where, and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Empty: the body as a whole.
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn new(path: &Path, message: String) -> Problem {
        Problem {
            path: path.as_str().to_owned(),
            message,
        }
    }

    /// A problem of the body as a whole.
    pub fn body(message: impl Into<String>) -> Problem {
        Problem {
            path: String::new(),
            message: message.into(),
        }
    }

    /// A problem at a top-level key.
    pub fn at(key: &str, message: impl Into<String>) -> Problem {
        let mut p = Path::default();
        p.push_key(key);
        Problem::new(&p, message.into())
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_like_python_subscripts() {
        let mut p = Path::default();
        p.push_key("dataframe_split");
        p.push_key("data");
        p.push_index(3);
        p.push_index(1);
        assert_eq!(p.as_str(), "dataframe_split.data[3][1]");
        p.pop();
        p.pop();
        p.push_key("my col\n");
        assert_eq!(p.as_str(), r#"dataframe_split.data["my col\n"]"#);
        p.pop();
        p.push_key(&"k".repeat(100));
        assert!(p.as_str().ends_with("…\"]"), "{}", p.as_str());
        let mut root = Path::default();
        root.push_index(0);
        root.push_key("role");
        assert_eq!(root.as_str(), "[0].role");
    }

    #[test]
    fn problems_name_their_path() {
        assert_eq!(
            Problem::at("prompt", "must be a string").to_string(),
            "prompt: must be a string"
        );
        assert_eq!(Problem::body("empty").to_string(), "empty");
    }
}
