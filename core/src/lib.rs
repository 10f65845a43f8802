//! # sotto: a session that survives its links
//!
//! sotto keeps a session alive between two peers across links (TCP connections, Unix
//! sockets, any byte stream) that break, stall or go half-open: links are replaced, what was
//! in flight is replayed, and the application sees every item exactly once, in order.
//!
//! This crate is the protocol logic only, as **sans-IO** state machines: no I/O, no clock, no
//! randomness, no allocation per message in steady state (buffers grow with live data while
//! a session warms up and give memory back on `shrink_buffers`), `no_std` + `alloc`. Adapters (`sotto-tokio`,
//! `sotto-smol`) drive it on real runtimes.
//!
//! Layers, bottom up:
//! - [`wire`]: link framing, the 25-byte hellos, base and extended frames (byte-compatible
//!   with vox 0.3.0's stable conduit; see WIRE.md).
//! - [`conduit`]: the stable conduit, [`Conduit`]: handshake, seq/ack, replay ring, resume,
//!   key rotation, keepalive, goodbye. Usable alone (this is what talks to vox peers).
//! - [`session`]: virtual connections with credit flow control inside conduit items,
//!   [`session::Session`].
//! - [`endpoint`]: the acceptor side, routing incoming links to sessions by resume key,
//!   [`endpoint::Endpoint`].
//! - [`stream`]: helpers for carrying link messages over byte streams.
//! - [`state`]: the byte format in which a conduit or a session at rest moves to another
//!   process (`export` / `import`).
//!
//! # The contract (every state machine here)
//!
//! Getters take `&self`. Inputs are `handle_*(now, ..)`. Commands (`send`, `link_up`,
//! `link_down`, `close`, ...) change state. Outputs are `poll_transmit` (one frame into caller
//! memory), `poll_event` and `poll_timeout`. **After every input or command, drain all outputs
//! before the next input.** Time is a parameter ([`Instant`]); a `now` earlier than a previous
//! one is clamped. No input can panic: bad bytes get a typed error and drop the link (the
//! session resumes) or end the session.
//!
//! # A run loop
//!
//! Two conduits, a message-oriented link that dies mid-stream, a resume that replays what the
//! peer had not received:
//!
//! ```
//! use sotto_proto::{Conduit, ConduitConfig, Event, Instant, LinkId, ResumeKey, Role};
//!
//! /// One side's view of the link: messages in flight to the other side.
//! struct Side {
//!     conduit: Conduit,
//!     link: Option<LinkId>,
//! }
//!
//! /// Drain `from`'s outputs and deliver its frames to `to` (if a link joins them).
//! fn pump(now: Instant, from: &mut Side, to: &mut Side, delivered: &mut Vec<Vec<u8>>) {
//!     let mut buf = vec![0u8; from.conduit.max_transmit_len()];
//!     while let Some(t) = from.conduit.poll_transmit(now, &mut buf) {
//!         if let (Some(link), true) = (to.link, from.link == Some(t.link)) {
//!             if let Ok(Some(item)) = to.conduit.handle_message(now, link, &buf[..t.len]) {
//!                 delivered.push(item.to_vec());
//!             }
//!         }
//!     }
//!     while let Some(event) = from.conduit.poll_event() {
//!         if let Event::DropLink { link, .. } = event {
//!             from.conduit.link_down(now, link);
//!             from.link = None;
//!         }
//!     }
//! }
//!
//! let cfg = ConduitConfig::default();
//! let mut a = Side { conduit: Conduit::new(Role::Initiator, cfg).unwrap(), link: None };
//! let mut b = Side { conduit: Conduit::new(Role::Acceptor, cfg).unwrap(), link: None };
//! let mut at_b = Vec::new();
//! let mut at_a = Vec::new();
//! let now = Instant::ZERO;
//!
//! // First link. The acceptor's resume key comes from the driver (the adapters draw it
//! // from the OS random source).
//! a.link = Some(a.conduit.link_up(now, ResumeKey::ZERO));
//! b.link = Some(b.conduit.link_up(now, ResumeKey([1; 16])));
//! for i in 0..3u8 {
//!     a.conduit.send(&[i]).unwrap();
//! }
//! for _ in 0..3 {
//!     pump(now, &mut a, &mut b, &mut at_b);
//!     pump(now, &mut b, &mut a, &mut at_a);
//! }
//! assert_eq!(at_b, [[0], [1], [2]]);
//!
//! // The link dies with two more items sent but never transmitted.
//! a.conduit.send(&[3]).unwrap();
//! a.conduit.send(&[4]).unwrap();
//! a.conduit.link_down(now, a.link.take().unwrap());
//! b.conduit.link_down(now, b.link.take().unwrap());
//! a.conduit.send(&[5]).unwrap(); // queued behind the replay
//!
//! // A new link: the initiator resumes with its key; both sides replay from the other's
//! // position, in order, before anything new.
//! a.link = Some(a.conduit.link_up(now, ResumeKey::ZERO));
//! b.link = Some(b.conduit.link_up(now, ResumeKey([2; 16])));
//! for _ in 0..3 {
//!     pump(now, &mut a, &mut b, &mut at_b);
//!     pump(now, &mut b, &mut a, &mut at_a);
//! }
//! assert_eq!(at_b, [[0], [1], [2], [3], [4], [5]]);
//! assert_eq!(a.conduit.stats().resumes, 1);
//!
//! // Time drives acks and keepalive: fire timers when poll_timeout says so.
//! let later = a.conduit.poll_timeout().unwrap();
//! a.conduit.handle_timeout(later);
//! b.conduit.handle_timeout(later);
//! pump(later, &mut b, &mut a, &mut at_a);
//! assert_eq!(a.conduit.unacked(), 0, "B's standalone ack trimmed A's replay ring");
//! ```
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod conduit;
pub mod endpoint;
pub mod handoff;
pub mod session;
pub mod state;
pub mod stream;
pub mod time;
pub(crate) mod timer;
pub mod wire;

pub use conduit::{Conduit, ConduitConfig, Event, LinkId, Role, SessionEnd};
pub use time::{Duration, Instant};
pub use wire::ResumeKey;
