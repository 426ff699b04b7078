//! `schema_refresh`, `schema_retry`, `schema_max_stale` of `[upstream.NAME]`: how the serving
//! endpoints' own schemas (`payload_schema = "endpoint"`, docs/payload.md) are cached.

use std::time::Duration;

use super::read::{Cx, Table};
use super::value::Dur;

/// The keys, for the kinds they do not apply to (no workspace to fetch schemas from).
pub(super) const KEYS: [&str; 3] = ["schema_refresh", "schema_retry", "schema_max_stale"];

/// How long an endpoint's schema is cached, how long a failed fetch is remembered, and how
/// long the last good schema stands in while fetches fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaTimes {
    /// `schema_refresh`: a fetched schema is used this long, then fetched again. Default 5m.
    pub refresh: Duration,
    /// `schema_retry`: a failed fetch is remembered this long before the next try. Default 30s.
    pub retry: Duration,
    /// `schema_max_stale`: while fetches fail, the last schema fetched is applied until it is
    /// this old (counted from its fetch). Default 24h; at least `refresh`.
    pub max_stale: Duration,
}

impl Default for SchemaTimes {
    fn default() -> Self {
        SchemaTimes {
            refresh: Duration::from_secs(300),
            retry: Duration::from_secs(30),
            max_stale: Duration::from_secs(24 * 3600),
        }
    }
}

/// Smallest value of each key: a workspace is not asked more than once a second per endpoint.
const MIN: Duration = Duration::from_secs(1);
/// Largest `schema_refresh` and `schema_retry`.
const MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);
const MAX_RETRY: Duration = Duration::from_secs(3600);
/// Largest `schema_max_stale`.
const MAX_STALE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The keys as read (`None`: not set).
#[derive(Default)]
pub(super) struct RawSchemaTimes {
    refresh: Option<Dur>,
    retry: Option<Dur>,
    max_stale: Option<Dur>,
}

impl RawSchemaTimes {
    pub(super) fn read(t: &mut Table<'_, '_>) -> RawSchemaTimes {
        RawSchemaTimes {
            refresh: t.get("schema_refresh"),
            retry: t.get("schema_retry"),
            max_stale: t.get("schema_max_stale"),
        }
    }

    /// Whether `key` (one of [`KEYS`]) is set.
    pub(super) fn has(&self, key: &str) -> bool {
        match key {
            "schema_refresh" => self.refresh.is_some(),
            "schema_retry" => self.retry.is_some(),
            "schema_max_stale" => self.max_stale.is_some(),
            _ => false,
        }
    }

    /// The values, defaults filled in.
    pub(super) fn times(&self) -> SchemaTimes {
        let d = SchemaTimes::default();
        SchemaTimes {
            refresh: self.refresh.map_or(d.refresh, |v| v.0),
            retry: self.retry.map_or(d.retry, |v| v.0),
            max_stale: self.max_stale.map_or(d.max_stale, |v| v.0),
        }
    }

    /// The bounds, each problem at its key (`k` makes the key path).
    pub(super) fn check(&self, k: impl Fn(&str) -> String, cx: &mut Cx<'_>) {
        let t = self.times();
        for (key, v, max, max_text) in [
            ("schema_refresh", t.refresh, MAX_REFRESH, "24h"),
            ("schema_retry", t.retry, MAX_RETRY, "1h"),
            ("schema_max_stale", t.max_stale, MAX_STALE, "7d"),
        ] {
            if v < MIN || v > max {
                cx.push(k(key), format!("must be between 1s and {max_text}"));
            }
        }
        if t.max_stale < t.refresh {
            // At the key the operator wrote (both written: the one that bounds the other).
            let key = if self.max_stale.is_some() {
                "schema_max_stale"
            } else {
                "schema_refresh"
            };
            cx.push(
                k(key),
                format!(
                    "schema_max_stale ({}) must be at least schema_refresh ({}): a schema is \
                     applied until it is that old",
                    humantime::format_duration(t.max_stale),
                    humantime::format_duration(t.refresh)
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::tests::{keys, problems};
    use crate::config::Config;

    const TX: &str = "[upstream.x]\nkind = \"token_exchange\"\n\
                      token_url = \"https://dbc.example.com/oidc/v1/token\"\n";

    #[test]
    fn defaults_and_values() {
        let c = Config::from_toml(TX, "t").unwrap();
        let t = c.upstreams["x"].schema_times;
        assert_eq!(
            (t.refresh, t.retry, t.max_stale),
            (
                Duration::from_secs(300),
                Duration::from_secs(30),
                Duration::from_secs(86400)
            )
        );
        let text = format!(
            "{TX}schema_refresh = \"1m\"\nschema_retry = \"1500ms\"\nschema_max_stale = \"2h\"\n"
        );
        let t = Config::from_toml(&text, "t").unwrap().upstreams["x"].schema_times;
        assert_eq!(
            (t.refresh, t.retry, t.max_stale),
            (
                Duration::from_secs(60),
                Duration::from_millis(1500),
                Duration::from_secs(7200)
            )
        );
    }

    #[test]
    fn bounds_and_order_are_checked() {
        assert_eq!(
            keys(&format!(
                "{TX}schema_refresh = \"500ms\"\nschema_retry = \"2h\"\n\
                 schema_max_stale = \"8d\"\n"
            )),
            [
                "upstream.x.schema_refresh",
                "upstream.x.schema_retry",
                "upstream.x.schema_max_stale"
            ]
        );
        // max_stale below refresh: at the key written.
        let p = problems(&format!("{TX}schema_max_stale = \"1m\"\n"));
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(p[0].key, "upstream.x.schema_max_stale");
        assert!(
            p[0].message
                .contains("must be at least schema_refresh (5m)"),
            "{}",
            p[0]
        );
        let p = problems(&format!("{TX}schema_refresh = \"25h\"\n"));
        assert_eq!(
            p.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(),
            ["upstream.x.schema_refresh", "upstream.x.schema_refresh"]
        );
        // A value that is no duration, and a typo.
        assert_eq!(
            keys(&format!(
                "{TX}schema_retry = 30\nschema_refresh_s = \"1s\"\n"
            )),
            ["upstream.x.schema_retry", "upstream.x.schema_refresh_s"]
        );
    }

    #[test]
    fn kinds_without_a_workspace_refuse_them() {
        let p = problems(
            "[upstream.st]\nkind = \"static\"\ntoken_file = \"/nonexistent\"\n\
             schema_refresh = \"1m\"\n",
        );
        let r = p
            .iter()
            .find(|p| p.key == "upstream.st.schema_refresh")
            .expect("schema_refresh refused");
        assert!(r.message.contains("does not apply"), "{r}");
    }
}
