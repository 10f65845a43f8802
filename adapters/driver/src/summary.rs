//! Acceptor-wide figures, the same on both acceptors ([`AcceptorSummary`]): most come from
//! the endpoint both route through (sessions live and detached, handshakes, most refusals);
//! the rest are [`Gauges`] the acceptor keeps beside it, among them the bytes its sessions'
//! buffers hold, to which each session adds its own changes as they happen (its driver,
//! under the session's own lock, [`Share`]). So reading the summary never visits the
//! sessions: a few atomic loads and the acceptor's locks, whatever the number of sessions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sotto_proto::endpoint::EndpointStats;

/// What one acceptor holds and has turned away, in the same terms for the session acceptor
/// ([`SessionAcceptorStats::summary`](crate::SessionAcceptorStats::summary)) and the raw one
/// ([`AcceptorStats::summary`](crate::AcceptorStats::summary)). A snapshot, taken in
/// O(1): no session is visited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[non_exhaustive]
pub struct AcceptorSummary {
    /// Sessions this acceptor started that have not ended and been freed yet (attached,
    /// detached, or in their session handshake), whether or not the application has taken
    /// them.
    pub sessions_live: u64,
    /// Of those, the ones without a link now, waiting for their initiator to resume.
    pub sessions_detached: u64,
    /// Links in their handshake now (waiting for their ClientHello).
    pub handshakes_pending: u64,
    /// ClientHellos that made a session or resumed one: new sessions once they were ready
    /// (a session-layer session once its session handshake finished, a raw conduit at
    /// once), plus resumes their session accepted.
    pub handshakes_completed: u64,
    /// Links and sessions turned away, by reason.
    pub refused: Refusals,
    /// Bytes allocated for the live sessions' link buffers (replay rings and the drivers'
    /// read and write buffers), the sum of their
    /// [`SessionStats::buffer_bytes`](crate::SessionStats::buffer_bytes) (or
    /// [`Stats::buffer_bytes`](crate::Stats::buffer_bytes)), each as of its driver's last
    /// step. Connection
    /// queues (delivered messages the application has not read) are not included.
    pub buffer_bytes: u64,
}

/// Links and sessions an acceptor turned away, by reason. Each counts from the acceptor's
/// start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[non_exhaustive]
pub struct Refusals {
    /// New sessions answered REJECTED (full) because `acceptor.max_sessions` were held,
    /// none detached.
    pub full: u64,
    /// New sessions whose link was closed because `acceptor.accept_backlog` sessions (or
    /// `accept_backlog_per_source` from their source) waited for `accept`.
    pub backlog_full: u64,
    /// Resumes answered REJECTED: no live session held the key, or the session holding it
    /// refused it (a retired key, a stale duplicate).
    pub unknown_key: u64,
    /// Links closed unread because their source was over its failure budget
    /// (`acceptor.failure_budget` per `failure_period`).
    pub rate_limited: u64,
    /// Links closed unread because their source had `acceptor.max_pending_per_source`
    /// links in their handshake.
    pub source_quota: u64,
    /// Links closed unread because `acceptor.max_pending_handshakes` links were in their
    /// handshake.
    pub pending_full: u64,
    /// Links whose first message was not a valid ClientHello.
    pub bad_hello: u64,
    /// Links whose link hook (a TLS handshake, say) failed or panicked before their
    /// ClientHello.
    pub link_hook_failed: u64,
    /// Links that sent no byte within `acceptor.first_byte_timeout`.
    pub first_byte_timeout: u64,
    /// Links that sent their first byte but no whole ClientHello within
    /// `protocol.handshake_timeout`.
    pub handshake_timeout: u64,
}

/// What an acceptor counts beside its endpoint, for its summary: the bytes its sessions'
/// buffers hold (each session adds its changes, [`Share`]) and the links refused before the
/// endpoint counts them by reason.
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    buffer_bytes: AtomicU64,
    rate_limited: AtomicU64,
    pending_full: AtomicU64,
}

impl Gauges {
    /// A link was refused unread because its source is over its failure budget.
    pub(crate) fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// A link was refused unread because `max_pending_handshakes` links were pending.
    pub(crate) fn pending_full(&self) {
        self.pending_full.fetch_add(1, Ordering::Relaxed);
    }

    /// The summary of an acceptor whose endpoint reports `e` and which turned `backlog_full`
    /// new sessions away for a full accept backlog.
    pub(crate) fn summary(&self, e: &EndpointStats, backlog_full: u64) -> AcceptorSummary {
        AcceptorSummary {
            sessions_live: e.sessions_live,
            sessions_detached: e.sessions_detached,
            handshakes_pending: e.pending_links,
            handshakes_completed: e.sessions_ready + e.resumes_routed,
            refused: Refusals {
                full: e.rejected_full,
                backlog_full,
                unknown_key: e.rejected,
                rate_limited: self.rate_limited.load(Ordering::Relaxed),
                source_quota: e.source_quota_refused,
                pending_full: self.pending_full.load(Ordering::Relaxed),
                bad_hello: e.bad_hellos,
                link_hook_failed: e.pending_failed,
                first_byte_timeout: e.first_byte_expired,
                handshake_timeout: e.handshakes_expired.saturating_sub(e.first_byte_expired),
            },
            buffer_bytes: self.buffer_bytes.load(Ordering::Relaxed),
        }
    }
}

/// One session's share of its acceptor's buffer bytes: what it last reported, taken back
/// when it is dropped (when its driver finishes).
#[derive(Debug)]
pub(crate) struct Share {
    gauges: Arc<Gauges>,
    buffer_bytes: u64,
}

impl Share {
    /// A new session of the acceptor whose gauges these are.
    pub(crate) fn new(gauges: &Arc<Gauges>) -> Self {
        Self { gauges: Arc::clone(gauges), buffer_bytes: 0 }
    }

    /// The session's buffers hold `bytes` now. Touches the shared atomic only on a change.
    #[inline]
    pub(crate) fn set_buffer_bytes(&mut self, bytes: u64) {
        if bytes != self.buffer_bytes {
            if bytes > self.buffer_bytes {
                self.gauges.buffer_bytes.fetch_add(bytes - self.buffer_bytes, Ordering::Relaxed);
            } else {
                self.gauges.buffer_bytes.fetch_sub(self.buffer_bytes - bytes, Ordering::Relaxed);
            }
            self.buffer_bytes = bytes;
        }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.set_buffer_bytes(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_their_changes_and_take_them_back_when_dropped() {
        let g = Arc::new(Gauges::default());
        let mut a = Share::new(&g);
        let mut b = Share::new(&g);
        a.set_buffer_bytes(1000);
        b.set_buffer_bytes(500);
        a.set_buffer_bytes(300);
        g.rate_limited();
        let s = g.summary(&EndpointStats::default(), 2);
        assert_eq!((s.buffer_bytes, s.refused.rate_limited, s.refused.backlog_full), (800, 1, 2));
        drop(b);
        assert_eq!(g.summary(&EndpointStats::default(), 0).buffer_bytes, 300);
        drop(a);
        assert_eq!(g.summary(&EndpointStats::default(), 0).buffer_bytes, 0);
    }
}
