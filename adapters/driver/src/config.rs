//! Adapter configuration, grouped by concern: dialing ([`DialConfig`]), the acceptor's limits
//! ([`AcceptorConfig`]), buffers and queues ([`BufferConfig`]) and the protocol's limits and
//! timers ([`ProtocolConfig`]). Every duration is a `std::time::Duration`; the core's own
//! configuration types are built from these ([`Config::session_config`]).

use std::time::Duration;

use sotto_proto::conduit::ConfigError;
use sotto_proto::endpoint::EndpointConfig;
use sotto_proto::session::SessionConfig;
use sotto_proto::ConduitConfig;

/// Everything a session driver and an acceptor need. Start from [`Config::default`] and set
/// fields of its groups:
///
/// ```
/// # use sotto_driver::Config;
/// use std::time::Duration;
///
/// let mut config = Config::default();
/// config.dial.connect_timeout = Duration::from_secs(3);
/// config.acceptor.max_sessions = 1000;
/// config.protocol.recovery_timeout = Duration::from_secs(30);
/// assert_eq!(config.validate(), Ok(()));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[non_exhaustive]
pub struct Config {
    /// Initiator: how the first link is dialed and lost links are redialed.
    pub dial: DialConfig,
    /// Acceptor: how many links, sessions and failures it takes.
    pub acceptor: AcceptorConfig,
    /// Buffers and queues of every session's driver.
    pub buffers: BufferConfig,
    /// The protocol's limits and timers (stable conduit and session layer), the same on both
    /// sides.
    pub protocol: ProtocolConfig,
}

/// Initiator: dialing and redialing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[non_exhaustive]
pub struct DialConfig {
    /// How long `connect` keeps retrying the first link (transient I/O errors and failed
    /// handshakes) before giving up. Default 10 s.
    pub connect_timeout: Duration,
    /// The first backoff ceiling after a failed dial (the wait is drawn uniformly below the
    /// ceiling, which doubles per failure). Default 50 ms.
    pub backoff_initial: Duration,
    /// The largest backoff ceiling. Default 5 s.
    pub backoff_max: Duration,
}

impl Default for DialConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// Acceptor limits: what one listener holds at most, whatever its peers do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[non_exhaustive]
pub struct AcceptorConfig {
    /// Links waiting for their ClientHello, at most; more are closed at once. Default 1024
    /// (a pending link costs its socket and under a kilobyte; see `docs/sizing.md`).
    pub max_pending_handshakes: usize,
    /// Links from one source (peer IP address) waiting for their ClientHello, at most, so
    /// one source cannot fill `max_pending_handshakes` and lock every other client out.
    /// More from it are parked unread (up to `max_pending_handshakes` parked links in all,
    /// from every source, plus one per detached session; from one source all of those but
    /// a reserve of `max_pending_per_source` (at most half) for the others; past that closed
    /// at once) and started, oldest first, as the source's pending handshakes finish:
    /// clients behind one address reconnecting together wait their turn rather than redial
    /// after a backoff. A parked link waits at most `protocol.handshake_timeout`, then is
    /// closed. Held links (see `accept_backlog_per_source`) keep their pending handshake and
    /// count here. Unix sockets and generic streams (source unknown) have only the global cap.
    /// Default 256, a quarter of the default `max_pending_handshakes`.
    pub max_pending_per_source: usize,
    /// A link that sends no byte at all within this of its arrival is closed (counted as an
    /// expired handshake, not charged to its source's failure budget: in a reconnect storm an
    /// honest client's first bytes can wait out TCP retransmissions), well before
    /// `protocol.handshake_timeout`, which bounds the whole ClientHello. Default 2 s.
    pub first_byte_timeout: Duration,
    /// New sessions waiting for `accept` (or still in their session handshake), at most;
    /// more fresh ClientHellos get their link closed (the initiator retries). Default 1024.
    pub accept_backlog: usize,
    /// New sessions from one source waiting for `accept` (or still in their session
    /// handshake), at most, so one source cannot fill `accept_backlog`. A fresh ClientHello
    /// from a source at its share is held (its hello read, its pending handshake kept) and
    /// routed, oldest first, when the application takes one of that source's sessions or one
    /// of them ends in its session handshake; it waits at most until its handshake deadline
    /// (`protocol.handshake_timeout` after it arrived), then is closed. At most this many are
    /// held per source and `accept_backlog` in all (and, as pending handshakes,
    /// `max_pending_per_source` and `max_pending_handshakes` bound them); past that the link is
    /// closed (the initiator retries). Sources unknown (Unix sockets, generic streams) have
    /// only the global cap. Default 256, a quarter of the default `accept_backlog`.
    pub accept_backlog_per_source: usize,
    /// Session acceptor: sessions held at once, attached or detached. Nothing is allocated
    /// for it up front: a session's buffers are allocated when it is created and freed when
    /// it ends. Set it from memory: what you can give sessions divided by what one may hold
    /// (its replay ring, `protocol.replay_bytes`; its `buffers.read_chunk` and
    /// `buffers.write_buffer`; its connections' queued data, bounded by their credit). When
    /// every one is taken, a new session reclaims the one detached longest, or with none
    /// detached is refused as full (counted as the endpoint's `rejected_full`).
    /// Default 100,000.
    pub max_sessions: u32,
    /// Session acceptor: detached sessions kept at once; past it the one detached longest is
    /// evicted (lost). Default `u32::MAX`: only `max_sessions` binds, so a mass disconnect
    /// never evicts a session whose client is still within its resume window.
    pub max_detached_sessions: u32,
    /// Session acceptor: failed handshakes and failed resumes one source (peer IP address;
    /// Unix sockets and generic streams count as one source) may cause per `failure_period`
    /// before its links are refused unread. Default 16.
    pub failure_budget: u32,
    /// See `failure_budget`. Default 10 s.
    pub failure_period: Duration,
    /// The acceptor logs a link refusal of one kind (a limit, a full acceptor, an unknown
    /// key) from one source at most once per this interval: a flood from one source makes
    /// one line per interval, not one per link. The refusals not logged meanwhile are
    /// counted and reported (field `suppressed`) with that source's next line of that kind;
    /// every refusal is counted in the acceptor's stats either way. Zero logs every one.
    /// Default 10 s.
    pub refusal_log_interval: Duration,
}

