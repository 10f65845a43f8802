//! Support for the adapters' real-socket tests: a chaos proxy on plain threads, stream
//! wrappers that misbehave (one byte per call, writes returning 0), and a checked workload.
//! The tests themselves are in `tests/`.
#![deny(unsafe_code)] // allowed in `live_bytes` only (a GlobalAlloc impl)

pub mod capture;
pub mod key_tap;
pub mod kill_switch;
pub mod live_bytes;
pub mod proxy;
#[cfg(unix)]
pub mod restart;
pub mod scale;
pub mod sessions;
pub mod streams;
pub mod workload;
