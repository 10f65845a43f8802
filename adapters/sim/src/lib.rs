//! A deterministic simulated runtime for `sotto-driver`: the real driver code (session and
//! raw paths) runs on one thread under virtual time, every choice drawn from one seed, so a
//! failing run reproduces exactly from the seed it prints.
//!
//! - [`Sim`] / [`SimRuntime`] ([`executor`]): a single-threaded executor polling ready tasks
//!   in a seeded order (or FIFO), tasks cancelled when their guard drops as
//!   [`sotto_driver::Runtime`] requires, a virtual clock ([`Runtime::now`](sotto_driver::Runtime::now))
//!   that jumps to the next timer deadline when no task is ready, and timers on it. A run
//!   with nothing runnable and no timer armed while its work remains is a hang
//!   ([`Stuck::Hang`]); so is one that passes its virtual time limit.
//! - [`Net`] ([`net`]): in-memory duplex links (`futures::io::AsyncRead + AsyncWrite`) with
//!   seeded faults (kills at any byte, half-open links, stalls, short transfers, spurious
//!   wake-ups, failed dials), a connector for the initiator and a listener for the acceptor.
//! - [`workload`]: the randomized runs' traffic and checks (exactly-once, in-order delivery
//!   per connection and per raw conduit; bounded queues; no hang; no panic).
//! - [`fixture`]: the scenario tests' building blocks (a session pair, a future cancelled
//!   after k polls); [`panics`]: a per-thread panic count; [`trace`]: `SOTTO_TRACE=1`
//!   prints the driver's events on virtual time; [`live_alloc`]: a global allocator
//!   counting the bytes live per thread, for the memory tests (the crate's only unsafe
//!   code, forwarding to `System`).
//!
//! docs/simulation.md describes the harness and how to rerun a seed.

pub mod executor;
pub mod fixture;
pub mod fleet;
pub mod live_alloc;
pub mod net;
pub mod panics;
pub mod trace;
pub mod workload;

pub use executor::{JoinHandle, Sim, SimOptions, SimRuntime, SimTimer, Stuck};
pub use net::{Faults, Listener, Net, NetStats, SimStream};
