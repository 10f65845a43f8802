//! Conduit configuration: every limit and timer, with the defaults from DESIGN.md.

use crate::time::Duration;
use crate::wire::MAX_DATA_HEADER_LEN;

/// Limits and timers of one stable conduit. Build with [`ConduitConfig::default`] and adjust
/// fields; [`ConduitConfig::validate`] runs when a conduit is constructed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[non_exhaustive]
pub struct ConduitConfig {
    /// Largest link message (frame) accepted or sent, in bytes. Default 1 MiB.
    pub max_frame_len: u32,
    /// Replay ring capacity in item bytes. Default 4 MiB. At least `max_frame_len`.
    pub replay_bytes: u32,
    /// Replay ring capacity in frames. Default 4096. Between 1 and 2^30.
    pub replay_frames: u32,
    /// Advertise sotto's extended frames (standalone acks, keepalive, goodbye). Default true.
    pub ext: bool,
    /// Longest time a delivered frame stays unacked (extensions). Default 25 ms.
    pub ack_delay: Duration,
    /// Send a standalone ack after this many unacked deliveries (extensions). Default 32.
    pub ack_every: u32,
    /// Time between PINGs on an idle or busy link (extensions). Default 10 s. In the base form
    /// (no PING): after a link cycled for ack starvation brought no ack, how long a sender
    /// still blocked on a full ring waits before the next cycle (at least
    /// `ack_starved_timeout`).
    pub ping_interval: Duration,
    /// Base form only (no extensions: a vox peer acks only on its own data frames and in
    /// resume handshakes). While a `send` is blocked on a full ring and transmitted frames are
    /// unacked, the link is cycled (`LinkDropReason::AckStarved`, so that the resume handshake
    /// carries the peer's position) once neither an ack-bearing frame has arrived nor a data
    /// frame been transmitted for this long. A peer that keeps acking, however late, is never
    /// cycled: its sender just waits for `Writable`. Default 1 s; longer than the link's
    /// round trip plus the peer's longest pause between its own sends avoids needless cycles.
    pub ack_starved_timeout: Duration,
    /// A link on which nothing arrives for this long after a PING is dead. Default 20 s.
    pub pong_timeout: Duration,
    /// Inbound PINGs closer together than this are strikes. Default 1 s.
    pub min_ping_interval: Duration,
    /// More strikes than this end the session ("too many pings"). Default 2.
    pub max_ping_strikes: u32,
    /// The whole per-link handshake must finish within this. Default 10 s.
    pub handshake_timeout: Duration,
    /// A detached session is lost after this long without a link (the initiator's
    /// `recovery_timeout`, the acceptor's `resume_window`). Default 120 s.
    pub recovery_timeout: Duration,
    /// A duplicate frame older than this many frames behind the receive position is a
    /// violation rather than a replay artefact. Default 2^24.
    pub duplicate_window: u32,
}

impl Default for ConduitConfig {
    fn default() -> Self {
        Self {
            max_frame_len: 1 << 20,
            replay_bytes: 4 << 20,
            replay_frames: 4096,
            ext: true,
            ack_delay: Duration::from_millis(25),
            ack_every: 32,
            ping_interval: Duration::from_secs(10),
            ack_starved_timeout: Duration::from_secs(1),
            pong_timeout: Duration::from_secs(20),
            min_ping_interval: Duration::from_secs(1),
            max_ping_strikes: 2,
            handshake_timeout: Duration::from_secs(10),
            recovery_timeout: Duration::from_secs(120),
            duplicate_window: 1 << 24,
        }
    }
}

/// A configuration that cannot work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[repr(u8)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_frame_len` must leave room for a data header and the hello (at least 64 bytes).
    FrameTooSmall,
    /// `replay_bytes` must hold at least one largest item.
    ReplayBytesTooSmall,
    /// `replay_frames` must be between 1 and 2^30 (serial-number arithmetic needs the unacked
    /// window far below 2^31).
    ReplayFramesOutOfRange,
    /// `ack_every` must be at least 1.
    AckEveryZero,
    /// Session limits: `max_connections` in 1..=2^20, credits non-zero.
    SessionLimits,
    /// `max_memory` does not cover the replay ring, one frame and the root connection plus
    /// one more connection's credit window.
    OverMemoryBudget,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::FrameTooSmall => "max_frame_len must be at least 64",
            Self::ReplayBytesTooSmall => "replay_bytes must be at least max_frame_len",
            Self::ReplayFramesOutOfRange => "replay_frames must be in 1..=2^30",
            Self::AckEveryZero => "ack_every must be at least 1",
            Self::SessionLimits => "max_connections must be in 1..=2^20 and credits non-zero",
            Self::OverMemoryBudget => "max_memory must cover replay_bytes, max_frame_len and two credit windows",
        })
    }
}

impl core::error::Error for ConfigError {}

impl ConduitConfig {
    /// Check the configuration for values that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_frame_len < 64 {
            return Err(ConfigError::FrameTooSmall);
        }
        if self.replay_bytes < self.max_item_len() {
            return Err(ConfigError::ReplayBytesTooSmall);
        }
        if self.replay_frames == 0 || self.replay_frames > 1 << 30 {
            return Err(ConfigError::ReplayFramesOutOfRange);
        }
        if self.ack_every == 0 {
            return Err(ConfigError::AckEveryZero);
        }
        Ok(())
    }

    /// The largest item `send` accepts: `max_frame_len` less the largest data header.
    #[must_use]
    pub const fn max_item_len(&self) -> u32 {
        self.max_frame_len.saturating_sub(MAX_DATA_HEADER_LEN as u32)
    }
}