impl Default for AcceptorConfig {
    fn default() -> Self {
        Self {
            max_pending_handshakes: 1024,
            max_pending_per_source: 256,
            first_byte_timeout: Duration::from_secs(2),
            accept_backlog: 1024,
            accept_backlog_per_source: 256,
            max_sessions: 100_000,
            max_detached_sessions: u32::MAX,
            failure_budget: 16,
            failure_period: Duration::from_secs(10),
            refusal_log_interval: Duration::from_secs(10),
        }
    }
}

/// Buffers and queues of a session's driver (see `docs/sizing.md` for what they cost).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[non_exhaustive]
pub struct BufferConfig {
    /// Raw stable conduit: delivered items waiting for `recv`, at most. Default 1024. When
    /// full, the driver holds the peer's data back (unacknowledged, so the peer's sends
    /// backpressure once its replay ring is full) but keeps reading the link: the peer's acks
    /// and keepalive frames are taken at once, so a reader that keeps reading at any pace
    /// never costs its link. The read buffer then holds up to what a peer with our replay ring
    /// can have in flight (about `replay_bytes` plus 20 bytes per `replay_frames`, plus one
    /// frame and one `read_chunk`); past that (a peer with a larger ring) reading stops until
    /// the application takes from the queue. One exception to the bound: if the link ends
    /// after the peer's GOODBYE was read, what was held back before it (the peer's last
    /// words, which nothing would replay) is queued at once.
    pub inbound_items: usize,
    /// Raw stable conduit: delivered item bytes waiting for `recv`, at most (one item is
    /// always allowed). Default 4 MiB.
    pub inbound_bytes: usize,
    /// Bytes reserved in the read buffer for one read, at most: the room starts at 512 B,
    /// doubles each time a read fills all of it, and the buffer is released once no item has
    /// moved for a second. A peer's write batch (up to `max_frame_len + 4`) then mostly
    /// arrives in one or two reads. Reading into uninitialized capacity (tokio) touches only
    /// the pages data arrives in. Default 256 KiB.
    pub read_chunk: usize,
    /// Size the write buffer that batches frames grows to; raised to the largest frame it
    /// must hold whole if smaller (a copied item, shorter than `lend_from`, with its header;
    /// with lending off, `max_frame_len`), plus the 4-byte prefix. The buffer starts at a few
    /// KiB, doubles while batches fill it, and goes back to its first size once no item has
    /// moved for a second. Default 64 KiB.
    pub write_buffer: usize,
    /// Items at least this long are not copied into the write buffer: they are written
    /// straight from the core's replay ring with a vectored write, saving one copy of every
    /// payload byte. Shorter ones are copied. `usize::MAX` turns lending off. Default 2 KiB.
    pub lend_from: usize,
    /// Session API: entries waiting in one connection's queue before the driver holds the
    /// link's data back (as for `inbound_items`; a message, or a peer's batch of small
    /// messages, is one entry). A connection's queue is already bounded by its credit (`protocol.initial_credit`), in
    /// bytes and, with a version-2 peer (every sotto peer of this version), in messages: each
    /// spends at least `MIN_MESSAGE_CREDIT` (16) of it. The driver raises this limit to
    /// `initial_credit / 16 + 1`, so that credit always binds first and a slow reader of tiny
    /// messages stalls only its own connection. It binds only with a version-1 peer, whose
    /// empty messages cost no credit: there a flood of them toward a slow reader stalls the
    /// whole link rather than growing memory. Default 16384.
    pub conn_inbound_items: usize,
    /// Session API: delivered payloads at least this long are handed over as `Bytes` slices
    /// of the read buffer, without a copy; shorter ones are copied into a small
    /// per-connection arena (8 KiB blocks). A slice keeps its whole read buffer allocation
    /// alive, so a connection's unread messages keep at most its credit in arena blocks plus
    /// `initial_credit / copy_below` read buffers (of up to `read_chunk` bytes each) alive.
    /// Default 4 KiB.
    pub copy_below: usize,
    /// Give the memory of freed buffers back to the system: with glibc's malloc, once idle
    /// sessions have freed at least 1 MiB of buffers since the last time, a background
    /// thread calls `malloc_trim(0)`, at most once a second (without it, an acceptor stays at
    /// the resident size of its busiest moment; see `docs/memory.md`). No effect with other C
    /// libraries. Turn it off in a process whose global allocator is not glibc's malloc.
    /// Default on.
    pub return_freed_memory: bool,
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            inbound_items: 1024,
            inbound_bytes: 4 << 20,
            read_chunk: 256 << 10,
            write_buffer: 64 << 10,
            lend_from: 2 << 10,
            conn_inbound_items: 16384,
            copy_below: 4 << 10,
            return_freed_memory: true,
        }
    }
}

