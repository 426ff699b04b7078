//! `[shared]`: state shared by the agents of a fleet (contract §4), and where revocations live
//! (docs/fleet.md).

use std::path::PathBuf;

use super::files::SecretFile;
use super::read::{Cx, Table};

/// `[shared]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedConfig {
    /// `redis_url`: `redis://host:port/db`, or `rediss://` for TLS (Redis or Valkey).
    /// Revocations and upstream credentials are shared there.
    pub redis_url: Option<String>,
    /// `redis_ca_file`: the PEM CA bundle a `rediss://` server's certificate is checked
    /// against, instead of the system's trust store.
    pub redis_ca_file: Option<SecretFile>,
    /// `redis_username`: the ACL user idgate logs in as (Redis 6+); without it, `AUTH` with
    /// the password alone (`requirepass`, the `default` user).
    pub redis_username: Option<String>,
    /// `redis_password_file`: the file holding the password (one line), read at start and on
    /// reload; never inline, never logged.
    pub redis_password_file: Option<SecretFile>,
    /// `key_file`: 32 random bytes that encrypt the credentials stored in Redis.
    pub key_file: Option<SecretFile>,
    /// `revocations_file`: without Redis, the local file `idgate revoke` writes and the agent
    /// watches (single node). Absolute path.
    pub revocations_file: Option<PathBuf>,
}

/// Where revocations are kept, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationStore {
    Redis(RedisTarget),
    File(PathBuf),
}

/// The fleet's Redis and how idgate logs in to it: `redis_url`, `redis_username`,
/// `redis_password_file` (`crate::revocation::redis_client` makes the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    pub url: String,
    pub ca_file: Option<SecretFile>,
    pub username: Option<String>,
    pub password_file: Option<SecretFile>,
}

impl SharedConfig {
    pub(crate) fn read(t: &mut Table<'_, '_>) -> SharedConfig {
        SharedConfig {
            redis_url: t.get("redis_url"),
            redis_username: t.get("redis_username"),
            redis_ca_file: t
                .get::<PathBuf>("redis_ca_file")
                .map(SecretFile::unresolved),
            redis_password_file: t
                .get::<PathBuf>("redis_password_file")
                .map(SecretFile::unresolved),
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
        if let Some(f) = &mut self.redis_ca_file {
            if let Err(e) = f.resolve(&cx.dirs) {
                cx.push("shared.redis_ca_file", e);
            }
            if !self
                .redis_url
                .as_deref()
                .is_some_and(|u| u.starts_with("rediss://"))
            {
                cx.push("shared.redis_ca_file", "needs a rediss:// redis_url (TLS)");
            }
        }
        let has_url = self.redis_url.is_some();
        resolve_redis_file(
            &mut self.redis_password_file,
            "redis_password_file",
            has_url,
            cx,
        );
        if let Some(u) = &self.redis_username {
            if u.is_empty() || !u.bytes().all(|b| b.is_ascii_graphic()) {
                cx.push(
                    "shared.redis_username",
                    "must be a non-empty name without spaces or control characters",
                );
            }
            if self.redis_password_file.is_none() {
                cx.push("shared.redis_username", "needs shared.redis_password_file");
            }
        }
        resolve_redis_file(&mut self.key_file, "key_file", has_url, cx);
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
        match (&self.redis_target(), &self.revocations_file) {
            (Some(r), _) => Some(RevocationStore::Redis(r.clone())),
            (None, Some(p)) => Some(RevocationStore::File(p.clone())),
            (None, None) => None,
        }
    }

    /// The fleet's Redis, when `redis_url` is set.
    pub fn redis_target(&self) -> Option<RedisTarget> {
        Some(RedisTarget {
            url: self.redis_url.clone()?,
            ca_file: self.redis_ca_file.clone(),
            username: self.redis_username.clone(),
            password_file: self.redis_password_file.clone(),
        })
    }
}

/// A `[shared]` file that only Redis uses (`key`: its name): found where secret files are, and
/// only with a `redis_url`.
fn resolve_redis_file(file: &mut Option<SecretFile>, key: &str, has_url: bool, cx: &mut Cx<'_>) {
    let Some(f) = file else { return };
    if let Err(e) = f.resolve(&cx.dirs) {
        cx.push(format!("shared.{key}"), e);
    }
    if !has_url {
        cx.push(format!("shared.{key}"), "needs shared.redis_url");
    }
}

/// `redis://host[:port][/db]` or `rediss://` (TLS). No password in the URL: secrets never appear
/// inline (and the URL is logged; the password comes from `redis_password_file`).
fn check_redis_url(u: &str) -> Result<(), String> {
    let url = url::Url::parse(u).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "redis" | "rediss" => {}
        s => {
            return Err(format!(
                "scheme {s:?}: use redis://host:port/db or rediss://"
            ))
        }
    }
    if url.password().is_some() || !url.username().is_empty() {
        return Err(
            "credentials in the URL are not accepted (secrets are never inline): \
             use redis_username and redis_password_file"
                .into(),
        );
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

    use super::{RedisTarget, RevocationStore};

    #[test]
    fn stores() {
        let c =
            Config::from_toml("[shared]\nredis_url = \"redis://127.0.0.1:6379/2\"\n", "t").unwrap();
        assert_eq!(
            c.shared.revocation_store(),
            Some(RevocationStore::Redis(RedisTarget {
                url: "redis://127.0.0.1:6379/2".into(),
                ca_file: None,
                username: None,
                password_file: None,
            }))
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
            ("redis_url = \"rediss://h/0\"\nredis_ca_file = \"/nonexistent/ca.pem\"", "ca.pem"),
            ("redis_url = \"redis://h/0\"\nredis_ca_file = \"/etc/hostname\"", "needs a rediss://"),
            ("redis_url = \"http://h/0\"", "scheme"),
            ("redis_url = \"redis://h/x\"", "not a number"),
            ("revocations_file = \"rel\"", "absolute"),
            (
                "redis_url = \"redis://h/0\"\nrevocations_file = \"/r\"",
                "not both",
            ),
            ("key_file = \"/k\"", "needs shared.redis_url"),
            ("redis_password_file = \"/p\"", "needs shared.redis_url"),
            (
                "redis_url = \"redis://h/0\"\nredis_username = \"idgate\"",
                "needs shared.redis_password_file",
            ),
            (
                "redis_url = \"redis://h/0\"\nredis_username = \"a b\"\nredis_password_file = \"/p\"",
                "without spaces",
            ),
        ] {
            let p = problems(&format!("[shared]\n{toml}\n"));
            assert!(p.iter().any(|p| p.message.contains(want)), "{toml}: {p:?}");
        }
    }
}
