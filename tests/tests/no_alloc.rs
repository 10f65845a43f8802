//! No allocation after construction (DESIGN.md, contract 4): a counting global allocator
//! (this file only, so it does not affect the other tests) watches long randomized runs with
//! hundreds of link deaths and resumes, in both frame forms. The conduits, the link decoders
//! and the harness itself allocate everything up front; the measured section must allocate
//! nothing at all.
//!
//! A replay ring grows as its items need room (a few doublings while a session warms up, up
//! to its caps) and otherwise never allocates. The contract is "no allocation in steady
//! state"; a ring at its caps is the most warmed-up state there is, so the rings are grown to
//! their caps (`reserve_buffers`) before the count starts: any allocation counted is then
//! one that no warm-up would have made, i.e. a per-message allocation. Growth itself is
//! tested in the ring's unit tests (bounded doublings, items kept).

use sotto_tests::chaos::{random_setup, Chaos};
use sotto_tests::counting_alloc::{allocations, Counting};
use sotto_tests::{secs, Side};

#[global_allocator]
static GLOBAL: Counting = Counting;

const REPRO: &str = "cargo test -p sotto-tests --test no_alloc";

#[test]
fn no_allocation_after_construction_across_many_resumes() {
    for (seed, ext) in [(11u64, true), (12, false)] {
        let (mut cfg, mut plan) = random_setup(seed, REPRO);
        cfg.a.ext = ext;
        cfg.b.ext = ext;
        plan.half_open = ext;
        plan.items = [4000, 4000];
        plan.fault_phase = secs(900);
        plan.fault_gap_max = secs(2);
        let start = allocations();
        let mut chaos = Chaos::with(cfg, plan);
        for side in [Side::A, Side::B] {
            chaos.sim.peer_mut(side).conduit.reserve_buffers();
        }
        let before = allocations();
        assert!(before > start, "the counter sees construction");
        let report = chaos.run();
        let allocated = allocations() - before;
        assert_eq!(allocated, 0, "allocations during the run (seed {seed}, ext {ext}): {report:?}");
        assert!(report.resumes >= 100, "too few resumes to mean much: {report:?}");
        assert_eq!(report.delivered, [4000, 4000]);
        assert!(!chaos.sim.peer(Side::A).conduit.is_ended());
        eprintln!("{report:?}");
    }
}