/// The protocol's limits and timers: the stable conduit's
/// ([`ConduitConfig`](sotto_proto::ConduitConfig)) and the session layer's
/// ([`SessionConfig`](sotto_proto::session::SessionConfig)), with `std` durations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[non_exhaustive]
pub struct ProtocolConfig {
    /// Largest link message (frame) accepted or sent, in bytes. Default 1 MiB.
    pub max_frame_len: u32,
    /// Replay ring capacity in item bytes (per direction: what was sent and not yet acked).
    /// At least `max_frame_len`. Default 4 MiB.
    pub replay_bytes: u32,
    /// Replay ring capacity in frames. Between 1 and 2^30. Default 4096.
    pub replay_frames: u32,
    /// Advertise sotto's extended frames (standalone acks, keepalive, goodbye). Default true.
    pub ext: bool,
    /// Longest time a delivered frame stays unacked (extensions). Default 25 ms.
    pub ack_delay: Duration,
    /// Send a standalone ack after this many unacked deliveries (extensions). Default 32.
    pub ack_every: u32,
    /// Time between PINGs on a link (extensions). Default 10 s. In the base form (no PING):
    /// after a link cycled for ack starvation brought no ack, how long a sender still blocked
    /// on a full ring waits before the next cycle (at least `ack_starved_timeout`).
    pub ping_interval: Duration,
    /// Base form only (a vox peer acks only on its own data and in resume handshakes): while
    /// a `send` is blocked on a full ring with transmitted frames unacked, the link is cycled
    /// (so that the resume handshake carries the peer's position) once neither an ack nor a
    /// data frame has moved for this long. Default 1 s.
    pub ack_starved_timeout: Duration,
    /// A link on which nothing arrives for this long after a PING is dead (half-open); it is
    /// dropped and the session resumes on a new one. Default 20 s.
    pub pong_timeout: Duration,
    /// Inbound PINGs closer together than this are strikes. Default 1 s.
    pub min_ping_interval: Duration,
    /// More strikes than this end the session ("too many pings"). Default 2.
    pub max_ping_strikes: u32,
    /// The whole per-link handshake (and an initiator's dial) must finish within this; the
    /// acceptor's wait for a ClientHello too. Default 10 s.
    pub handshake_timeout: Duration,
    /// How long an initiator keeps redialing after losing a link, and how long an acceptor
    /// keeps a detached session, before the session is lost. Default 120 s.
    pub recovery_timeout: Duration,
    /// A duplicate frame older than this many frames behind the receive position is a
    /// violation rather than a replay artefact. Default 2^24.
    pub duplicate_window: u32,
    /// Session API: most virtual connections open at once (root excluded). Default 256.
    pub max_connections: u32,
    /// Session API: most peer Opens waiting for `accept`. Default 256.
    pub max_pending_opens: u32,
    /// Session API: credit (bytes) the peer may spend on a connection before we grant more:
    /// the most a slow reader of one connection holds unread. Default 256 KiB.
    pub initial_credit: u32,
    /// Session API: most send credit held on a connection, whatever the peer grants.
    /// Default 16 MiB.
    pub max_credit: u32,
    /// Session API: largest metadata on Hello/Open/Accept/Reject/Close. Default 4 KiB.
    pub max_metadata: u32,
    /// Session API: peer churn (Opens refused for limits, Opens closed before an answer)
    /// allowed per `churn_period` before the session ends. Default 100.
    pub churn_budget: u32,
    /// See `churn_budget`. Default 10 s.
    pub churn_period: Duration,
    /// Session API: highest connection id we allocate (ids are never reused). Default
    /// `u32::MAX`.
    pub max_conn_id: u32,
    /// Session API: per-session memory budget in bytes (replay ring, one frame, and a credit
    /// window per connection), or `None` for no budget beyond the other limits; with a
    /// budget, fewer connections are allowed at once. Default `None`.
    pub max_memory: Option<u64>,
    /// Session API: small messages sent in a burst on one connection share a conduit item up
    /// to this many bytes (nothing waits for a batch to fill). `0` turns batching off.
    /// Default 16 KiB.
    pub batch_bytes: u32,
    /// Session API, initiator: the first link of a new session carries the session Hello
    /// right behind the ClientHello (docs/protocol.md, "Early Hello"), and the session is
    /// ready a round trip sooner. An acceptor older than the flag fails that link; the
    /// initiator then retries without it, once per session. Default true.
    pub early_hello: bool,
    /// How long the last frames of a dropped link (GOODBYE, REJECTED) may take to write
    /// before the link is closed anyway; also bounds a dropped handle's graceful close.
    /// Default 1 s.
    pub drain_timeout: Duration,
    /// Session API: how long [`SessionHandle::close`](crate::SessionHandle::close) waits,
    /// before its GOODBYE, for the peer to acknowledge everything sent, and while no link is
    /// up for a link to carry the replay and the GOODBYE. Past it the session is closed
    /// anyway (and, with no link then, ends without GOODBYE: `unacked` says how many items
    /// may be lost). Default 10 s.
    pub close_timeout: Duration,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        let c = ConduitConfig::default();
        let s = SessionConfig::default();
        Self {
            max_frame_len: c.max_frame_len,
            replay_bytes: c.replay_bytes,
            replay_frames: c.replay_frames,
            ext: c.ext,
            ack_delay: c.ack_delay.into(),
            ack_every: c.ack_every,
            ping_interval: c.ping_interval.into(),
            ack_starved_timeout: c.ack_starved_timeout.into(),
            pong_timeout: c.pong_timeout.into(),
            min_ping_interval: c.min_ping_interval.into(),
            max_ping_strikes: c.max_ping_strikes,
            handshake_timeout: c.handshake_timeout.into(),
            recovery_timeout: c.recovery_timeout.into(),
            duplicate_window: c.duplicate_window,
            max_connections: s.max_connections,
            max_pending_opens: s.max_pending_opens,
            initial_credit: s.initial_credit,
            max_credit: s.max_credit,
            max_metadata: s.max_metadata,
            churn_budget: s.churn_budget,
            churn_period: s.churn_period.into(),
            max_conn_id: s.max_conn_id,
            max_memory: s.max_memory,
            batch_bytes: s.batch_bytes,
            early_hello: s.early_hello,
            drain_timeout: Duration::from_secs(1),
            close_timeout: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// Check for values that cannot work (what `connect*` and `serve*` check first).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.session_config().validate()
    }

