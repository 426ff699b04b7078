//! `[shared]`: state shared by the agents of a fleet (contract §4), and where revocations live
//! (docs/fleet.md).

use std::path::PathBuf;

use super::files::SecretFile;
use super::read::{Cx, Table};

/// `[shared]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedConfig {
    /// `redis_url`: `redis://host:port/db` (Redis or Valkey). Revocations and upstream
    /// credentials are shared there.
    pub redis_url: Option<String>,
    /// `key_file`: 32 random bytes that encrypt the credentials stored in Redis.
    pub key_file: Option<SecretFile>,
    /// `revocations_file`: without Redis, the local file `idgate revoke` writes and the agent
    /// watches (single node). Absolute path.
    pub revocations_file: Option<PathBuf>,
}

/// Where revocations are kept, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationStore {
    Redis(String),
    File(PathBuf),
}

impl SharedConfig {
    pub(crate) fn read(t: &mut Table<'_, '_>) -> SharedConfig {
        SharedConfig {
            redis_url: t.get("redis_url"),
            key_file: t.get::<PathBuf>("key_file").map(SecretFile::unresolved),
            revocations_file: t.get("revocations_file"),
        }
    }

    pub(crate) fn check(&mut self, cx: &mut Cx<'_>) {
        if let Some(u) = &self.redis_url {
            if let Err(why) = check_redis_url(u) {
                cx.push("shared.redis_url", why);
            }
        }
        if let Some(f) = &mut self.key_file {
            if let Err(e) = f.resolve(&cx.dirs) {
                cx.push("shared.key_file", e);
            }
            if self.redis_url.is_none() {
                cx.push("shared.key_file", "needs shared.redis_url");
            }
        }
        if let Some(p) = &self.revocations_file {
            if !p.is_absolute() {
                cx.push("shared.revocations_file", "must be an absolute path");
            }
            if self.redis_url.is_some() {
                cx.push(
                    "shared.revocations_file",
                    "set either redis_url (a fleet) or revocations_file (one node), not both",
                );
            }
        }
    }

    /// Where `idgate revoke` writes and the agent reads revocations; `None` when revocation
    /// is not configured.
    pub fn revocation_store(&self) -> Option<RevocationStore> {
        match (&self.redis_url, &self.revocations_file) {
            (Some(u), _) => Some(RevocationStore::Redis(u.clone())),
            (None, Some(p)) => Some(RevocationStore::File(p.clone())),
            (None, None) => None,
        }
    }
}

/// `redis://host[:port][/db]`. No password in the URL: secrets never appear inline (and the URL
/// is logged); TLS (`rediss://`) is not built in.
fn check_redis_url(u: &str) -> Result<(), String> {
    let url = url::Url::parse(u).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "redis" => {}
        "rediss" => {
            return Err(
                "rediss:// (TLS) is not supported; use redis:// on a trusted network".into(),
            )
        }
        s => return Err(format!("scheme {s:?}: use redis://host:port/db")),
    }
    if url.password().is_some() || !url.username().is_empty() {
        return Err("credentials in the URL are not accepted (secrets are never inline)".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    let db = url.path().trim_start_matches('/');
    if !db.is_empty() && db.parse::<u16>().is_err() {
        return Err(format!("database {db:?} is not a number"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("no query or fragment allowed".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::tests::problems;
    use crate::config::Config;

    use super::RevocationStore;

    #[test]
    fn stores() {
        let c =
            Config::from_toml("[shared]\nredis_url = \"redis://127.0.0.1:6379/2\"\n", "t").unwrap();
        assert_eq!(
            c.shared.revocation_store(),
            Some(RevocationStore::Redis("redis://127.0.0.1:6379/2".into()))
        );
        let c =
            Config::from_toml("[shared]\nrevocations_file = \"/var/lib/idgate/r\"\n", "t").unwrap();
        assert_eq!(
            c.shared.revocation_store(),
            Some(RevocationStore::File("/var/lib/idgate/r".into()))
        );
        assert_eq!(
            Config::from_toml("", "t")
                .unwrap()
                .shared
                .revocation_store(),
            None
        );
    }

    #[test]
    fn bad_values() {
        for (toml, want) in [
            ("redis_url = \"redis://:pw@h/0\"", "credentials in the URL"),
            ("redis_url = \"rediss://h/0\"", "TLS"),
            ("redis_url = \"http://h/0\"", "scheme"),
            ("redis_url = \"redis://h/x\"", "not a number"),
            ("revocations_file = \"rel\"", "absolute"),
            (
                "redis_url = \"redis://h/0\"\nrevocations_file = \"/r\"",
                "not both",
            ),
            ("key_file = \"/k\"", "needs shared.redis_url"),
        ] {
            let p = problems(&format!("[shared]\n{toml}\n"));
            assert!(p.iter().any(|p| p.message.contains(want)), "{toml}: {p:?}");
        }
    }
}
