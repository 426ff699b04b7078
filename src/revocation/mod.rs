//! Revocation, the kill switch (contract §3 `revoked`, §9; docs/fleet.md).
//!
//! An [`Entry`] revokes, for one configured issuer, a subject, one token (`jti`), or every
//! token issued before a time, until its `until` (Unix seconds). The agent keeps the entries
//! in force in [`Revocations`]: a writer side (a mutex over the entries, touched only when an
//! entry arrives) and an immutable [`RevocationSet`] behind an [`ArcSwap`] that every decision
//! checks after validation, cached token or not. With no entry in force the check is one
//! atomic load and a length test.
//!
//! Entries come from the configured store ([`crate::config::RevocationStore`]): Redis
//! ([`redis`]: a sorted set scored by `until`, plus a pub/sub channel), or, on a single node, a
//! local file ([`file`]) that `idgate revoke` rewrites and the agent watches.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus::{IntCounterVec, IntGauge, Opts};
use serde::{Deserialize, Serialize};

use crate::config::{Config, RevocationStore};
use crate::decision::Identity;

pub mod file;
pub mod redis;

/// What an entry revokes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Every token whose `sub` (or the issuer's `user_claim`) is this value.
    Subject(String),
    /// The one token with this `jti`.
    Jti(String),
    /// Every token with an `iat` before this time (Unix seconds), and every token without
    /// `iat` (it cannot show it was issued later: fail closed).
    IssuedBefore(u64),
}

/// How long an entry lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lasts {
    /// Until no token it targets can still be valid: the issuer's `max_token_lifetime` plus
    /// its `leeway` after now (after the time, for `issued_before`).
    Default,
    /// `--for`: this long from now.
    For(Duration),
    /// `--until`: until this time (Unix seconds; e.g. the revoked token's `exp`) plus the
    /// issuer's `leeway`.
    Until(u64),
}

/// One revocation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// The configured issuer's `name`.
    pub issuer: String,
    #[serde(flatten)]
    pub target: Target,
    /// In force until this time (Unix seconds), then dropped.
    pub until: u64,
    /// When it was made (Unix seconds).
    pub created: u64,
}

impl Entry {
    /// A new entry for `issuer` (configured), made at `now`, lasting as `lasts` says. Errors say
    /// why it cannot be made.
    pub fn new(
        config: &Config,
        issuer: &str,
        target: Target,
        lasts: Lasts,
        now: u64,
    ) -> Result<Entry, String> {
        let Some(iss) = config.issuers.iter().find(|i| i.name == issuer) else {
            let names: Vec<_> = config.issuers.iter().map(|i| i.name.as_str()).collect();
            return Err(format!(
                "no issuer named {issuer:?} in the configuration (issuers: {})",
                names.join(", ")
            ));
        };
        let bound = iss.max_token_lifetime.0.as_secs() + iss.leeway.0.as_secs();
        let from = match &target {
            Target::Subject(s) | Target::Jti(s) if s.is_empty() => {
                return Err("the subject or jti is empty".into())
            }
            Target::IssuedBefore(t) if *t > now + iss.leeway.0.as_secs() => {
                return Err("--issued-before is in the future".into())
            }
            Target::IssuedBefore(t) => *t,
            _ => now,
        };
        let until = match lasts {
            Lasts::For(d) if d.is_zero() => return Err("--for must be longer than 0s".into()),
            Lasts::For(d) => now.saturating_add(d.as_secs().max(1)),
            // The token is accepted up to `leeway` after its `exp`.
            Lasts::Until(t) if t <= now => return Err("--until is in the past".into()),
            Lasts::Until(t) => t.saturating_add(iss.leeway.0.as_secs()),
            Lasts::Default => from.saturating_add(bound),
        };
        if until <= now {
            return Err(
                "every token issued before that time has expired already: nothing to revoke".into(),
            );
        }
        Ok(Entry {
            issuer: issuer.to_string(),
            target,
            until,
            created: now,
        })
    }

    /// The JSON form stored (Redis member, file line) and published.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an entry serializes")
    }

    pub fn from_json(s: &str) -> Result<Entry, serde_json::Error> {
        serde_json::from_str(s)
    }

    fn live(&self, now: u64) -> bool {
        now < self.until
    }
}