    /// The write buffer's largest size: `buffers.write_buffer`, at least one largest frame
    /// that is copied rather than lent, with its prefix.
    #[must_use]
    pub fn write_buffer_len(&self) -> usize {
        self.buffers.write_buffer.max(self.write_buffer_min())
    }

    /// The write buffer's first size: the largest frame that is copied into it (an item
    /// shorter than `lend_from` with its data header, or a control frame, under 1 KiB),
    /// with its prefix. Batches that fill it double it, up to
    /// [`write_buffer_len`](Self::write_buffer_len).
    #[must_use]
    pub fn write_buffer_min(&self) -> usize {
        use sotto_proto::wire::{LEN_PREFIX, MAX_DATA_HEADER_LEN};
        let max_frame = self.protocol.max_frame_len as usize;
        let copied = self.buffers.lend_from.max(1) - 1;
        let frame = copied.saturating_add(MAX_DATA_HEADER_LEN).max(1024).min(max_frame);
        frame + LEN_PREFIX
    }

    /// The core stable-conduit configuration in force.
    #[must_use]
    pub fn conduit_config(&self) -> ConduitConfig {
        let p = &self.protocol;
        let mut c = ConduitConfig::default();
        c.max_frame_len = p.max_frame_len;
        c.replay_bytes = p.replay_bytes;
        c.replay_frames = p.replay_frames;
        c.ext = p.ext;
        c.ack_delay = p.ack_delay.into();
        c.ack_every = p.ack_every;
        c.ping_interval = p.ping_interval.into();
        c.ack_starved_timeout = p.ack_starved_timeout.into();
        c.pong_timeout = p.pong_timeout.into();
        c.min_ping_interval = p.min_ping_interval.into();
        c.max_ping_strikes = p.max_ping_strikes;
        c.handshake_timeout = p.handshake_timeout.into();
        c.recovery_timeout = p.recovery_timeout.into();
        c.duplicate_window = p.duplicate_window;
        c
    }

