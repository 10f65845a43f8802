//! A global allocator that tracks the bytes live on each thread, and their peak, for the
//! memory tests (`tests/memory.rs`). It forwards to [`System`]; installing it is up to each
//! test binary:
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: sotto_sim::live_alloc::Live = sotto_sim::live_alloc::Live;
//!
//! fn main() {
//!     let before = sotto_sim::live_alloc::live();
//!     let buffer = vec![0u8; 4096];
//!     assert!(sotto_sim::live_alloc::live() >= before + 4096);
//!     drop(buffer);
//!     assert_eq!(sotto_sim::live_alloc::live(), before);
//! }
//! ```
//!
//! Per thread, because a simulation runs on one thread and the test harness's own threads
//! allocate at times of their own.
#![allow(unsafe_code)] // a GlobalAlloc impl is unsafe by definition

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The live-bytes allocator: [`System`], counting per thread (see [`live`], [`peak`]).
#[derive(Debug)]
pub struct Live;

thread_local! {
    // Const-initialised and without a destructor: touching them never allocates, even from
    // inside the allocator, and they stay usable while a thread is torn down.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn add(n: isize) {
    let _ = LIVE.try_with(|l| {
        let v = l.get() + n;
        l.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

/// Bytes allocated and not yet freed by the calling thread (frees of memory another thread
/// allocated count too, so this can go below zero).
#[must_use]
pub fn live() -> isize {
    LIVE.with(Cell::get)
}

/// The most bytes live on the calling thread since the last [`reset_peak`].
#[must_use]
pub fn peak() -> isize {
    PEAK.with(Cell::get)
}

/// Start measuring the peak from the bytes live now.
pub fn reset_peak() {
    let now = live();
    PEAK.with(|p| p.set(now));
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// counters are thread-local cells and do not allocate.
unsafe impl GlobalAlloc for Live {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size() as isize);
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(new_size as isize - layout.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) };
        add(-(layout.size() as isize));
    }
}
