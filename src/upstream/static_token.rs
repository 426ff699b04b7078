//! `static`: a bearer token (e.g. a PAT) read from `token_file` at load and served as is. No
//! token endpoint, no expiry, nothing to fail at run time; a changed file is read on reload.

use std::fmt;
use std::sync::Arc;

use super::secret::Secret;

/// The `Authorization` value, built once.
pub(crate) struct StaticToken(Arc<str>);

impl StaticToken {
    pub(crate) fn new(token: &Secret) -> StaticToken {
        StaticToken(Arc::from(format!("Bearer {}", token.expose())))
    }

    /// On the decision path: an `Arc` clone.
    #[inline]
    pub(crate) fn credential(&self) -> Arc<str> {
        Arc::clone(&self.0)
    }
}

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{Broker, UpstreamError};
    use crate::config::Config;

    fn broker(text: &str, dir: &Path) -> Broker {
        let c = Config::from_toml_in(text, "t", dir).expect("parses");
        Broker::new(&c, None, reqwest::Client::new()).unwrap()
    }

    #[tokio::test]
    async fn static_token_and_unknown_upstream() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("pat"), "dapi0123abcd\n").unwrap();
        let b = broker(
            "[upstream.pat]\nkind = \"static\"\ntoken_file = \"pat\"\n",
            d.path(),
        );
        assert_eq!(
            &*b.credential("pat", None, None).await.unwrap(),
            "Bearer dapi0123abcd"
        );
        assert!(b.contains("pat"));
        let e = b.credential("nope", None, None).await.unwrap_err();
        assert_eq!(e, UpstreamError::Unknown("nope".into()));
        assert!(!format!("{b:?}").contains("dapi"), "{b:?}");
        assert_eq!(
            format!(
                "{:?}",
                super::StaticToken::new(&super::Secret::new("dapi1".into()))
            ),
            "StaticToken(<redacted>)"
        );
    }
}
