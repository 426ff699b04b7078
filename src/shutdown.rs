//! Graceful drain: one [`Drain`] handle fans a "stop now, finish by this deadline" signal out
//! to every connection task (the pingora `ShutdownWatch` idea, with the deadline carried along
//! so each task can bound its own wind-down).

use tokio::sync::watch;
use tokio::time::Instant;

/// The sending side, owned by the listener.
#[derive(Debug)]
pub struct Drain {
    tx: watch::Sender<Option<Instant>>,
}

/// The receiving side, one clone per task.
#[derive(Debug, Clone)]
pub struct DrainWatch {
    rx: watch::Receiver<Option<Instant>>,
}

impl Drain {
    pub fn new() -> (Drain, DrainWatch) {
        let (tx, rx) = watch::channel(None);
        (Drain { tx }, DrainWatch { rx })
    }

    /// A new watcher (for tasks started later).
    pub fn watch(&self) -> DrainWatch {
        DrainWatch {
            rx: self.tx.subscribe(),
        }
    }

    /// Tell every watcher to drain and to be done by `deadline`. Idempotent: the first
    /// deadline stays.
    pub fn start(&self, deadline: Instant) {
        self.tx.send_if_modified(|d| {
            if d.is_some() {
                return false;
            }
            *d = Some(deadline);
            true
        });
    }
}

impl DrainWatch {
    /// The drain deadline, if draining has started.
    pub fn deadline(&self) -> Option<Instant> {
        *self.rx.borrow()
    }

    /// Resolves with the deadline once draining starts (at once if it already has). If the
    /// [`Drain`] is dropped without starting, this never resolves.
    pub async fn started(&mut self) -> Instant {
        loop {
            if let Some(d) = *self.rx.borrow_and_update() {
                return d;
            }
            if self.rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn watchers_see_the_first_deadline() {
        let (drain, mut w) = Drain::new();
        let mut late = drain.watch();
        assert_eq!(w.deadline(), None);
        let d = Instant::now() + Duration::from_secs(5);
        let waiter = tokio::spawn(async move { w.started().await });
        drain.start(d);
        drain.start(d + Duration::from_secs(1));
        assert_eq!(waiter.await.unwrap(), d);
        assert_eq!(late.started().await, d);
        assert_eq!(late.deadline(), Some(d));
    }

    #[tokio::test]
    async fn dropped_drain_never_fires() {
        let (drain, mut w) = Drain::new();
        drop(drain);
        let r = tokio::time::timeout(Duration::from_millis(20), w.started()).await;
        assert!(r.is_err());
    }
}
