//! sotto core: placeholder docs, rewritten below once the conduit lands.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod conduit;
pub mod endpoint;
pub mod session;
pub mod stream;
pub mod time;
pub(crate) mod timer;
pub mod wire;

pub use conduit::{Conduit, ConduitConfig, Event, LinkId, Role, SessionEnd};
pub use time::{Duration, Instant};
pub use wire::ResumeKey;