/// The entries in force, indexed for the check. Immutable; rebuilt when entries change.
#[derive(Debug, Default)]
pub struct RevocationSet {
    issuers: HashMap<String, ForIssuer>,
}

#[derive(Debug, Default)]
struct ForIssuer {
    /// Value -> until (the latest of duplicates).
    subjects: HashMap<String, u64>,
    jtis: HashMap<String, u64>,
    /// (before, until) pairs.
    before: Vec<(u64, u64)>,
}

impl RevocationSet {
    fn build<'e>(entries: impl IntoIterator<Item = &'e Entry>) -> RevocationSet {
        let mut issuers: HashMap<String, ForIssuer> = HashMap::new();
        for e in entries {
            let f = issuers.entry(e.issuer.clone()).or_default();
            let (map, key) = match &e.target {
                Target::Subject(s) => (&mut f.subjects, s),
                Target::Jti(j) => (&mut f.jtis, j),
                Target::IssuedBefore(t) => {
                    f.before.push((*t, e.until));
                    continue;
                }
            };
            let until = map.entry(key.clone()).or_insert(0);
            *until = (*until).max(e.until);
        }
        RevocationSet { issuers }
    }

    /// Whether `id` is revoked at `now` (Unix seconds).
    pub fn check(&self, id: &Identity, now: u64) -> bool {
        let Some(f) = self.issuers.get(&*id.issuer) else {
            return false;
        };
        let live = |until: &u64| now < *until;
        f.subjects.get(&id.sub).is_some_and(live)
            || id
                .user
                .as_ref()
                .and_then(|u| f.subjects.get(u))
                .is_some_and(live)
            || id
                .jti
                .as_deref()
                .and_then(|j| f.jtis.get(j))
                .is_some_and(live)
            || f.before
                .iter()
                .any(|&(before, until)| now < until && id.issued_at.is_none_or(|iat| iat < before))
    }
}

/// The agent's revocations: what every decision checks, and what the store followers update.
/// One per process (kept across configuration reloads).
#[derive(Default)]
pub struct Revocations {
    entries: Mutex<BTreeSet<Entry>>,
    set: ArcSwap<RevocationSet>,
    /// Why the store cannot be read now (`/ready` body); `None` while it can.
    store_problem: Mutex<Option<String>>,
}

/// Where an update came from (`idgate_revocation_updates_total{source}`).
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// A Redis pub/sub message.
    Pubsub,
    /// A full read of the Redis set (connect, reconnect, periodic).
    Resync,
    /// The revocations file.
    File,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Pubsub => "pubsub",
            Source::Resync => "resync",
            Source::File => "file",
        }
    }
}

impl Revocations {
    pub fn new() -> Arc<Revocations> {
        Arc::new(Revocations::default())
    }

    /// Whether `id` is revoked now. Cheap when nothing is revoked.
    #[inline]
    pub fn is_revoked(&self, id: &Identity) -> bool {
        let set = self.set.load();
        !set.issuers.is_empty() && set.check(id, crate::auth::unix_now())
    }

    /// Add `entries` to those in force (Redis: an entry, once known, stays until it expires).
    pub fn merge(&self, entries: impl IntoIterator<Item = Entry>, source: Source) {
        let now = crate::auth::unix_now();
        let mut all = self.entries.lock().expect("revocations lock");
        let before = all.len();
        all.extend(entries.into_iter().filter(|e| e.live(now)));
        if all.len() != before {
            shared_metrics()
                .updates
                .with_label_values(&[source.label()])
                .inc();
        }
        self.publish(&mut all, now);
    }

    /// Replace the entries in force by `entries` (the revocations file is authoritative).
    pub fn replace(&self, entries: impl IntoIterator<Item = Entry>, source: Source) {
        let now = crate::auth::unix_now();
        let mut all = self.entries.lock().expect("revocations lock");
        let new: BTreeSet<Entry> = entries.into_iter().filter(|e| e.live(now)).collect();
        if new != *all {
            shared_metrics()
                .updates
                .with_label_values(&[source.label()])
                .inc();
        }
        *all = new;
        self.publish(&mut all, now);
    }

