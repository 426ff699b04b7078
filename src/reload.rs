//! Hot reload (contract §1): on SIGHUP, rebuild the whole state from the configuration file and
//! swap it in; on any error keep the old state and say why. Also applies a new log level and
//! reopens the audit file (logrotate).
//!
//! The loop takes its triggers from any source ([`reload_loop`]), so the tests drive it with a
//! channel instead of real signals; [`reload_on_sighup`] feeds it SIGHUP.

use std::future::Future;
use std::io;
use std::sync::Arc;

use crate::config::Config;
use crate::engine::Engine;
use crate::systemd;
use crate::telemetry::{TelemetryError, TelemetryGuard};

/// What a reload may change in the logging set up at start.
pub trait LogControl: Send + Sync {
    /// Apply `[log] level`; `Ok(false)` when `RUST_LOG` governs the level.
    fn set_level(&self, level: &str) -> Result<bool, TelemetryError>;
    /// Reopen the audit file in place (after log rotation).
    fn reopen_audit(&self) -> io::Result<()>;
}

impl LogControl for TelemetryGuard {
    fn set_level(&self, level: &str) -> Result<bool, TelemetryError> {
        TelemetryGuard::set_level(self, level)
    }
    fn reopen_audit(&self) -> io::Result<()> {
        TelemetryGuard::reopen_audit(self)
    }
}

/// The result of one reload, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The new state serves. `restart_only`: changed settings that wait for a restart.
    Reloaded { restart_only: Vec<&'static str> },
    /// The old state keeps serving; the error as logged.
    Kept(String),
}

/// Reload once, as SIGHUP does, and log the outcome.
pub fn reload_once(engine: &Engine, logs: &dyn LogControl) -> Outcome {
    let before = engine.state().config.clone();
    let outcome = match engine.reload() {
        Ok(()) => {
            let after = engine.state().config.clone();
            if let Err(e) = logs.set_level(&after.log.level) {
                tracing::warn!("log level not changed: {e}");
            }
            tracing::info!("configuration reloaded");
            if let Some(w) = engine.state().refuses_everything() {
                tracing::warn!("{w}");
            }
            let restart_only = restart_only_changes(&before, &after);
            if !restart_only.is_empty() {
                tracing::warn!(
                    "changed settings that only take effect at the next restart: {} \
                     (the running agent keeps the old values)",
                    restart_only.join(", ")
                );
            }
            Outcome::Reloaded { restart_only }
        }
        Err(e) => {
            tracing::error!("configuration reload failed, keeping the old one:\n{e}");
            Outcome::Kept(e.to_string())
        }
    };
    if let Err(e) = logs.reopen_audit() {
        tracing::error!("cannot reopen the audit log: {e}");
    }
    outcome
}

/// Reload on every trigger until `next` returns `None`, telling systemd around each reload
/// (`RELOADING=1` ... `READY=1`).
pub async fn reload_loop<F, Fut>(engine: Arc<Engine>, logs: Arc<dyn LogControl>, mut next: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<()>>,
{
    while next().await.is_some() {
        systemd::notify_reloading();
        reload_once(&engine, &*logs);
        systemd::notify_ready();
    }
}

/// [`reload_loop`] on SIGHUP. Runs until the task is aborted.
pub async fn reload_on_sighup(engine: Arc<Engine>, logs: Arc<TelemetryGuard>) {
    use tokio::signal::unix::{signal, SignalKind};
    let hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot install the SIGHUP handler, reload disabled: {e}");
            return;
        }
    };
    let hup = Arc::new(tokio::sync::Mutex::new(hup));
    reload_loop(engine, logs, move || {
        let hup = hup.clone();
        async move { hup.lock().await.recv().await }
    })
    .await;
}

