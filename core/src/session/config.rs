//! Session configuration: the conduit's, plus connection and credit limits.

use crate::conduit::{ConduitConfig, ConfigError};
use crate::time::Duration;

/// Limits of one session. Peer-proposed numbers are clamped to these, never adopted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[non_exhaustive]
pub struct SessionConfig {
    /// The conduit underneath.
    pub conduit: ConduitConfig,
    /// Most virtual connections open at once (root excluded), ours and the peer's together.
    /// Default 256.
    pub max_connections: u32,
    /// Most peer Opens waiting for the application to accept or reject. Default 256.
    pub max_pending_opens: u32,
    /// Credit we let the peer spend on a connection before we grant more: bytes, each
    /// message at least [`MIN_MESSAGE_CREDIT`](super::MIN_MESSAGE_CREDIT) with a version-2
    /// peer (so a window also bounds the messages a slow reader holds). Below
    /// `2 * MIN_MESSAGE_CREDIT` such a peer can send nothing (a message may use at most half
    /// a window). Default 256 KiB.
    pub initial_credit: u32,
    /// Most send credit we hold on a connection, whatever the peer grants. Below
    /// `2 * MIN_MESSAGE_CREDIT` nothing can be sent to a version-2 peer. Default 16 MiB.
    pub max_credit: u32,
    /// Largest metadata on Hello/Open/Accept/Reject/Close. Default 4 KiB.
    pub max_metadata: u32,
    /// Peer churn allowed per `churn_period` before the session ends with "too many resets":
    /// Opens we refuse for limits, and Opens the peer closes again before we answered them
    /// (rapid resets). The application's own rejects and closes do not count. Default 100.
    pub churn_budget: u32,
    /// See `churn_budget`. Default 10 s.
    pub churn_period: Duration,
    /// Highest connection id we allocate (ids are never reused; `open` fails past it).
    /// Default `u32::MAX`.
    pub max_conn_id: u32,
    /// Per-session memory budget in bytes (SCENARIOS L4), or `None` for no budget beyond the
    /// other limits. A session's memory is bounded by [`memory_bound`](Self::memory_bound)
    /// (replay ring, one reassembled frame, and a full credit window per connection, which is
    /// what the peer may make the application hold unread); with a budget, the connections
    /// allowed at once shrink to what fits ([`connection_cap`](Self::connection_cap)): Opens
    /// beyond it are rejected and our own `open` fails, exactly as for `max_connections`.
    /// Default `None`.
    pub max_memory: Option<u64>,
    /// Small messages sent on one connection while the previous one still waits unsent go
    /// into the same conduit item (a `DataBatch`, protocol version 2) up to this many bytes,
    /// so a burst of small messages costs one frame, one seq and one ack instead of one each.
    /// Nothing waits for a batch to fill: an item is only extended until it is first
    /// transmitted. Payloads up to a quarter of this are batched; larger ones travel alone.
    /// `0` turns batching off; it is also off towards a version-1 peer. Capped at the
    /// conduit's `max_item_len`. Default 16 KiB.
    pub batch_bytes: u32,
    /// Initiator: the first link of a fresh session carries the session's Hello right behind
    /// its ClientHello (`EARLY`, docs/protocol.md "Early Hello"), so the acceptor answers
    /// ServerHello and HelloYourself together and the session is ready one round trip
    /// sooner. An acceptor that does not know `EARLY` (a sotto acceptor older than this
    /// flag) fails that link; the initiator then retries without it, once per session, on
    /// its usual backoff. Acceptors always understand it. Default true.
    pub early_hello: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            conduit: ConduitConfig::default(),
            max_connections: 256,
            max_pending_opens: 256,
            initial_credit: 256 << 10,
            max_credit: 16 << 20,
            max_metadata: 4 << 10,
            churn_budget: 100,
            churn_period: Duration::from_secs(10),
            max_conn_id: u32::MAX,
            max_memory: None,
            batch_bytes: 16 << 10,
            early_hello: true,
        }
    }
}

impl SessionConfig {
    /// Check for values that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.conduit.validate()?;
        if self.max_connections == 0
            || self.max_connections > 1 << 20
            || self.initial_credit == 0
            || self.max_credit == 0
        {
            return Err(ConfigError::SessionLimits);
        }
        if self.connection_cap().is_none() {
            return Err(ConfigError::OverMemoryBudget);
        }
        Ok(())
    }

    /// The most memory a session with `connections` virtual connections open (root excluded)
    /// can hold: `replay_bytes + max_frame_len + (connections + 1) * initial_credit`.
    #[must_use]
    pub fn memory_for(&self, connections: u32) -> u64 {
        u64::from(self.conduit.replay_bytes)
            + u64::from(self.conduit.max_frame_len)
            + (u64::from(connections) + 1) * u64::from(self.initial_credit)
    }

    /// The worst case of [`memory_for`](Self::memory_for): every allowed connection open.
    #[must_use]
    pub fn memory_bound(&self) -> u64 {
        self.memory_for(self.connection_cap().unwrap_or(0))
    }

    /// Connections allowed open at once: `max_connections`, lowered to fit `max_memory`;
    /// `None` when the budget does not cover the ring, a frame and the root connection.
    #[must_use]
    pub fn connection_cap(&self) -> Option<u32> {
        let Some(budget) = self.max_memory else { return Some(self.max_connections) };
        let fixed = self.memory_for(0);
        if budget < fixed {
            return None;
        }
        let fit = (budget - fixed) / u64::from(self.initial_credit.max(1));
        let cap = u32::try_from(fit).unwrap_or(u32::MAX).min(self.max_connections);
        (cap > 0).then_some(cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_budget_caps_connections() {
        let d = SessionConfig::default();
        assert_eq!(d.connection_cap(), Some(256), "no budget: max_connections");
        assert_eq!(d.memory_bound(), (4 << 20) + (1 << 20) + 257 * (256 << 10));
        // 8 MiB (SCENARIOS L4's proposal) with the other defaults: 11 connections and root.
        let b = SessionConfig { max_memory: Some(8 << 20), ..d };
        assert_eq!(b.validate(), Ok(()));
        assert_eq!(b.connection_cap(), Some(11));
        assert_eq!(b.memory_bound(), 8 << 20);
        // Smaller windows, more connections.
        let c = SessionConfig { initial_credit: 16 << 10, ..b };
        assert_eq!(c.connection_cap(), Some(191));
        assert!(c.memory_bound() <= 8 << 20);
        // Never above max_connections.
        let m = SessionConfig { max_connections: 5, ..c };
        assert_eq!(m.connection_cap(), Some(5));
        // A budget that leaves no connection beside root is refused.
        let tight = SessionConfig { max_memory: Some(d.memory_for(0) + 1), ..d };
        assert_eq!(tight.connection_cap(), None);
        assert_eq!(tight.validate(), Err(ConfigError::OverMemoryBudget));
    }
}
