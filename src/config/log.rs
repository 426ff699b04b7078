//! `[log]`: the log filter and where the audit log goes.

use super::read::{Cx, Table};

/// `[log]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// Default level/filter when `RUST_LOG` is not set, e.g. `"info"` or `"info,idgate=debug"`.
    pub level: String,
    /// Where the audit log (one JSON line per decision) goes: `"stderr"` (with the other logs),
    /// `"stdout"`, `"off"`, or a file path. Default `"stderr"`.
    pub audit: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            audit: "stderr".into(),
        }
    }
}

impl LogConfig {
    pub(crate) fn read(t: &mut Table<'_, '_>) -> LogConfig {
        let mut c = LogConfig::default();
        t.set("level", &mut c.level);
        t.set("audit", &mut c.audit);
        c
    }

    pub(crate) fn check(&self, cx: &mut Cx<'_>) {
        // Checked here, not only when logging starts, so that a reload with a bad level is
        // refused as a whole (and counted as a failure) like any other bad value.
        if let Err(e) = crate::telemetry::validate_level(&self.level) {
            cx.push("log.level", e.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{keys, problems};

    #[test]
    fn checks() {
        let p = problems("[log]\nlevel = \"info,idgate=loud\"\n");
        assert_eq!(p[0].key, "log.level");
        assert!(p[0].message.contains("invalid log filter"), "{}", p[0]);
        assert_eq!(keys("[log]\naudit = false\n"), ["log.audit"]);
    }
}
