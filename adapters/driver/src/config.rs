//! Adapter configuration: the core's [`ConduitConfig`] and session limits, plus the knobs
//! that only a driver has (reconnect backoff, inbound queue bounds, buffer sizes, acceptor
//! limits).

use std::time::Duration;

use sotto_proto::endpoint::EndpointConfig;
use sotto_proto::session::SessionConfig;
use sotto_proto::ConduitConfig;

/// Everything a session driver and an acceptor need. Start from [`Config::default`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The stable conduit's limits and timers. Its `recovery_timeout` is how long an
    /// initiator keeps redialing after losing a link (and how long an acceptor keeps a
    /// detached session); its `handshake_timeout` bounds each dial plus handshake, and the
    /// acceptor's wait for a ClientHello.
    pub conduit: ConduitConfig,
    /// Initiator: how long `connect` keeps retrying the first link (transient I/O errors and
    /// failed handshakes) before giving up. Default 10 s.
    pub connect_timeout: Duration,
    /// Initiator: the first backoff ceiling after a failed dial. Default 50 ms.
    pub backoff_initial: Duration,
    /// Initiator: the largest backoff ceiling. Default 5 s.
    pub backoff_max: Duration,
    /// Delivered items waiting for `recv`, at most. Default 1024. When full, the driver
    /// holds the peer's data back (unacknowledged, so the peer's sends backpressure once its
    /// replay ring is full) but keeps reading the link: the peer's acks (standalone, or
    /// riding on the data held back) and keepalive frames are taken at once, so a `send`
    /// waiting for ring room is not stalled by its own unread input and a reader that keeps
    /// reading at any pace never costs its link. The read buffer then holds up to what a
    /// peer with our replay ring can have in flight (about `replay_bytes` plus 20 bytes per
    /// `replay_frames`, plus one frame and one `read_chunk`); past that (a peer with a larger
    /// ring) reading stops until the application takes from the queue. One exception to the
    /// bound: if the link ends after the peer's GOODBYE was read, what was held back before
    /// it (the peer's last words, which nothing would replay) is queued at once.
    pub inbound_items: usize,
    /// Delivered item bytes waiting for `recv`, at most (one item is always allowed).
    /// Default 4 MiB.
    pub inbound_bytes: usize,
    /// Bytes reserved in the read buffer for one read, at most: the room starts at 4 KiB,
    /// doubles each time a read fills all of it, and the buffer is released once no item
    /// has moved for a second. Default 256 KiB: a peer's write
    /// batch (up to `max_frame_len + 4`) then mostly arrives in one or two reads rather than
    /// in several 64 KiB ones (one read call each). Reading into uninitialized capacity
    /// (tokio) touches only the pages data arrives in.
    pub read_chunk: usize,
    /// Size the write buffer that batches frames grows to; raised to the largest frame it
    /// must hold whole if smaller (a copied item, shorter than `lend_from`, with its header;
    /// with lending off, `max_frame_len`), plus the 4-byte prefix. The buffer starts at a
    /// few KiB, doubles while batches fill it, and goes back to its first size once no item
    /// has moved for a second. Default 64 KiB.
    pub write_buffer: usize,
    /// Items at least this long are not copied into the write buffer: they are written
    /// straight from the core's replay ring with a vectored write (headers from the buffer,
    /// items from the ring), saving one copy of every payload byte. Shorter ones are copied
    /// (one slice per item costs the kernel more than the copy). `usize::MAX` turns lending
    /// off. Default 2 KiB.
    pub lend_from: usize,
    /// How long the last frames of a dropped link (GOODBYE, REJECTED) may take to write
    /// before the link is closed anyway. Default 1 s.
    pub drain_timeout: Duration,
    /// Acceptor: links waiting for their ClientHello, at most; more are closed at once.
    /// Default 64.
    pub max_pending_handshakes: usize,
    /// Acceptor: new sessions waiting for `accept`, at most; more fresh ClientHellos get
    /// their link closed (the initiator retries). Default 64.
    pub accept_backlog: usize,
    /// Session API: the session layer's limits (connections, credit, metadata, churn). Its
    /// `conduit` field is ignored: [`Config::conduit`] is used.
    pub session: SessionConfig,
    /// Session acceptor: sessions held at once, attached or detached. Nothing is allocated
    /// for it up front: a session's buffers are allocated when it is created and freed when
    /// it ends. Set it from memory: what you can give sessions divided by what one may hold
    /// (its replay ring, `conduit.replay_bytes`; its `read_chunk` and `write_buffer`; its
    /// connections' queued data, bounded by their credit). When every one is taken, a new
    /// session reclaims the one detached longest, or with none detached is refused
    /// (REJECTED, logged at warn level and counted as the endpoint's `rejected_full`).
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
    /// Session API: entries waiting in one connection's queue before the driver holds the
    /// link's data back (as for `inbound_items`; a message, or a peer's batch of small
    /// messages, is one entry). A connection's queue is already bounded by its credit
    /// (`session.initial_credit`), in bytes and, with a version-2 peer (every sotto peer of
    /// this version), in messages: each spends at least `MIN_MESSAGE_CREDIT` (16) of it. The
    /// driver raises this limit to `initial_credit / 16 + 1`, so that credit always binds
    /// first and a slow reader of tiny messages stalls only its own connection. It binds only
    /// with a version-1 peer, whose empty messages cost no credit: there a flood of them
    /// toward a slow reader stalls the whole link rather than growing memory. Default 16384.
    pub conn_inbound_items: usize,
    /// Session API: delivered payloads at least this long are handed over as `Bytes` slices
    /// of the read buffer, without a copy; shorter ones are copied into a small
    /// per-connection arena (8 KiB blocks, one allocation per block). A slice keeps its whole
    /// read buffer allocation alive, so slicing small payloads would let a slow reader pin
    /// far more memory than its credit; this way a connection's unread messages keep at most
    /// its credit in arena blocks plus `initial_credit / copy_below` read buffers (of up to
    /// `read_chunk` bytes each: 64 x 256 KiB with the defaults, reached only if every one of
    /// those messages arrived in a different read) alive. Default 4 KiB.
    pub copy_below: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            conduit: ConduitConfig::default(),
            connect_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            inbound_items: 1024,
            inbound_bytes: 4 << 20,
            read_chunk: 256 << 10,
            write_buffer: 64 << 10,
            lend_from: 2 << 10,
            drain_timeout: Duration::from_secs(1),
            max_pending_handshakes: 64,
            accept_backlog: 64,
            session: SessionConfig::default(),
            max_sessions: 100_000,
            max_detached_sessions: u32::MAX,
            failure_budget: 16,
            failure_period: Duration::from_secs(10),
            conn_inbound_items: 16384,
            copy_below: 4 << 10,
        }
    }
}

