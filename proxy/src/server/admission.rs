//! What a connection must get before it is served, so that clients who never finish a
//! handshake cannot lock out the ones who do:
//!
//! 1. a slot of its source address ([`SourceLimits`]: at most
//!    `server.max_connections_per_source` connections per IPv4 address or IPv6 /64,
//!    handshaking or open), so one host cannot take every slot;
//! 2. a slot of its listener's handshake budget ([`HandshakeBudget`]: at most
//!    `server.max_handshakes` handshakes pending per listener). A full budget evicts
//!    its oldest pending handshake rather than refusing the newcomer: a real client
//!    finishes its handshake in a few round trips, so the handshakes that stay pending
//!    longest are the ones that will never finish;
//! 3. after the handshake, one of the `server.max_connections` connection slots shared
//!    by every listener; a connection past that limit is answered BUSY and closed.
//!
//! None of these is taken before `accept()`, so a flood can fill a budget but never
//! stop a listener from accepting.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;

/// The handshakes pending on one listener, oldest first, at most `limit` of them.
pub(crate) struct HandshakeBudget {
    limit: usize,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    next_id: u64,
    /// Ids increase, so the queue is sorted by id.
    queue: VecDeque<(u64, CancellationToken)>,
}

/// One pending handshake's place in its listener's budget, released on drop.
pub(crate) struct HandshakeSlot {
    budget: Arc<HandshakeBudget>,
    id: u64,
    evicted: CancellationToken,
}

impl HandshakeBudget {
    /// A budget of `limit` pending handshakes (at least one).
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self { limit: limit.max(1), pending: Mutex::default() })
    }

    /// A slot for a new handshake; when the budget is full, the oldest pending
    /// handshake is told to give up its slot. Returns whether one was evicted.
    pub(crate) fn admit(self: &Arc<Self>) -> (HandshakeSlot, bool) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let evicted = if pending.queue.len() >= self.limit {
            pending.queue.pop_front().map(|(_, oldest)| oldest.cancel()).is_some()
        } else {
            false
        };
        let id = pending.next_id;
        pending.next_id += 1;
        let token = CancellationToken::new();
        pending.queue.push_back((id, token.clone()));
        (HandshakeSlot { budget: Arc::clone(self), id, evicted: token }, evicted)
    }

    /// Handshakes pending now.
    pub(crate) fn pending(&self) -> usize {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).queue.len()
    }

    /// Whether at least half the budget is taken: QUIC then asks new clients to prove
    /// their address (a Retry) before they get a slot.
    pub(crate) fn under_pressure(&self) -> bool {
        self.pending() * 2 >= self.limit
    }
}

impl HandshakeSlot {
    /// Completes when a newer handshake took this slot.
    pub(crate) async fn evicted(&self) {
        self.evicted.cancelled().await;
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut pending = self.budget.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if let Ok(index) = pending.queue.binary_search_by_key(&self.id, |(id, _)| *id) {
            pending.queue.remove(index);
        }
    }
}

/// Connections per source (handshaking or open), at most `per_source` each.
pub(crate) struct SourceLimits {
    /// Replaceable on a config reload (connections admitted while it was 0 are not
    /// counted afterwards).
    per_source: AtomicUsize,
    open: Mutex<HashMap<Source, usize>>,
}

/// What connections are counted by: an IPv4 address, or an IPv6 /64 (one host's
/// usual allocation, so a host cannot dodge the limit by changing its low 64 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
}

impl Source {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4.octets()),
                None => {
                    let octets = v6.octets();
                    Source::V6Prefix(octets[..8].try_into().expect("16 octets"))
                }
            },
        }
    }
}

/// One connection's place in its source's count, released on drop.
pub(crate) struct SourceSlot {
    limits: Arc<SourceLimits>,
    source: Source,
}

impl SourceLimits {
    /// At most `per_source` connections per source; 0: no limit.
    pub(crate) fn new(per_source: usize) -> Arc<Self> {
        Arc::new(Self { per_source: AtomicUsize::new(per_source), open: Mutex::default() })
    }

    /// Changes the limit for connections admitted from now on.
    pub(crate) fn set_per_source(&self, per_source: usize) {
        self.per_source.store(per_source, Ordering::Relaxed);
    }

    /// A slot for a connection from `ip` (`None`, a Unix socket peer, is not counted),
    /// or `Err` when that source is at its limit.
    pub(crate) fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Option<SourceSlot>, SourceFull> {
        let per_source = self.per_source.load(Ordering::Relaxed);
        let Some(ip) = ip.filter(|_| per_source > 0) else { return Ok(None) };
        let source = Source::of(ip);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(source).or_insert(0);
        if *count >= per_source {
            return Err(SourceFull);
        }
        *count += 1;
        Ok(Some(SourceSlot { limits: Arc::clone(self), source }))
    }
}

/// A source address already holds `server.max_connections_per_source` connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SourceFull;

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_budget_evicts_its_oldest_handshake() {
        let budget = HandshakeBudget::new(2);
        let (oldest, evicted) = budget.admit();
        assert!(!evicted);
        let (_second, _) = budget.admit();
        assert!(budget.under_pressure());
        let (_third, evicted) = budget.admit();
        assert!(evicted, "the third handshake made room");
        oldest.evicted().await;
        assert_eq!(budget.pending(), 2);
        drop(oldest);
        assert_eq!(budget.pending(), 2, "an evicted slot was already given up");
    }

    #[test]
    fn finished_handshakes_free_their_slot() {
        let budget = HandshakeBudget::new(4);
        let slots: Vec<_> = (0..4).map(|_| budget.admit().0).collect();
        drop(slots);
        assert_eq!(budget.pending(), 0);
        assert!(!budget.under_pressure());
    }

    #[test]
    fn sources_are_counted_per_ipv4_address_and_ipv6_slash_64() {
        let limits = SourceLimits::new(2);
        let ip = |text: &str| Some(text.parse::<IpAddr>().unwrap());
        let first = limits.admit(ip("192.0.2.1")).unwrap();
        let _second = limits.admit(ip("::ffff:192.0.2.1")).unwrap();
        assert_eq!(
            limits.admit(ip("192.0.2.1")).err(),
            Some(SourceFull),
            "a v4-mapped address is the same host"
        );
        assert!(limits.admit(ip("192.0.2.2")).is_ok(), "another address has its own count");
        drop(first);
        assert!(limits.admit(ip("192.0.2.1")).is_ok(), "a closed connection frees its slot");

        let _a = limits.admit(ip("2001:db8::1")).unwrap();
        let _b = limits.admit(ip("2001:db8::ffff:2")).unwrap();
        assert!(limits.admit(ip("2001:db8::3")).is_err(), "one /64 is one source");
        assert!(limits.admit(ip("2001:db8:0:1::1")).is_ok(), "the next /64 is another");
        assert!(limits.admit(None).unwrap().is_none(), "Unix peers are not counted");
    }

    #[test]
    fn zero_means_no_limit() {
        let limits = SourceLimits::new(0);
        let slots: Vec<_> = (0..100).map(|_| limits.admit(Some([127, 0, 0, 1].into())).unwrap()).collect();
        assert!(slots.iter().all(Option::is_none));
    }
}
