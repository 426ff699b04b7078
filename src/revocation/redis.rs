//! The fleet's store: Redis (or Valkey) at `[shared] redis_url`, logged in to with
//! `redis_username`/`redis_password_file` when set ([`redis_client`], also used for the shared
//! upstream credentials).
//!
//! Layout: the sorted set [`KEY`] holds every entry (its JSON as the member, `until` as the
//! score); [`CHANNEL`] carries each new entry's JSON. `idgate revoke` adds the member, drops
//! expired ones and publishes, in one `MULTI`/`EXEC`.
//!
//! Each agent runs one follower: it subscribes, then reads the whole set (so nothing published
//! in between is missed), then applies every message as it arrives; it pings every
//! [`PING_EVERY`] and reads the whole set again every [`RESYNC_EVERY`]. On any error or
//! timeout it drops both connections, says the store is unreachable (`/ready`'s body,
//! `idgate_shared_store_up 0`), keeps every revocation it knows, and reconnects with a backoff.
//! On each full read it writes back the live entries it knows that the set lacks (`ZADD NX`):
//! a Redis restarted without persistence, or flushed, gets the fleet's revocations back from
//! the first agent that reconnects, and agents started later have them too.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use super::{Entry, Revocations, Source};
use crate::config::RedisTarget;

/// The sorted set of entries.
pub const KEY: &str = "idgate:revocations";
/// The channel new entries are published on.
pub const CHANNEL: &str = "idgate:revocations";
/// Bound on connecting and on every command.
const TIMEOUT: Duration = Duration::from_secs(1);
/// Liveness check of the connection.
const PING_EVERY: Duration = Duration::from_secs(1);
/// Full read of the set (also prunes expired entries locally).
const RESYNC_EVERY: Duration = Duration::from_secs(5);
/// Reconnection backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A client for the fleet's Redis: its URL (`rediss://`: TLS, the server's certificate checked
/// against `redis_ca_file` or the system's trust store) and, with `redis_password_file`, `AUTH`
/// with the file's password (as `redis_username` when set). The files are read on every call: a
/// rotated password is used from the next connection on.
pub fn redis_client(target: &RedisTarget) -> Result<redis::Client, String> {
    use redis::IntoConnectionInfo as _;
    let info = target
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| format!("redis_url: {e}"))?;
    let info = match &target.password_file {
        None => info,
        Some(file) => {
            let password = crate::upstream::read_secret_file(file.path())
                .map_err(|e| format!("redis_password_file: {e}"))?;
            let mut settings = info
                .redis_settings()
                .clone()
                .set_password(password.expose());
            if let Some(user) = &target.username {
                settings = settings.set_username(user);
            }
            info.set_redis_settings(settings)
        }
    };
    match &target.ca_file {
        None => redis::Client::open(info),
        Some(ca) => {
            let pem = std::fs::read(ca.path())
                .map_err(|e| format!("redis_ca_file {}: {e}", ca.path().display()))?;
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
        }
    }
    .map_err(|e| format!("redis_url: {e}"))
}

async fn bounded<T>(
    what: &str,
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {TIMEOUT:?}")),
    }
}

async fn connect(client: &redis::Client) -> Result<MultiplexedConnection, String> {
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT));
    bounded(
        "connect",
        client.get_multiplexed_async_connection_with_config(&cfg),
    )
    .await
}

/// `idgate revoke`: add `entry` and tell every agent.
pub async fn add(target: &RedisTarget, entry: &Entry) -> Result<(), String> {
    let client = redis_client(target)?;
    let mut conn = connect(&client).await?;
    let json = entry.to_json();
    let now = crate::auth::unix_now();
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("ZADD")
        .arg(KEY)
        .arg(entry.until)
        .arg(&json)
        .ignore()
        .cmd("ZREMRANGEBYSCORE")
        .arg(KEY)
        .arg("-inf")
        .arg(now)
        .ignore()
        .cmd("PUBLISH")
        .arg(CHANNEL)
        .arg(&json)
        .ignore();
    bounded("revoke", pipe.query_async::<()>(&mut conn)).await
}

/// The live entries in the set (entries that do not parse are logged and skipped: they were
/// not written by idgate).
pub async fn list(target: &RedisTarget, now: u64) -> Result<Vec<Entry>, String> {
    let client = redis_client(target)?;
    let mut conn = connect(&client).await?;
    read_set(&mut conn, now).await
}