impl Config {
    /// The write buffer's largest size: [`write_buffer`](Self::write_buffer), at least one
    /// largest frame that is copied rather than lent, with its prefix.
    #[must_use]
    pub fn write_buffer_len(&self) -> usize {
        self.write_buffer.max(self.write_buffer_min())
    }

    /// The write buffer's first size: the largest frame that is copied into it (an item
    /// shorter than `lend_from` with its data header, or a control frame, under 1 KiB),
    /// with its prefix, at least 4 KiB.
    #[must_use]
    pub fn write_buffer_min(&self) -> usize {
        use sotto_proto::wire::{LEN_PREFIX, MAX_DATA_HEADER_LEN};
        let max_frame = self.conduit.max_frame_len as usize;
        let copied = self.lend_from.max(1) - 1;
        let frame = copied.saturating_add(MAX_DATA_HEADER_LEN).max(1024).min(max_frame);
        (frame + LEN_PREFIX).max(4096)
    }

    /// The session configuration in force: [`Config::session`] with [`Config::conduit`].
    #[must_use]
    pub fn session_config(&self) -> SessionConfig {
        SessionConfig { conduit: self.conduit, ..self.session }
    }

    /// The core endpoint configuration a session acceptor runs with.
    #[must_use]
    pub fn endpoint_config(&self) -> EndpointConfig {
        EndpointConfig {
            session: self.session_config(),
            max_sessions: self.max_sessions,
            max_pending_handshakes: u32::try_from(self.max_pending_handshakes).unwrap_or(u32::MAX),
            max_detached_sessions: self.max_detached_sessions,
            handshake_timeout: self.conduit.handshake_timeout,
            failure_budget: self.failure_budget,
            failure_period: self.failure_period.into(),
            ..EndpointConfig::default()
        }
    }
}
