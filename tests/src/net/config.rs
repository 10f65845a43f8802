//! What a [`Net`](super::Net) is made of: the initiators' session configuration, the
//! endpoint's configuration, the links' latency and read chunking, the dial policy, the
//! payloads the applications send, and the seed.

use sotto_proto::endpoint::EndpointConfig;
use sotto_proto::session::SessionConfig;
use sotto_proto::wire::{LEN_PREFIX, MAX_DATA_HEADER_LEN};
use sotto_proto::{ConduitConfig, Duration};

use crate::dialer::DialPolicy;

/// Configuration of a [`Net`](super::Net).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Initiator sessions (clients), each with its own dialer.
    pub clients: usize,
    /// Every client session's configuration.
    pub client: SessionConfig,
    /// The acceptor endpoint's configuration (its sessions' configuration included).
    pub endpoint: EndpointConfig,
    /// One-way latency of every link.
    pub latency: Duration,
    /// Largest read chunk (bytes handed to a decoder at once); 0 means "everything due".
    pub chunk_max: usize,
    /// Per mille of reads that take a tiny chunk (1 to 7 bytes), to split frames anywhere.
    pub tiny_chunk_per_mille: u32,
    /// How clients get links.
    pub dial: DialPolicy,
    /// Shortest payload the applications send.
    pub payload_min: u32,
    /// Longest payload the applications send (must fit both sides' windows and frames).
    pub payload_max: u32,
    /// Link slots (links alive or draining at once, raw test links included).
    pub link_slots: usize,
    /// The run's seed (keys, chunking, dialing, application choices).
    pub seed: u64,
    /// How to reproduce this run, printed on failure.
    pub repro: &'static str,
}

impl NetConfig {
    /// Small rings and frames with the default timers, `clients` clients: fast scenario tests.
    #[must_use]
    pub fn small(clients: usize) -> Self {
        let conduit = {
            let mut patched = ConduitConfig::default();
            patched.max_frame_len = 4096;
            patched.replay_bytes = 64 * 1024;
            patched.replay_frames = 256;
            patched
        };
        let session = {
            let mut patched = SessionConfig::default();
            patched.conduit = conduit;
            patched.max_connections = 16;
            patched.max_pending_opens = 16;
            patched.initial_credit = 8192;
            patched
        };
        Self {
            clients,
            client: session,
            endpoint: {
                let mut patched = EndpointConfig::default();
                patched.session = session;
                patched.max_sessions = 16;
                patched.max_pending_handshakes = 8;
                patched.max_detached_sessions = 8;
                patched
            },
            latency: Duration::from_millis(1),
            chunk_max: 0,
            tiny_chunk_per_mille: 0,
            dial: DialPolicy::default(),
            payload_min: 4,
            payload_max: 200,
            link_slots: 4 * clients + 16,
            seed: 0,
            repro: "deterministic test: rerun it by name",
        }
    }

    /// The same session configuration for the clients and the endpoint's sessions.
    #[must_use]
    pub fn with_session(mut self, s: SessionConfig) -> Self {
        self.client = s;
        self.endpoint.session = s;
        self
    }

    /// Bytes one pipe may hold: everything a session can have in flight on one link (its whole
    /// replay ring with headers, plus control frames), with room to spare. Exceeding it is an
    /// I6 failure.
    #[must_use]
    pub fn pipe_bytes(&self) -> usize {
        let (a, b) = (self.client.conduit, self.endpoint.session.conduit);
        let bytes = a.replay_bytes.max(b.replay_bytes) as usize;
        let frames = a.replay_frames.max(b.replay_frames) as usize;
        bytes + frames * 2 * (MAX_DATA_HEADER_LEN + LEN_PREFIX) + 64 * 1024
    }

    /// Link messages one pipe may hold in flight.
    #[must_use]
    pub fn pipe_frames(&self) -> usize {
        let (a, b) = (self.client.conduit, self.endpoint.session.conduit);
        a.replay_frames.max(b.replay_frames) as usize * 2 + 1024
    }

    /// The largest frame either side may write.
    #[must_use]
    pub fn max_frame_len(&self) -> u32 {
        self.client.conduit.max_frame_len.max(self.endpoint.session.conduit.max_frame_len)
    }
}
