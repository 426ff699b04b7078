//! Upstream credentials shared by a fleet through Redis (`[shared] redis_url` and `key_file`;
//! docs/fleet.md): the per-caller token-exchange results and the data-plane tokens, so that a
//! fleet exchanges a caller's token once, not once per agent.
//!
//! Behind the local caches: an agent asks Redis only on a local miss, before the token
//! endpoint, and stores what the endpoint gave it. Never in clear:
//! - the Redis key is `idgate:cred:` and the hex of HMAC-SHA256 (a key derived from
//!   `key_file`) of the kind, the upstream name and the caller token's [`TokenKey`] (itself a
//!   SHA-256 of the token): the token cannot be read or checked from the key without the file;
//! - the value is AES-256-GCM (AWS-LC, already linked) under another key derived from
//!   `key_file`, a random 96-bit nonce per value, the Redis key as associated data (a value
//!   moved to another key does not decrypt): `0x01 || nonce || ciphertext+tag` of
//!   `{"h": "Bearer ...", "e": <expiry, Unix milliseconds>}`;
//! - it expires in Redis (`PX`) when the credential does.
//!
//! Redis down or slow: each operation is bounded by [`OP_TIMEOUT`]; after a failure Redis is
//! skipped for [`SKIP_AFTER_FAILURE`] (local caches and the token endpoint only); a request
//! never fails because of Redis. Stores are written in the background.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use prometheus::{IntCounterVec, Opts};
use redis::aio::MultiplexedConnection;
use zeroize::Zeroizing;

use super::oauth::Token;
use crate::config::{Problem, SharedConfig};
use crate::token_key::TokenKey;

/// Bound on one Redis operation (a lookup is on the request path, before the token endpoint).
const OP_TIMEOUT: Duration = Duration::from_millis(250);
/// After a Redis failure, how long Redis is left out.
const SKIP_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// A shared credential with less than this left is not taken (nor stored).
const MIN_LEFT: Duration = Duration::from_secs(30);
/// Value format version.
const VERSION: u8 = 1;

/// What a credential is (part of its key).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    /// A token exchange (or on-behalf-of) result for one caller token.
    Exchange,
    /// A data-plane token for one control-plane token and serving endpoint.
    DataPlane,
}

/// The fleet's credential store, for every upstream of one configuration.
pub(crate) struct SharedCredentials {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    seal: LessSafeKey,
    names: hmac::Key,
    rng: SystemRandom,
    /// Redis is left out until this instant (nanoseconds since `BASE`).
    skip_until: AtomicU64,
}

static BASE: LazyLock<Instant> = LazyLock::new(Instant::now);

fn nanos(i: Instant) -> u64 {
    u64::try_from(i.saturating_duration_since(*BASE).as_nanos()).unwrap_or(u64::MAX)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The 32 bytes of `key_file`: raw, or 64 hex digits (`openssl rand -hex 32`), with an
/// optional trailing newline. Not readable by every user.
pub(crate) fn read_key(path: &std::path::Path) -> Result<Zeroizing<[u8; 32]>, String> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    if meta.permissions().mode() & 0o004 != 0 {
        return Err(format!(
            "{shown} is readable by every user; it decrypts the shared credentials (chmod 0600 or 0640)"
        ));
    }
    if meta.len() > 128 {
        return Err(format!("{shown} is not a 32-byte key"));
    }
    let raw = Zeroizing::new(std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?);
    let mut key = Zeroizing::new([0u8; 32]);
    if raw.len() == 32 {
        key.copy_from_slice(&raw);
        return Ok(key);
    }
    let text = raw.trim_ascii();
    if text.len() == 64 && text.iter().all(u8::is_ascii_hexdigit) {
        for (i, pair) in text.chunks(2).enumerate() {
            let s = std::str::from_utf8(pair).map_err(|_| format!("{shown}: not hex"))?;
            key[i] = u8::from_str_radix(s, 16).map_err(|_| format!("{shown}: not hex"))?;
        }
        return Ok(key);
    }
    Err(format!(
        "{shown} must hold 32 random bytes (e.g. `head -c 32 /dev/urandom`) or 64 hex digits \
         (`openssl rand -hex 32`); it holds {} bytes",
        raw.len()
    ))
}