async fn read_set(conn: &mut MultiplexedConnection, now: u64) -> Result<Vec<Entry>, String> {
    let members: Vec<String> = bounded(
        "read",
        redis::cmd("ZRANGEBYSCORE")
            .arg(KEY)
            .arg(format!("({now}"))
            .arg("+inf")
            .query_async(conn),
    )
    .await?;
    Ok(members
        .iter()
        .filter_map(|m| match parse(m) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::warn!("ignoring a member of {KEY} that is no revocation: {e}");
                None
            }
        })
        .collect())
}

/// Longest entry taken from Redis (an issuer name, a subject or `jti` and a few numbers).
const MAX_ENTRY_BYTES: usize = 4096;

fn parse(member: &str) -> Result<Entry, String> {
    if member.len() > MAX_ENTRY_BYTES {
        return Err(format!("longer than {MAX_ENTRY_BYTES} bytes"));
    }
    Entry::from_json(member).map_err(|e| e.to_string())
}

/// Read the whole set into `revocations`, and write back what it lacks.
async fn resync(conn: &mut MultiplexedConnection, revocations: &Revocations) -> Result<(), String> {
    let now = crate::auth::unix_now();
    let stored = read_set(conn, now).await?;
    let known = revocations.entries();
    revocations.merge(stored.iter().cloned(), Source::Resync);
    let missing: Vec<&Entry> = known
        .iter()
        .filter(|e| e.live(now) && !stored.contains(e))
        .collect();
    if !missing.is_empty() {
        // Added and published (agents that reconnected before this one learn at once).
        let mut pipe = redis::pipe();
        for e in &missing {
            let json = e.to_json();
            pipe.cmd("ZADD")
                .arg(KEY)
                .arg("NX")
                .arg(e.until)
                .arg(&json)
                .ignore();
            pipe.cmd("PUBLISH").arg(CHANNEL).arg(&json).ignore();
        }
        bounded("write back", pipe.query_async::<()>(conn)).await?;
        tracing::info!(
            count = missing.len(),
            "wrote back revocations the shared store had lost"
        );
    }
    revocations.prune();
    Ok(())
}

/// One connected session: returns why it ended.
async fn session(client: &redis::Client, revocations: &Revocations) -> String {
    let mut pubsub = match bounded("subscribe", client.get_async_pubsub()).await {
        Ok(p) => p,
        Err(e) => return e,
    };
    if let Err(e) = bounded("subscribe", pubsub.subscribe(CHANNEL)).await {
        return e;
    }
    let mut conn = match connect(client).await {
        Ok(c) => c,
        Err(e) => return e,
    };
    if let Err(e) = resync(&mut conn, revocations).await {
        return e;
    }
    revocations.set_store_problem(None);
    tracing::info!("shared store connected; following revocations");
    let mut messages = pubsub.on_message();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resync_at = tokio::time::Instant::now() + RESYNC_EVERY;
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else {
                    return "subscription closed".into();
                };
                match msg.get_payload::<String>().map_err(|e| e.to_string())
                    .and_then(|p| parse(&p)) {
                    Ok(e) => revocations.merge([e], Source::Pubsub),
                    Err(e) => tracing::warn!("ignoring a message on {CHANNEL} that is no revocation: {e}"),
                }
            }
            _ = ping.tick() => {
                if let Err(e) = bounded("ping", redis::cmd("PING").query_async::<String>(&mut conn)).await {
                    return e;
                }
                if tokio::time::Instant::now() >= resync_at {
                    resync_at = tokio::time::Instant::now() + RESYNC_EVERY;
                    if let Err(e) = resync(&mut conn, revocations).await {
                        return e;
                    }
                }
            }
        }
    }
}

/// Follow the store for the life of the process.
pub(super) fn spawn_follower(target: RedisTarget, revocations: Arc<Revocations>) {
    revocations.set_store_problem(Some("shared store (redis): not connected yet".into()));
    tokio::spawn(async move {
        let mut backoff = BACKOFF_MIN;
        let mut first = true;
        loop {
            let started = tokio::time::Instant::now();
            // A new client per session: the password file is read again (rotation).
            let why = match redis_client(&target) {
                Ok(client) => session(&client, &revocations).await,
                Err(e) => e,
            };
            let was_up = std::mem::take(&mut first) || revocations.store_problem().is_none();
            revocations.set_store_problem(Some(format!(
                "shared store (redis) unreachable: {why}; serving with the {} revocations known",
                revocations.entries().len()
            )));
            if was_up {
                tracing::warn!(
                    "shared store (redis) unreachable, keeping the known revocations: {why}"
                );
            } else {
                tracing::debug!("shared store (redis) still unreachable: {why}");
            }
            if started.elapsed() > BACKOFF_MAX * 2 {
                backoff = BACKOFF_MIN;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    });
}
