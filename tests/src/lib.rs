//! Deterministic simulation harness for sotto's stable conduit.
//!
//! A [`Sim`] holds two [`Conduit`](sotto_proto::Conduit)s, A (initiator) and B (acceptor), a
//! virtual clock, and simulated byte-stream links between them that use the real link framing
//! (a u32 LE length prefix written by the sender, [`sotto_proto::wire::LinkDecoder`] on the reading
//! side, reads split anywhere). The harness plays the driver exactly as the contract on
//! `Conduit` asks: after each input it drains `poll_transmit`, then `poll_event` (closing the
//! link on `DropLink`), and time jumps to the next timer or delivery. A redials after a
//! jittered backoff whenever it has no link.
//!
//! Faults: kill a link at any byte offset (mid-frame too), truncate it (EOF inside a frame),
//! close it cleanly, blackhole one direction (half-open, no EOF), stall delivery, fail, drop
//! or delay a re-attach; taps rewrite or drop frames; hand-crafted messages can be injected.
//! Every random choice comes from [`SimRng`] seeded by [`SimConfig::seed`], and every failure
//! prints the seed and how to reproduce it. Invariants I1 to I6 of shared/SCENARIOS.md are
//! checked after every input ([`Sim::check_invariants`]); [`chaos`] runs randomized
//! workloads and checks liveness (I7) once faults stop.
//!
//! The harness allocates everything when a `Sim` is built, so a run can be measured with a
//! counting allocator.
//!
//! [`net`] is the same kind of harness one layer up: several initiator
//! [`Session`](sotto_proto::session::Session)s (clients with dialers and application models) against
//! one acceptor [`Endpoint`](sotto_proto::endpoint::Endpoint), with the same link faults, raw test
//! connections and message forging; [`net::chaos`] runs randomized multi-connection workloads.
//!
//! Running: `cargo test -p sotto-tests` runs the named scenarios (tests/handshake.rs,
//! sequencing.rs, resume.rs, keepalive.rs, malformed.rs for the conduit; endpoint_handshake.rs,
//! endpoint_resume.rs, endpoint_demux.rs, endpoint_limits.rs for sessions and the endpoint:
//! one test per SCENARIOS.md id), the randomized runs (randomized.rs, 2000 seeds;
//! endpoint_randomized.rs, 300 seeds; `SOTTO_SEEDS=N` for more, `SOTTO_SEED=x` for exactly
//! one, as printed by a failure) and the allocation tests (no_alloc.rs, no_alloc_sessions.rs).
//!
//! A scenario test reads like this:
//!
//! ```
//! use sotto_tests::{secs, Side, Sim, SimConfig};
//!
//! let mut sim = Sim::connected(SimConfig::small());
//! sim.send(Side::A, 5);
//! assert!(sim.kill()); // reset mid-flight: both sides hear link_down
//! assert!(sim.run_until(secs(10), Sim::all_acked)); // A redials, resumes, replays
//! assert_eq!(sim.peer(Side::B).delivered(), 5);
//! ```

mod bytering;
pub mod chaos;
mod check;
mod clock;
pub mod config;
mod conn;
pub mod counting_alloc;
pub mod dialer;
mod faults;
pub mod items;
pub mod net;
pub mod peer;
pub mod pipe;
pub mod rng;
pub mod seeds;
pub mod sim;
pub mod taps;
pub mod wire_util;

pub use config::SimConfig;
pub use dialer::{DialOutcome, DialPolicy};
pub use pipe::EndKind;
pub use rng::SimRng;
pub use sim::Sim;

/// One of the two peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The initiator (attaches links, resumes by key).
    A,
    /// The acceptor (answers hellos, issues keys).
    B,
}

impl Side {
    /// The other peer.
    #[must_use]
    pub fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }
    /// Index into per-side arrays.
    #[must_use]
    pub fn idx(self) -> usize {
        match self {
            Self::A => 0,
            Self::B => 1,
        }
    }
}

/// `n` seconds.
#[must_use]
pub const fn secs(n: u64) -> sotto_proto::Duration {
    sotto_proto::Duration::from_secs(n)
}

/// `n` milliseconds.
#[must_use]
pub const fn ms(n: u64) -> sotto_proto::Duration {
    sotto_proto::Duration::from_millis(n)
}
