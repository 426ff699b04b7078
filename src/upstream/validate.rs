//! Load-time checks of `[upstream.NAME]` and reading its secret file: every problem reported
//! with its key path (e.g. `upstream.serving-sp.client_secret_file`), as `check-config` and a
//! failed reload print them. Rule references (an unknown upstream, a `token_exchange`
//! upstream on a public rule) are checked by the policy compiler, which owns `[[rule]]`.

use std::path::Path;
use std::time::Duration;

use super::secret::{self, Secret};
use crate::config::{check_url, Problem, UpstreamConfig, UpstreamKind};

/// Upstream names become metric label values and log fields: keep them short and plain.
pub(crate) const MAX_UPSTREAM_NAME: usize = 64;

/// Check one upstream's fields for its kind; push every problem found.
pub(crate) fn validate(name: &str, c: &UpstreamConfig, p: &mut Vec<Problem>) {
    let k = |field: &str| format!("upstream.{name}.{field}");
    if name.is_empty()
        || name.len() > MAX_UPSTREAM_NAME
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        p.push(Problem::new(
            format!("upstream.{name}"),
            format!(
                "the name must be 1-{MAX_UPSTREAM_NAME} characters of A-Z a-z 0-9 _ - . \
                 (it is a metric label)"
            ),
        ));
    }
    let kind = match c.kind {
        UpstreamKind::ClientCredentials => "client_credentials",
        UpstreamKind::TokenExchange => "token_exchange",
        UpstreamKind::Static => "static",
    };
    let (needs, forbids): (&[&str], &[&str]) = match c.kind {
        UpstreamKind::ClientCredentials => (
            &["token_url", "client_id", "client_secret_file"],
            &["token_file"],
        ),
        UpstreamKind::TokenExchange => (&["token_url"], &["client_secret_file", "token_file"]),
        UpstreamKind::Static => (
            &["token_file"],
            &["token_url", "client_id", "client_secret_file", "scope"],
        ),
    };
    let present = |f: &str| match f {
        "token_url" => c.token_url.is_some(),
        "client_id" => c.client_id.is_some(),
        "client_secret_file" => c.client_secret_file.is_some(),
        "token_file" => c.token_file.is_some(),
        "scope" => c.scope.is_some(),
        _ => false,
    };
    for f in needs {
        if !present(f) {
            p.push(Problem::new(
                k(f),
                format!("required for kind = \"{kind}\""),
            ));
        }
    }
    for f in forbids {
        if present(f) {
            let why = match (c.kind, *f) {
                (UpstreamKind::TokenExchange, "client_secret_file") => {
                    "; token exchange sends no client secret (set client_id alone for \
                     workload identity federation)"
                }
                _ => "",
            };
            p.push(Problem::new(
                k(f),
                format!("does not apply to kind = \"{kind}\"{why}"),
            ));
        }
    }
    if c.kind != UpstreamKind::Static {
        if let Some(u) = &c.token_url {
            if let Err(e) = check_url(u) {
                p.push(Problem::new(k("token_url"), e));
            }
        }
        if let Some(id) = &c.client_id {
            if id.is_empty() || id.len() > 256 || !id.bytes().all(|b| b.is_ascii_graphic()) {
                p.push(Problem::new(
                    k("client_id"),
                    "must be 1-256 visible ASCII characters (the service principal's application ID)",
                ));
            }
        }
        if let Some(s) = &c.scope {
            if s.trim().is_empty()
                || s.len() > 1024
                || !s.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
            {
                p.push(Problem::new(
                    k("scope"),
                    "must be space-separated scopes of visible ASCII, e.g. \"all-apis\"",
                ));
            }
        }
        if c.timeout.0.is_zero() || c.timeout.0 > Duration::from_secs(60) {
            p.push(Problem::new(k("timeout"), "must be between 1ms and 60s"));
        }
        if c.total_budget.0.is_zero() || c.total_budget.0 > Duration::from_secs(300) {
            p.push(Problem::new(
                k("total_budget"),
                "must be between 1ms and 5m",
            ));
        }
        if c.timeout.0 > c.total_budget.0 {
            p.push(Problem::new(
                k("timeout"),
                "must not exceed total_budget (the budget bounds every attempt)",
            ));
        }
    }
    if c.kind == UpstreamKind::TokenExchange && c.cache_size == 0 {
        p.push(Problem::new(k("cache_size"), "must be at least 1"));
    }
}

