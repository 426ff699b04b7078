//! systemd integration: `sd_notify` readiness, reload and stop notifications, and the watchdog.
//!
//! Every function is a no-op when `NOTIFY_SOCKET` is unset (not started by systemd, or a unit
//! with `Type=simple`), so `main` calls them unconditionally. Notification failures are logged
//! and otherwise ignored: a service manager that cannot be told about readiness will time the
//! unit out, which is the right outcome, and there is nothing better the agent can do.
//!
//! Call order in `main`:
//!
//! ```text
//! bind SPOP + admin listeners ──> systemd::notify_ready()  ──> systemd::spawn_watchdog()
//! SIGHUP ──> systemd::notify_reloading() ──> build + swap ──> systemd::notify_ready()
//! SIGTERM ──> systemd::notify_stopping() ──> drain ──> exit
//! ```

use std::time::Duration;

use sd_notify::NotifyState;

/// Smallest watchdog ping period. `WatchdogSec=` below a few milliseconds makes no sense for
/// this service; the floor keeps a misconfigured unit from turning the pinger into a busy loop.
const MIN_WATCHDOG_PING: Duration = Duration::from_millis(10);

fn send(what: &str, states: &[NotifyState<'_>]) {
    // `false`: keep NOTIFY_SOCKET, later notifications (reload, stop, watchdog) need it.
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "sd_notify {what} failed");
    }
}

/// Tell systemd the agent is serving (`READY=1`): call it once the SPOP and admin listeners
/// are bound and the configuration is loaded, and again after each reload. `Type=notify`
/// units are "active" only from then on, so `systemctl start` waits for it.
pub fn notify_ready() {
    send(
        "ready",
        &[NotifyState::Ready, NotifyState::Status("serving")],
    );
}

/// Tell systemd a reload started (`RELOADING=1` with `MONOTONIC_USEC`, the form
/// `Type=notify-reload` requires since systemd 253). Follow with [`notify_ready`] when the new
/// configuration is in place, or kept the old one after an error.
pub fn notify_reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send("reloading", &[NotifyState::Reloading, now]),
        Err(_) => send("reloading", &[NotifyState::Reloading]),
    }
}

/// Tell systemd the agent is shutting down (`STOPPING=1`): call it when SIGTERM/SIGINT arrives,
/// before draining.
pub fn notify_stopping() {
    send(
        "stopping",
        &[NotifyState::Stopping, NotifyState::Status("draining")],
    );
}

/// Set the free-form status line `systemctl status` shows (e.g. "waiting for JWKS of corp").
pub fn notify_status(status: &str) {
    send("status", &[NotifyState::Status(status)]);
}

/// The watchdog ping period: half of `WATCHDOG_USEC` (as sd_watchdog_enabled(3) recommends),
/// when the watchdog is enabled for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return None;
    }
    Some((Duration::from_micros(usec) / 2).max(MIN_WATCHDOG_PING))
}

/// If systemd enabled the watchdog (`WatchdogSec=` in the unit), spawn a task on the current
/// tokio runtime that sends `WATCHDOG=1` every half interval, and return its handle. The ping
/// runs on the same runtime as the SPOP connections, so a wedged runtime stops it and systemd
/// restarts the agent.
///
/// # Panics
/// Outside a tokio runtime.
pub fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let period = watchdog_interval()?;
    tracing::debug!(?period, "systemd watchdog enabled");
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            send("watchdog", &[NotifyState::Watchdog]);
        }
    }))
}
