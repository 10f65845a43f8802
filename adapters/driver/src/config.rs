//! Adapter configuration: the core's [`ConduitConfig`] plus the knobs that only a driver has
//! (reconnect backoff, the inbound queue bound, buffer sizes, acceptor limits).

use std::time::Duration;

use sotto::ConduitConfig;

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
    /// Delivered items waiting for `recv`, at most. When full the driver stops reading the
    /// link (the peer's sends then backpressure). Default 1024. Keepalive frames are not read
    /// either, so an application that leaves the queue full for longer than `pong_timeout`
    /// sees its link cycled (the session resumes; nothing is lost).
    pub inbound_items: usize,
    /// Delivered item bytes waiting for `recv`, at most (one item is always allowed).
    /// Default 4 MiB.
    pub inbound_bytes: usize,
    /// Bytes reserved in the read buffer for one read. Default 64 KiB.
    pub read_chunk: usize,
    /// Size of the write buffer that batches frames; raised to `max_frame_len + 4` if
    /// smaller. Default 64 KiB.
    pub write_buffer: usize,
    /// How long the last frames of a dropped link (GOODBYE, REJECTED) may take to write
    /// before the link is closed anyway. Default 1 s.
    pub drain_timeout: Duration,
    /// Acceptor: links waiting for their ClientHello, at most; more are closed at once.
    /// Default 64.
    pub max_pending_handshakes: usize,
    /// Acceptor: new sessions waiting for `accept`, at most; more fresh ClientHellos get
    /// their link closed (the initiator retries). Default 64.
    pub accept_backlog: usize,
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
            read_chunk: 64 << 10,
            write_buffer: 64 << 10,
            drain_timeout: Duration::from_secs(1),
            max_pending_handshakes: 64,
            accept_backlog: 64,
        }
    }
}

impl Config {
    /// The write buffer size actually used: at least one largest frame with its prefix.
    #[must_use]
    pub fn write_buffer_len(&self) -> usize {
        self.write_buffer.max(self.conduit.max_frame_len as usize + sotto::wire::LEN_PREFIX)
    }
}
