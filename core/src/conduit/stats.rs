//! A snapshot of a conduit's counters, for observability.

use crate::time::Duration;

/// Links dropped, by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[non_exhaustive]
pub struct LinkDrops {
    /// Reported gone by the driver (`link_down`: EOF, reset, write error).
    pub driver_reported: u64,
    /// Handshake deadline passed.
    pub handshake_timeout: u64,
    /// Bad hello, or REJECTED.
    pub handshake_failed: u64,
    /// Protocol violation.
    pub violation: u64,
    /// Gap in the sequence.
    pub gap: u64,
    /// Keepalive found the link silent.
    pub keepalive: u64,
    /// Base-form ack starvation cycled the link.
    pub ack_starved: u64,
    /// Replaced by a newer link.
    pub superseded: u64,
}

/// Counters and gauges of one conduit. Cheap to take; copy out at any time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[non_exhaustive]
pub struct ConduitStats {
    /// Data frames transmitted, replays included.
    pub frames_sent: u64,
    /// Item bytes transmitted, replays included.
    pub bytes_sent: u64,
    /// Items accepted by `send`.
    pub items_queued: u64,
    /// Items delivered to the application.
    pub frames_delivered: u64,
    /// Item bytes delivered.
    pub bytes_delivered: u64,
    /// Data frames transmitted again after a resume.
    pub frames_replayed: u64,
    /// Duplicate data frames dropped.
    pub duplicates_dropped: u64,
    /// Standalone ACK frames sent.
    pub acks_sent: u64,
    /// PINGs sent.
    pub pings_sent: u64,
    /// Matching PONGs received.
    pub pongs_received: u64,
    /// Links that completed a handshake.
    pub attaches: u64,
    /// Attaches that resumed an existing session.
    pub resumes: u64,
    /// Links dropped, by cause.
    pub link_drops: LinkDrops,
    /// Frames in the replay ring now.
    pub replay_frames: u64,
    /// Item bytes in the replay ring now.
    pub replay_bytes: u64,
    /// Latest round-trip time measured by PING/PONG.
    pub rtt: Option<Duration>,
    /// Events lost because the driver did not drain them (should stay 0).
    pub events_overflowed: u64,
    /// Initiator: early frames sent right behind a ClientHello (`EARLY`, at most one per
    /// session).
    pub early_frames_sent: u64,
    /// Acceptor: early frames received right behind a ClientHello.
    pub early_frames_received: u64,
}
