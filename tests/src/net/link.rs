//! A link slot of a [`Net`](super::Net): one simulated byte stream between a client (or a raw
//! test connection) and the endpoint, both directions, the decoders each end reads through,
//! and what each end is bound to. Slots are allocated once and reused.

use sotto_proto::endpoint::{PendingLink, SessionHandle};
use sotto_proto::wire::LinkDecoder;
use sotto_proto::LinkId;

use crate::pipe::Pipe;

/// Index of the client's end (pipe it writes, decoder it reads through).
pub(crate) const CLIENT: usize = 0;
/// Index of the endpoint's end.
pub(crate) const SERVER: usize = 1;

/// What the client end of a link is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientEnd {
    /// Closed (or never opened).
    Closed,
    /// Client `usize`'s session, under this link id.
    Session(usize, LinkId),
    /// A raw test connection: the test writes bytes, what arrives is recorded.
    Raw,
}

/// What the endpoint end of a link is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ServerEnd {
    /// Closed (or refused).
    Closed,
    /// Waiting for its ClientHello.
    Pending(PendingLink),
    /// Routed to this session, under this link id.
    Session(SessionHandle, LinkId),
}

/// One link between a client and the endpoint.
#[derive(Debug)]
pub(crate) struct NetLink {
    /// Which link this is (counting from 1); 0 marks a free slot.
    pub(crate) serial: u64,
    pub(crate) client: ClientEnd,
    pub(crate) server: ServerEnd,
    /// `pipes[CLIENT]` carries what the client writes, `pipes[SERVER]` what the endpoint writes.
    pub(crate) pipes: [Pipe; 2],
    /// `decoders[e]` reassembles what end `e` reads (taken out while in use).
    pub(crate) decoders: [Option<LinkDecoder>; 2],
    /// The source the endpoint was told (a hash of the peer address).
    pub(crate) source: u64,
    /// Raw links: every byte that arrived from the endpoint (prefixes included).
    pub(crate) raw_rx: Vec<u8>,
    /// Raw links: the endpoint's end of stream has arrived.
    pub(crate) raw_eof: bool,
    /// Raw links: close the client end as soon as the end of stream arrives.
    pub(crate) raw_auto_close: bool,
}

impl NetLink {
    pub(crate) fn new(pipe_bytes: usize, pipe_frames: usize, max_frame_server: u32, max_frame_client: u32) -> Self {
        Self {
            serial: 0,
            client: ClientEnd::Closed,
            server: ServerEnd::Closed,
            pipes: [Pipe::new(pipe_bytes, pipe_frames), Pipe::new(pipe_bytes, pipe_frames)],
            decoders: [Some(LinkDecoder::new(max_frame_client)), Some(LinkDecoder::new(max_frame_server))],
            source: 0,
            raw_rx: Vec::with_capacity(4096),
            raw_eof: false,
            raw_auto_close: false,
        }
    }

    pub(crate) fn is_free(&self) -> bool {
        self.serial == 0
    }

    /// Take the slot for link number `serial` from `source`.
    pub(crate) fn open(&mut self, serial: u64, source: u64) {
        self.serial = serial;
        self.source = source;
        self.client = ClientEnd::Closed;
        self.server = ServerEnd::Closed;
        for p in &mut self.pipes {
            p.reset();
        }
        for d in self.decoders.iter_mut().flatten() {
            d.reset();
        }
        self.raw_rx.clear();
        self.raw_eof = false;
        self.raw_auto_close = false;
    }

    /// Whether end `e` is open.
    pub(crate) fn end_open(&self, e: usize) -> bool {
        if e == CLIENT {
            self.client != ClientEnd::Closed
        } else {
            self.server != ServerEnd::Closed
        }
    }

    /// Release the slot if neither end is open.
    pub(crate) fn free_if_closed(&mut self) {
        if self.client == ClientEnd::Closed && self.server == ServerEnd::Closed {
            self.serial = 0;
            for p in &mut self.pipes {
                p.reset();
            }
        }
    }

    /// Record bytes a raw client received (bounded: a raw test link reads little).
    pub(crate) fn record_raw(&mut self, bytes: &[u8]) {
        let room = self.raw_rx.capacity() - self.raw_rx.len();
        self.raw_rx.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}