    /// Drop expired entries.
    pub fn prune(&self) {
        let now = crate::auth::unix_now();
        let mut all = self.entries.lock().expect("revocations lock");
        self.publish(&mut all, now);
    }

    fn publish(&self, all: &mut BTreeSet<Entry>, now: u64) {
        all.retain(|e| e.live(now));
        self.set.store(Arc::new(RevocationSet::build(all.iter())));
        shared_metrics().revocations.set(all.len() as i64);
    }

    /// The entries in force, in order.
    pub fn entries(&self) -> Vec<Entry> {
        self.entries
            .lock()
            .expect("revocations lock")
            .iter()
            .cloned()
            .collect()
    }

    /// Record whether the store can be read (`/ready`'s body, `idgate_shared_store_up`).
    pub fn set_store_problem(&self, problem: Option<String>) {
        shared_metrics().store_up.set(i64::from(problem.is_none()));
        *self.store_problem.lock().expect("store status lock") = problem;
    }

    /// Why the store cannot be read now, if it cannot.
    pub fn store_problem(&self) -> Option<String> {
        self.store_problem
            .lock()
            .expect("store status lock")
            .clone()
    }
}

/// Start following the configured store (a background task on the current runtime). Entries
/// already in the store are loaded by the task's first read; until then (and while the store
/// is unreachable) the agent serves with what it knows.
pub fn follow(store: &RevocationStore, revocations: Arc<Revocations>) {
    match store {
        RevocationStore::Redis(r) => redis::spawn_follower(r.clone(), revocations),
        RevocationStore::File(path) => file::spawn_follower(path.clone(), revocations),
    }
}

/// `idgate revoke`: record `entry` in the configured store.
pub async fn revoke(store: &RevocationStore, entry: &Entry) -> Result<(), String> {
    match store {
        RevocationStore::Redis(r) => redis::add(r, entry).await,
        RevocationStore::File(path) => file::add(path, entry),
    }
}

/// `idgate revocations`: the entries in force in the configured store.
pub async fn list(store: &RevocationStore) -> Result<Vec<Entry>, String> {
    let now = crate::auth::unix_now();
    let mut entries = match store {
        RevocationStore::Redis(r) => redis::list(r, now).await?,
        RevocationStore::File(path) => file::read(path)?,
    };
    entries.retain(|e| e.live(now));
    entries.sort();
    entries.dedup();
    Ok(entries)
}

/// The shared store's metrics (bounded labels).
pub(crate) struct SharedMetrics {
    /// `idgate_shared_store_up`: 1 while the revocation store (Redis, or the revocations file)
    /// can be read, else 0.
    pub store_up: IntGauge,
    /// `idgate_revocations`: entries in force.
    pub revocations: IntGauge,
    /// `idgate_revocation_updates_total{source="pubsub|resync|file"}`: changes to the entries
    /// in force.
    pub updates: IntCounterVec,
}

pub(crate) fn shared_metrics() -> &'static SharedMetrics {
    static M: LazyLock<SharedMetrics> = LazyLock::new(|| {
        let m = SharedMetrics {
            store_up: IntGauge::new(
                "idgate_shared_store_up",
                "1 while the revocation store (Redis or the revocations file) can be read",
            )
            .expect("metric"),
            revocations: IntGauge::new("idgate_revocations", "Revocations in force")
                .expect("metric"),
            updates: IntCounterVec::new(
                Opts::new(
                    "idgate_revocation_updates_total",
                    "Changes to the revocations in force, by where they came from",
                ),
                &["source"],
            )
            .expect("metric"),
        };
        let r = &crate::metrics::metrics().registry;
        for c in [
            Box::new(m.store_up.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.revocations.clone()),
            Box::new(m.updates.clone()),
        ] {
            r.register(c).expect("registered once");
        }
        for s in ["pubsub", "resync", "file"] {
            m.updates.with_label_values(&[s]);
        }
        m
    });
    &M
}

#[cfg(test)]
mod tests;
