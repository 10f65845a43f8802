//! A counting global allocator for the allocation tests (no_alloc.rs, no_alloc_sessions.rs):
//! it forwards to [`System`] and counts every allocation and reallocation. Installing it is
//! up to each test binary, so it does not affect the other tests:
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: sotto_tests::counting_alloc::Counting = sotto_tests::counting_alloc::Counting;
//!
//! fn main() {
//!     let before = sotto_tests::counting_alloc::allocations();
//!     let buffer = vec![0u8; 64];
//!     assert_eq!(sotto_tests::counting_alloc::allocations(), before + 1);
//!     drop(buffer);
//! }
//! ```
#![allow(unsafe_code)] // a GlobalAlloc impl is unsafe by definition

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The counting allocator: [`System`], counting calls to `alloc`, `alloc_zeroed` and
/// `realloc` per thread (see [`allocations`]).
#[derive(Debug)]
pub struct Counting;

thread_local! {
    // Const-initialised and without a destructor: touching it never allocates, even from
    // inside the allocator, and it stays usable while a thread is torn down.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    ALLOCATIONS.with(|c| c.set(c.get() + 1));
}

/// Allocations (and reallocations) made so far *by the calling thread* through [`Counting`],
/// if it is the global allocator of this process (otherwise always 0). Per thread, because
/// the test harness's own threads allocate at times of their own (output capture, timing
/// reports) and must not be charged to the code under test, which runs on one thread.
#[must_use]
pub fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// counter is a thread-local cell and does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}
