//! `[paths]`: how strictly request paths are checked before any rule (docs/policy.md "Paths").

use super::read::Table;

/// `[paths]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathsConfig {
    /// Accept non-ASCII characters in request paths (raw UTF-8 or percent-encoded). Default
    /// `false`: Databricks API paths are ASCII, and upstreams that fold Unicode (case mapping,
    /// NFKC: the Kelvin sign `K` to `k`, fullwidth letters and dots to ASCII) would otherwise
    /// read `/api/2.0/to%E2%84%AAen/create` as a path a deny rule covers. Only for upstreams that
    /// need non-ASCII paths (e.g. file names in the Files API). Even then, characters that Unicode
    /// case mapping or NFKC folds to ASCII, invisible or bidirectional formatting characters and
    /// whitespace at a segment's edges stay refused; it never relaxes any other path rule.
    pub allow_non_ascii: bool,
}

impl PathsConfig {
    pub(crate) fn read(t: &mut Table<'_, '_>) -> PathsConfig {
        let mut c = PathsConfig::default();
        t.set("allow_non_ascii", &mut c.allow_non_ascii);
        c
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::keys;
    use crate::config::Config;

    #[test]
    fn strict_by_default_and_only_one_key() {
        assert!(!Config::from_toml("", "t").unwrap().paths.allow_non_ascii);
        let c = Config::from_toml("[paths]\nallow_non_ascii = true\n", "t").unwrap();
        assert!(c.paths.allow_non_ascii);
        assert_eq!(
            keys("[paths]\nallow_unicode = true\n"),
            ["paths.allow_unicode"]
        );
        assert_eq!(
            keys("[paths]\nallow_non_ascii = \"yes\"\n"),
            ["paths.allow_non_ascii"]
        );
    }
}
