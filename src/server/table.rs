//! The open connections: the limit and the choice of an eviction victim (module docs of
//! [`super`], "Connection limit and eviction").

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::futures::Notified;
use tokio::time::Instant;

use super::Peer;

/// Bits of [`ConnShared::state`]: the low 32 bits count the NOTIFYs in flight.
const INFLIGHT_MASK: u64 = 0xffff_ffff;
const HELLO_DONE: u64 = 1 << 61;
const NOTIFIED: u64 = 1 << 62;
const EVICTED: u64 = 1 << 63;

/// What the accept loop sees of one connection.
#[derive(Debug)]
pub(super) struct ConnShared {
    peer: Peer,
    /// NOTIFYs in flight and the flags above, in one word so that eviction can claim an idle
    /// connection with one compare-and-swap.
    state: AtomicU64,
    /// Last activity (accept, a complete frame, an ACK), in µs since the table's epoch (ms
    /// would tie connections opened in the same millisecond, and the victim among ties is
    /// arbitrary).
    last_active: AtomicU64,
    evict: tokio::sync::Notify,
}

impl ConnShared {
    fn new(peer: Peer, now_us: u64) -> ConnShared {
        ConnShared {
            peer,
            state: AtomicU64::new(0),
            last_active: AtomicU64::new(now_us),
            evict: tokio::sync::Notify::new(),
        }
    }

    /// Eviction preference: 0 no HELLO yet, 1 HELLO but never a NOTIFY, 2 the others.
    fn class(state: u64) -> u8 {
        if state & HELLO_DONE == 0 {
            0
        } else if state & NOTIFIED == 0 {
            1
        } else {
            2
        }
    }

    /// Claim this connection for eviction if it has nothing in flight (and is not already
    /// being evicted).
    fn try_evict(&self) -> bool {
        self.state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s & INFLIGHT_MASK == 0 && s & EVICTED == 0).then_some(s | EVICTED)
            })
            .is_ok()
    }

    fn is_evicted(&self) -> bool {
        self.state.load(Ordering::Acquire) & EVICTED != 0
    }
}

/// The open connections, for the limit and the choice of an eviction victim. Locked only at
/// accept and when a connection ends; the per-NOTIFY bookkeeping is atomics in [`ConnShared`].
#[derive(Debug)]
pub(super) struct ConnTable {
    epoch: Instant,
    pub(super) max: usize,
    inner: Mutex<TableInner>,
}

#[derive(Debug, Default)]
struct TableInner {
    next_id: u64,
    conns: HashMap<u64, Arc<ConnShared>>,
    /// Connections claimed for eviction that have not ended yet (they do not count against
    /// the limit).
    evicting: usize,
}

/// The outcome of [`ConnTable::admit`].
pub(super) enum Admission {
    /// Admitted; `evicted` is the connection that was evicted to make room, if any.
    Admitted {
        slot: ConnSlot,
        evicted: Option<(Peer, u8)>,
    },
    /// Every connection has NOTIFYs in flight.
    Full,
}

impl ConnTable {
    pub(super) fn new(max: usize) -> Arc<ConnTable> {
        Arc::new(ConnTable {
            epoch: Instant::now(),
            max: max.max(1),
            inner: Mutex::new(TableInner::default()),
        })
    }

    fn now_us(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_micros() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TableInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admit a new connection, evicting one if the table is full.
    pub(super) fn admit(self: &Arc<Self>, peer: Peer) -> Admission {
        let now = self.now_us(Instant::now());
        let mut t = self.lock();
        let mut evicted = None;
        if t.conns.len() - t.evicting >= self.max {
            // Evicted connections normally end within milliseconds; if they pile up (a peer
            // that does not take its AGENT-DISCONNECT), stop evicting: the limit on open
            // descriptors matters more.
            let victim = if t.conns.len() < self.max * 2 {
                pick_victim(t.conns.values())
            } else {
                None
            };
            let Some(victim) = victim else {
                return Admission::Full;
            };
            t.evicting += 1;
            victim.evict.notify_one();
            evicted = Some((
                victim.peer,
                ConnShared::class(victim.state.load(Ordering::Relaxed)),
            ));
        }
        let id = t.next_id;
        t.next_id += 1;
        let shared = Arc::new(ConnShared::new(peer, now));
        t.conns.insert(id, shared.clone());
        Admission::Admitted {
            slot: ConnSlot {
                table: self.clone(),
                id,
                shared,
            },
            evicted,
        }
    }
}

/// The victim: among connections with nothing in flight, the lowest class (no HELLO, then
/// no NOTIFY ever, then the others), idle longest within it. Claimed (marked evicted) here.
pub(super) fn pick_victim<'a>(
    conns: impl Iterator<Item = &'a Arc<ConnShared>>,
) -> Option<Arc<ConnShared>> {
    let mut candidates: Vec<(u8, u64, &Arc<ConnShared>)> = conns
        .filter_map(|c| {
            let s = c.state.load(Ordering::Acquire);
            (s & INFLIGHT_MASK == 0 && s & EVICTED == 0).then(|| {
                (
                    ConnShared::class(s),
                    c.last_active.load(Ordering::Relaxed),
                    c,
                )
            })
        })
        .collect();
    candidates.sort_unstable_by_key(|(class, last, _)| (*class, *last));
    // The first whose claim succeeds: a NOTIFY may have started since the scan.
    candidates
        .into_iter()
        .find(|(_, _, c)| c.try_evict())
        .map(|(_, _, c)| c.clone())
}