impl SharedCredentials {
    /// From `[shared]`: `None` unless both `redis_url` and `key_file` are set.
    pub(crate) fn from_config(
        cfg: &SharedConfig,
    ) -> Result<Option<Arc<SharedCredentials>>, Problem> {
        let (Some(target), Some(file)) = (cfg.redis_target(), &cfg.key_file) else {
            return Ok(None);
        };
        let master = read_key(file.path()).map_err(|e| Problem::new("shared.key_file", e))?;
        // Made at load: a password file that cannot be read is a configuration problem, and a
        // rotated password is taken up on reload (the revocation follower reads it again on
        // every reconnection).
        // The error starts with the key it concerns (`redis_url`, `redis_password_file`,
        // `redis_ca_file`).
        let client = crate::revocation::redis::redis_client(&target).map_err(|e| {
            let key = e.split([':', ' ']).next().unwrap_or("redis_url");
            Problem::new(format!("shared.{key}"), e)
        })?;
        let derive = |label: &[u8]| {
            let k = hmac::Key::new(hmac::HMAC_SHA256, &master[..]);
            Zeroizing::new(hmac::sign(&k, label).as_ref().to_vec())
        };
        let seal_key = derive(b"idgate shared credentials v1: encryption");
        let name_key = derive(b"idgate shared credentials v1: key names");
        let seal = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &seal_key)
                .map_err(|_| Problem::new("shared.key_file", "cannot make an AES-256-GCM key"))?,
        );
        LazyLock::force(&BASE);
        Ok(Some(Arc::new(SharedCredentials {
            client,
            conn: tokio::sync::Mutex::new(None),
            seal,
            names: hmac::Key::new(hmac::HMAC_SHA256, &name_key),
            rng: SystemRandom::new(),
            skip_until: AtomicU64::new(0),
        })))
    }

    /// The Redis key of a credential: nothing in it can be read without `key_file`.
    pub(crate) fn key(&self, kind: Kind, upstream: &str, caller: &TokenKey, extra: &str) -> String {
        let mut ctx = hmac::Context::with_key(&self.names);
        let tag: &[u8] = match kind {
            Kind::Exchange => b"exchange\0",
            Kind::DataPlane => b"data-plane\0",
        };
        ctx.update(tag);
        ctx.update(upstream.as_bytes());
        ctx.update(b"\0");
        ctx.update(caller.as_bytes());
        ctx.update(extra.as_bytes());
        let mac = ctx.sign();
        let mut k = String::with_capacity(12 + 64);
        k.push_str("idgate:cred:");
        for b in mac.as_ref() {
            k.push_str(&format!("{b:02x}"));
        }
        k
    }

    fn skipping(&self) -> bool {
        nanos(Instant::now()) < self.skip_until.load(Ordering::Relaxed)
    }

    fn failed(&self, what: &str, e: &str) {
        let until = nanos(Instant::now() + SKIP_AFTER_FAILURE);
        let before = self.skip_until.swap(until, Ordering::Relaxed);
        count("error");
        if before < nanos(Instant::now()) {
            tracing::warn!(
                "shared credential store (redis): {what} failed, local caches only for {SKIP_AFTER_FAILURE:?}: {e}"
            );
        }
    }

    /// The connection, connecting when there is none (one connect at a time: a request that
    /// finds a connect under way does without Redis).
    async fn connection(&self) -> Option<MultiplexedConnection> {
        if self.skipping() {
            return None;
        }
        let mut slot = self.conn.try_lock().ok()?;
        if let Some(c) = &*slot {
            return Some(c.clone());
        }
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT));
        match tokio::time::timeout(
            OP_TIMEOUT,
            self.client
                .get_multiplexed_async_connection_with_config(&cfg),
        )
        .await
        {
            Ok(Ok(c)) => {
                *slot = Some(c.clone());
                Some(c)
            }
            Ok(Err(e)) => {
                self.failed("connect", &e.to_string());
                None
            }
            Err(_) => {
                self.failed("connect", "timed out");
                None
            }
        }
    }

    async fn drop_connection(&self) {
        *self.conn.lock().await = None;
    }

    async fn run<T: redis::FromRedisValue>(&self, what: &str, cmd: redis::Cmd) -> Option<T> {
        let mut conn = self.connection().await?;
        let r = tokio::time::timeout(OP_TIMEOUT, cmd.query_async::<T>(&mut conn)).await;
        match r {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.failed(what, &e.to_string());
                self.drop_connection().await;
                None
            }
            Err(_) => {
                self.failed(what, "no answer in time");
                self.drop_connection().await;
                None
            }
        }
    }

    /// The credential stored under `key`, if one is there, decrypts, and has time left.
    pub(crate) async fn get(&self, key: &str) -> Option<Token> {
        let raw: Option<Vec<u8>> = self
            .run("read", {
                let mut c = redis::cmd("GET");
                c.arg(key);
                c
            })
            .await?;
        let Some(raw) = raw else {
            count("miss");
            return None;
        };
        let Some((header, expires_ms)) = self.open(key, raw) else {
            count("error");
            tracing::warn!(
                "shared credential store: a value does not decrypt (another key_file?); ignored"
            );
            return None;
        };
        let left = Duration::from_millis(expires_ms.saturating_sub(unix_ms()));
        if left < MIN_LEFT {
            count("miss");
            return None;
        }
        count("hit");
        Some(Token {
            header: header.into(),
            lifetime: left,
            requested_at: Instant::now(),
        })
    }

    /// Store `tok` under `key` in the background, expiring with it.
    pub(crate) fn put(self: &Arc<Self>, key: String, tok: &Token) {
        let Some(left) = (tok.requested_at + tok.lifetime).checked_duration_since(Instant::now())
        else {
            return;
        };
        if left < MIN_LEFT {
            return;
        }
        let expires_ms =
            unix_ms().saturating_add(u64::try_from(left.as_millis()).unwrap_or(u64::MAX));
        let Some(value) = self.seal(&key, &tok.header, expires_ms) else {
            return;
        };
        let this = Arc::clone(self);
        super::cache::spawn(async move {
            let mut c = redis::cmd("SET");
            c.arg(&key)
                .arg(value)
                .arg("PX")
                .arg(u64::try_from(left.as_millis()).unwrap_or(u64::MAX));
            if this.run::<()>("store", c).await.is_some() {
                count("stored");
            }
        });
    }

    fn seal(&self, key: &str, header: &str, expires_ms: u64) -> Option<Vec<u8>> {
        let plain = Zeroizing::new(
            serde_json::to_vec(&serde_json::json!({ "h": header, "e": expires_ms })).ok()?,
        );
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut buf = plain.to_vec();
        self.seal
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.as_bytes()),
                &mut buf,
            )
            .ok()?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Some(out)
    }

    fn open(&self, key: &str, raw: Vec<u8>) -> Option<(String, u64)> {
        let (&version, rest) = raw.split_first()?;
        if version != VERSION || rest.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = Zeroizing::new(sealed.to_vec());
        let plain = self
            .seal
            .open_in_place(nonce, Aad::from(key.as_bytes()), &mut buf)
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(plain).ok()?;
        let header = v.get("h")?.as_str()?.to_string();
        let expires = v.get("e")?.as_u64()?;
        header.starts_with("Bearer ").then_some((header, expires))
    }
}