/// Sections a reload cannot apply to a running agent: the SPOP and admin listeners (and the
/// per-connection limits they were started with) and the audit log target. Reported so an
/// operator who edits them and sends SIGHUP is not misled by "configuration reloaded".
pub fn restart_only_changes(before: &Config, after: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let (b, a) = (&before.spop, &after.spop);
    if b.listen != a.listen {
        changed.push("spop.listen");
    }
    if (&b.socket_mode, &b.socket_group, &b.socket_owner)
        != (&a.socket_mode, &a.socket_group, &a.socket_owner)
    {
        changed.push("spop.socket_mode/socket_group/socket_owner");
    }
    let rest_changed = {
        // Everything else in [spop]: the limits the listener was started with.
        let mut b = b.clone();
        b.listen = a.listen.clone();
        (b.socket_mode, b.socket_group, b.socket_owner) = (
            a.socket_mode,
            a.socket_group.clone(),
            a.socket_owner.clone(),
        );
        b != *a
    };
    if rest_changed {
        changed.push("[spop]");
    }
    if before.admin != after.admin {
        changed.push("[admin]");
    }
    if before.log.audit != after.log.audit {
        changed.push("log.audit");
    }
    // The revocation follower (Redis or the revocations file) starts with the agent.
    if before.shared != after.shared {
        changed.push("[shared]");
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder {
        levels: Mutex<Vec<String>>,
        reopened: Mutex<usize>,
    }

    impl LogControl for Recorder {
        fn set_level(&self, level: &str) -> Result<bool, TelemetryError> {
            self.levels.lock().unwrap().push(level.to_owned());
            Ok(true)
        }
        fn reopen_audit(&self) -> io::Result<()> {
            *self.reopened.lock().unwrap() += 1;
            Ok(())
        }
    }

    const GOOD: &str = "[log]\nlevel = \"info\"\naudit = \"off\"\n\n[[rule]]\nname = \"health\"\npublic = true\npaths = [\"/healthz\"]\n";

    fn engine(dir: &std::path::Path, text: &str) -> (Arc<Engine>, std::path::PathBuf) {
        let path = dir.join("idgate.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load(&path).unwrap();
        let engine = Engine::new(config, Some(path.clone()), Engine::http_client()).unwrap();
        (Arc::new(engine), path)
    }

    fn rule_names(e: &Engine) -> Vec<String> {
        e.state()
            .policy
            .rules()
            .iter()
            .map(|r| r.name.to_string())
            .collect()
    }

    #[tokio::test]
    async fn a_reload_applies_a_good_file_and_keeps_the_old_state_on_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, path) = engine(dir.path(), GOOD);
        let logs = Arc::new(Recorder::default());
        // A new rule set: reloaded, level applied, audit reopened.
        std::fs::write(
            &path,
            GOOD.replace("level = \"info\"", "level = \"debug\"")
                .replace("name = \"health\"", "name = \"health-2\""),
        )
        .unwrap();
        assert_eq!(
            reload_once(&engine, &*logs),
            Outcome::Reloaded {
                restart_only: vec![]
            }
        );
        assert_eq!(rule_names(&engine), ["health-2"]);
        assert_eq!(*logs.levels.lock().unwrap(), ["debug"]);
        assert_eq!(*logs.reopened.lock().unwrap(), 1);

        // A broken file: the old state keeps serving, the audit file is still reopened.
        std::fs::write(&path, "[[rule]]\nname = 3\n").unwrap();
        let Outcome::Kept(why) = reload_once(&engine, &*logs) else {
            panic!("a broken file was applied");
        };
        assert!(why.contains("rule"), "{why}");
        assert_eq!(rule_names(&engine), ["health-2"]);
        assert_eq!(*logs.reopened.lock().unwrap(), 2);

        // A listener change is applied to nothing and reported.
        std::fs::write(&path, format!("[spop]\nlisten = \"127.0.0.1:1\"\n{GOOD}")).unwrap();
        assert_eq!(
            reload_once(&engine, &*logs),
            Outcome::Reloaded {
                restart_only: vec!["spop.listen"]
            }
        );
    }

    #[tokio::test]
    async fn the_loop_reloads_once_per_trigger_and_ends_with_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, path) = engine(dir.path(), GOOD);
        let logs = Arc::new(Recorder::default());
        let (tx, rx) = tokio::sync::mpsc::channel::<()>(4);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let looped = tokio::spawn(reload_loop(engine.clone(), logs.clone(), move || {
            let rx = rx.clone();
            async move { rx.lock().await.recv().await }
        }));
        std::fs::write(&path, GOOD.replace("\"health\"", "\"first\"")).unwrap();
        tx.send(()).await.unwrap();
        tx.send(()).await.unwrap();
        drop(tx);
        tokio::time::timeout(std::time::Duration::from_secs(10), looped)
            .await
            .expect("the loop ends when its trigger source closes")
            .unwrap();
        assert_eq!(rule_names(&engine), ["first"]);
        assert_eq!(*logs.reopened.lock().unwrap(), 2, "one reload per trigger");
    }
}
