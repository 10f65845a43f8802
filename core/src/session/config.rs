//! Session configuration: the conduit's, plus connection and credit limits.

use crate::conduit::{ConduitConfig, ConfigError};
use crate::time::Duration;

/// Limits of one session. Peer-proposed numbers are clamped to these, never adopted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
pub struct SessionConfig {
    /// The conduit underneath.
    pub conduit: ConduitConfig,
    /// Most virtual connections open at once (root excluded), ours and the peer's together.
    /// Default 256.
    pub max_connections: u32,
    /// Most peer Opens waiting for the application to accept or reject. Default 256.
    pub max_pending_opens: u32,
    /// Bytes we let the peer send on a connection before we grant more. Default 256 KiB.
    pub initial_credit: u32,
    /// Most send credit we hold on a connection, whatever the peer grants. Default 16 MiB.
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
        Ok(())
    }
}