/// `idgate_shared_credentials_total{result="hit|miss|stored|error"}`.
fn count(result: &'static str) {
    static C: LazyLock<IntCounterVec> = LazyLock::new(|| {
        let c = IntCounterVec::new(
            Opts::new(
                "idgate_shared_credentials_total",
                "Shared upstream credential store (Redis) lookups and stores, by result",
            ),
            &["result"],
        )
        .expect("metric");
        crate::metrics::metrics()
            .registry
            .register(Box::new(c.clone()))
            .expect("registered once");
        c
    });
    C.with_label_values(&[result]).inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(key_byte: u8) -> Arc<SharedCredentials> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, [key_byte; 32]).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let cfg = crate::config::Config::from_toml(
            &format!(
                "[shared]\nredis_url = \"redis://127.0.0.1:1/0\"\nkey_file = \"{}\"\n",
                path.display()
            ),
            "t",
        )
        .unwrap();
        SharedCredentials::from_config(&cfg.shared)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn sealed_values_open_only_under_their_key_and_redis_key() {
        let s = store(7);
        let caller = crate::token_key::token_key("eyJ.secret.token");
        let k = s.key(Kind::Exchange, "up", &caller, "");
        assert!(k.starts_with("idgate:cred:") && k.len() == 12 + 64);
        assert!(!k.contains("secret"));
        assert_ne!(k, s.key(Kind::DataPlane, "up", &caller, ""));
        assert_ne!(k, s.key(Kind::Exchange, "up2", &caller, ""));
        let v = s.seal(&k, "Bearer dbx-secret", 123).unwrap();
        assert!(!v.windows(10).any(|w| w == b"dbx-secret"));
        assert_ne!(
            v,
            s.seal(&k, "Bearer dbx-secret", 123).unwrap(),
            "a nonce per value"
        );
        assert_eq!(
            s.open(&k, v.clone()),
            Some(("Bearer dbx-secret".into(), 123))
        );
        assert_eq!(
            s.open("idgate:cred:other", v.clone()),
            None,
            "bound to its key"
        );
        let other = store(8);
        assert_eq!(other.open(&k, v.clone()), None, "another key_file");
        let mut tampered = v;
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(s.open(&k, tampered), None);
    }

    #[test]
    fn key_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let write = |content: &[u8], mode: u32| {
            std::fs::write(&p, content).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write(&[1; 32], 0o600);
        assert_eq!(*read_key(&p).unwrap(), [1; 32]);
        write(format!("{}\n", "ab".repeat(32)).as_bytes(), 0o640);
        assert_eq!(*read_key(&p).unwrap(), [0xab; 32]);
        write(&[1; 31], 0o600);
        assert!(read_key(&p).unwrap_err().contains("31 bytes"));
        write(&[1; 32], 0o644);
        assert!(read_key(&p).unwrap_err().contains("readable by every user"));
    }
}