/// Read the kind's secret file (`client_secret_file`, `token_file`; relative names looked up in
/// `dir`, the credentials directory, first). `None` for `token_exchange`, or with a problem
/// pushed when it cannot be read.
pub(crate) fn read_secret(
    name: &str,
    c: &UpstreamConfig,
    dir: Option<&Path>,
    p: &mut Vec<Problem>,
) -> Option<Secret> {
    let (field, file) = match c.kind {
        UpstreamKind::ClientCredentials => ("client_secret_file", c.client_secret_file.as_ref()?),
        UpstreamKind::Static => ("token_file", c.token_file.as_ref()?),
        UpstreamKind::TokenExchange => return None,
    };
    match secret::read_secret_file(file, dir) {
        Ok(s) => Some(s),
        Err(e) => {
            p.push(Problem::new(format!("upstream.{name}.{field}"), e));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Broker;
    use crate::config::Config;

    use super::*;

    fn cfg(text: &str) -> Config {
        Config::from_toml(text, "t").expect("parses")
    }

    fn problems(cfg: &Config, dir: Option<&Path>) -> Vec<Problem> {
        Broker::with_credentials_dir(cfg, None, reqwest::Client::new(), dir).unwrap_err()
    }

    fn keys(p: &[Problem]) -> Vec<&str> {
        p.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn client_credentials_requires_its_fields() {
        let c = cfg("[upstream.sp]\nkind = \"client_credentials\"\n");
        let p = problems(&c, None);
        let k = keys(&p);
        assert!(k.contains(&"upstream.sp.token_url"), "{p:?}");
        assert!(k.contains(&"upstream.sp.client_id"), "{p:?}");
        assert!(k.contains(&"upstream.sp.client_secret_file"), "{p:?}");
        assert_eq!(p.len(), 3, "{p:?}");
    }

    #[test]
    fn fields_of_other_kinds_are_errors() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("tok"), "dapi123\n").unwrap();
        let c = cfg(r#"
    [upstream.st]
    kind = "static"
    token_file = "tok"
    token_url = "https://dbc.example.com/oidc/v1/token"
    client_id = "abc"
    scope = "all-apis"

    [upstream.tx]
    kind = "token_exchange"
    token_url = "https://dbc.example.com/oidc/v1/token"
    client_secret_file = "tok"
    token_file = "tok"

    [upstream.cc]
    kind = "client_credentials"
    token_url = "https://dbc.example.com/oidc/v1/token"
    client_id = "abc"
    client_secret_file = "tok"
    token_file = "tok"
    "#);
        let p = problems(&c, Some(d.path()));
        let k = keys(&p);
        for key in [
            "upstream.st.token_url",
            "upstream.st.client_id",
            "upstream.st.scope",
            "upstream.tx.client_secret_file",
            "upstream.tx.token_file",
            "upstream.cc.token_file",
        ] {
            assert!(k.contains(&key), "{key} not reported: {p:?}");
        }
        assert_eq!(p.len(), 6, "{p:?}");
        let tx = p
            .iter()
            .find(|p| p.key == "upstream.tx.client_secret_file")
            .unwrap();
        assert!(tx.message.contains("no client secret"), "{tx}");
    }

    #[test]
    fn urls_names_and_bounds_are_checked() {
        let c = cfg(r#"
    [upstream."bad name"]
    kind = "token_exchange"
    token_url = "http://dbc.example.com/oidc/v1/token"
    client_id = ""
    scope = "  "
    timeout = "5s"
    total_budget = "2s"
    cache_size = 0
    "#);
        let p = problems(&c, None);
        let k = keys(&p);
        for key in [
            "upstream.bad name",
            "upstream.bad name.token_url",
            "upstream.bad name.client_id",
            "upstream.bad name.scope",
            "upstream.bad name.timeout",
            "upstream.bad name.cache_size",
        ] {
            assert!(k.contains(&key), "{key} not reported: {p:?}");
        }
        let url = p.iter().find(|p| p.key.ends_with(".token_url")).unwrap();
        assert!(url.message.contains("https"), "{url}");
    }

    #[test]
    fn unreadable_or_empty_secrets_are_config_problems() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("empty"), "\n").unwrap();
        let missing = d.path().join("nope");
        let c = cfg(&format!(
            r#"
    [upstream.cc]
    kind = "client_credentials"
    token_url = "https://dbc.example.com/oidc/v1/token"
    client_id = "abc"
    client_secret_file = "{}"

    [upstream.st]
    kind = "static"
    token_file = "empty"
    "#,
            missing.display()
        ));
        let p = problems(&c, Some(d.path()));
        let cc = p
            .iter()
            .find(|p| p.key == "upstream.cc.client_secret_file")
            .unwrap();
        assert!(cc.message.contains("cannot read"), "{cc}");
        let st = p
            .iter()
            .find(|p| p.key == "upstream.st.token_file")
            .unwrap();
        assert!(st.message.contains("empty"), "{st}");
    }
}