    /// The core session configuration in force.
    #[must_use]
    pub fn session_config(&self) -> SessionConfig {
        let p = &self.protocol;
        let mut s = SessionConfig::default();
        s.conduit = self.conduit_config();
        s.max_connections = p.max_connections;
        s.max_pending_opens = p.max_pending_opens;
        s.initial_credit = p.initial_credit;
        s.max_credit = p.max_credit;
        s.max_metadata = p.max_metadata;
        s.churn_budget = p.churn_budget;
        s.churn_period = p.churn_period.into();
        s.max_conn_id = p.max_conn_id;
        s.max_memory = p.max_memory;
        s.batch_bytes = p.batch_bytes;
        s.early_hello = p.early_hello;
        s
    }

    /// The core endpoint configuration a session acceptor runs with.
    #[must_use]
    pub fn endpoint_config(&self) -> EndpointConfig {
        let a = &self.acceptor;
        let mut e = EndpointConfig::default();
        e.session = self.session_config();
        e.max_sessions = a.max_sessions;
        e.max_pending_handshakes = u32::try_from(a.max_pending_handshakes).unwrap_or(u32::MAX);
        e.max_pending_per_source = u32::try_from(a.max_pending_per_source).unwrap_or(u32::MAX);
        e.max_detached_sessions = a.max_detached_sessions;
        e.handshake_timeout = self.protocol.handshake_timeout.into();
        e.failure_budget = a.failure_budget;
        e.failure_period = a.failure_period.into();
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_core_defaults() {
        let c = Config::default();
        assert_eq!(c.conduit_config(), ConduitConfig::default());
        assert_eq!(c.session_config(), SessionConfig::default());
        let e = c.endpoint_config();
        assert_eq!(e.session, SessionConfig::default());
        assert_eq!(e.max_sessions, EndpointConfig::default().max_sessions);
        assert_eq!(e.max_detached_sessions, EndpointConfig::default().max_detached_sessions);
        assert_eq!(e.max_pending_per_source, EndpointConfig::default().max_pending_per_source);
    }

    #[test]
    fn protocol_fields_reach_the_core_configs() {
        let mut c = Config::default();
        c.protocol.recovery_timeout = Duration::from_millis(1500);
        c.protocol.initial_credit = 1 << 12;
        c.acceptor.failure_period = Duration::from_secs(3);
        assert_eq!(c.session_config().conduit.recovery_timeout, sotto_proto::Duration::from_millis(1500));
        assert_eq!(c.session_config().initial_credit, 1 << 12);
        assert_eq!(c.endpoint_config().failure_period, sotto_proto::Duration::from_secs(3));
        c.protocol.replay_frames = 0;
        assert_eq!(c.validate(), Err(ConfigError::ReplayFramesOutOfRange));
    }
}
