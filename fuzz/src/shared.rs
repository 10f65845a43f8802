//! Pieces the fuzz models share instead of each hand-writing them: the simulated byte-stream
//! direction ([`Pipe`], framed by the length-prefix encoder that `sotto_proto::stream` uses
//! and read by the production [`LinkDecoder`]), the `DataBatch` body encoding, and the
//! instant beyond which deadlines may saturate.

use sotto_proto::wire::framing::encode_len_prefix;
use sotto_proto::wire::varint::encode_varint;
use sotto_proto::wire::{LinkDecoder, LEN_PREFIX};
use std::collections::VecDeque;

/// Beyond this instant deadlines may saturate at [`sotto_proto::Instant::FAR_FUTURE`]; the
/// strict timer checks stop there (only "no panic" is checked).
pub(crate) const SATURATION_ZONE: u64 = 1 << 62;

/// Append one message to a `DataBatch` body (`(varint(len) bytes)+`).
pub(crate) fn push_batch_part(body: &mut Vec<u8>, part: &[u8]) {
    let mut len = [0u8; 5];
    let n = encode_varint(part.len() as u32, &mut len).expect("5 bytes hold a u32");
    body.extend_from_slice(&len[..n]);
    body.extend_from_slice(part);
}

/// One direction of a link: bytes in flight, the reader's decoder, fault flags.
#[derive(Debug)]
pub(crate) struct Pipe {
    pub(crate) data: VecDeque<u8>,
    /// Sizes (prefix included) of the messages whose bytes are in `data`, oldest first; the
    /// first may be partly delivered already (`head_done` bytes).
    sizes: VecDeque<usize>,
    head_done: usize,
    /// Writes are kept (false once the link is killed, blackholed or closed).
    pub(crate) open: bool,
    /// The reader sees EOF once `data` is drained.
    pub(crate) eof: bool,
    pub(crate) dec: LinkDecoder,
}

impl Pipe {
    pub(crate) fn new(max_frame_len: u32) -> Self {
        Self {
            data: VecDeque::new(),
            sizes: VecDeque::new(),
            head_done: 0,
            open: true,
            eof: false,
            dec: LinkDecoder::new(max_frame_len),
        }
    }

    /// A direction whose writer is already gone: nothing is kept, the reader sees EOF.
    pub(crate) fn closed(max_frame_len: u32) -> Self {
        Self { open: false, eof: true, ..Self::new(max_frame_len) }
    }

    /// Write one link message behind its length prefix (dropped once the pipe is closed).
    pub(crate) fn write(&mut self, msg: &[u8]) {
        if !self.open {
            return;
        }
        let mut prefix = [0u8; LEN_PREFIX];
        encode_len_prefix(msg.len() as u32, &mut prefix).expect("LEN_PREFIX bytes hold the prefix");
        self.data.extend(prefix);
        self.data.extend(msg.iter().copied());
        self.sizes.push_back(LEN_PREFIX + msg.len());
    }

    /// Take up to `n` bytes for the reader.
    pub(crate) fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.data.len());
        let mut left = n;
        while left > 0 {
            let Some(&first) = self.sizes.front() else { break };
            let rest = first - self.head_done;
            if left >= rest {
                left -= rest;
                self.sizes.pop_front();
                self.head_done = 0;
            } else {
                self.head_done += left;
                left = 0;
            }
        }
        self.data.drain(..n).collect()
    }

    /// Bytes that complete the next `k` messages (fewer if the stream is cut).
    pub(crate) fn bytes_for_messages(&self, k: usize) -> usize {
        let n: usize =
            self.sizes.iter().take(k).enumerate().map(|(i, s)| if i == 0 { s - self.head_done } else { *s }).sum();
        n.min(self.data.len())
    }

    /// Keep only the first `n` bytes in flight (the rest is lost with the link).
    pub(crate) fn truncate(&mut self, n: usize) {
        self.data.truncate(n);
    }

    /// Nobody reads any more.
    pub(crate) fn discard(&mut self) {
        self.data.clear();
        self.sizes.clear();
        self.head_done = 0;
        self.open = false;
    }
}