/// A connection's entry in the table; removed on drop.
pub(super) struct ConnSlot {
    table: Arc<ConnTable>,
    id: u64,
    shared: Arc<ConnShared>,
}

impl ConnSlot {
    fn touch(&self, now: Instant) {
        self.shared
            .last_active
            .store(self.table.now_us(now), Ordering::Relaxed);
    }

    /// Whether the accept loop chose this connection for eviction.
    pub(super) fn is_evicted(&self) -> bool {
        self.shared.is_evicted()
    }

    /// Resolves when the accept loop evicts this connection.
    pub(super) fn evicted(&self) -> Notified<'_> {
        self.shared.evict.notified()
    }

    pub(super) fn hello_done(&self, now: Instant) {
        self.shared.state.fetch_or(HELLO_DONE, Ordering::AcqRel);
        self.touch(now);
    }

    pub(super) fn notify_started(&self, now: Instant) {
        self.shared.state.fetch_add(1, Ordering::AcqRel);
        self.shared.state.fetch_or(NOTIFIED, Ordering::AcqRel);
        self.touch(now);
    }

    pub(super) fn notify_done(&self, now: Instant) {
        self.shared.state.fetch_sub(1, Ordering::AcqRel);
        self.touch(now);
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut t = self.table.lock();
        t.conns.remove(&self.id);
        if self.shared.is_evicted() {
            t.evicting -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(state: u64, last_active: u64) -> Arc<ConnShared> {
        let c = ConnShared::new(Peer::Tcp(([127, 0, 0, 1], 1).into()), last_active);
        c.state.store(state, Ordering::Relaxed);
        Arc::new(c)
    }

    #[test]
    fn eviction_prefers_no_hello_then_no_notify_then_idle_longest_and_spares_inflight() {
        let busy_old = conn(HELLO_DONE | NOTIFIED | 2, 0); // oldest, but NOTIFYs in flight
        let used_old = conn(HELLO_DONE | NOTIFIED, 10);
        let used_new = conn(HELLO_DONE | NOTIFIED, 50);
        let hello_only = conn(HELLO_DONE, 40);
        let no_hello_new = conn(0, 90);
        let no_hello_old = conn(0, 80);
        let all = [
            &busy_old,
            &used_old,
            &used_new,
            &hello_only,
            &no_hello_new,
            &no_hello_old,
        ];
        let mut order = Vec::new();
        while let Some(v) = pick_victim(all.iter().copied()) {
            assert!(v.is_evicted());
            order.push(v.last_active.load(Ordering::Relaxed));
        }
        // Never a connection with NOTIFYs in flight; each victim is claimed once.
        assert_eq!(order, [80, 90, 40, 10, 50]);
        assert!(!busy_old.is_evicted());
        // Once its NOTIFYs are answered it is a candidate like any other.
        busy_old.state.fetch_sub(2, Ordering::Relaxed);
        assert!(Arc::ptr_eq(
            &pick_victim(all.iter().copied()).unwrap(),
            &busy_old
        ));
    }

    #[test]
    fn a_notify_that_starts_first_wins_the_race_with_eviction() {
        let c = conn(HELLO_DONE, 0);
        c.state.fetch_add(1, Ordering::AcqRel); // a NOTIFY started
        assert!(!c.try_evict());
        c.state.fetch_sub(1, Ordering::AcqRel);
        assert!(c.try_evict());
        assert!(!c.try_evict(), "claimed twice");
    }

    #[tokio::test]
    async fn table_admits_up_to_the_limit_then_evicts_then_refuses() {
        let table = ConnTable::new(2);
        let peer = Peer::Tcp(([127, 0, 0, 1], 1).into());
        let admit = |t: &Arc<ConnTable>| match t.admit(peer) {
            Admission::Admitted { slot, evicted } => Some((slot, evicted)),
            Admission::Full => None,
        };
        let (a, ev) = admit(&table).unwrap();
        assert!(ev.is_none());
        let (b, ev) = admit(&table).unwrap();
        assert!(ev.is_none());
        a.hello_done(Instant::now());
        b.hello_done(Instant::now());
        a.notify_started(Instant::now());
        // b is idle: evicted for c (class 1: HELLO, never a NOTIFY).
        let (c, ev) = admit(&table).unwrap();
        assert_eq!(ev.map(|(_, class)| class), Some(1));
        assert!(b.shared.is_evicted() && !a.shared.is_evicted());
        c.hello_done(Instant::now());
        c.notify_started(Instant::now());
        // a and c are busy, b is on its way out: refused.
        assert!(admit(&table).is_none());
        drop(b);
        assert!(
            admit(&table).is_none(),
            "b's end frees nothing: a and c fill the limit"
        );
        a.notify_done(Instant::now());
        let (_d, ev) = admit(&table).unwrap();
        assert_eq!(ev.map(|(_, class)| class), Some(2));
        assert!(a.shared.is_evicted());
    }
}
