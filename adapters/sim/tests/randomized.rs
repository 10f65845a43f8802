//! Randomized runs of the real driver under simulation, session and raw APIs: per seed an
//! initiator and an acceptor on a faulty in-memory net, sequence-numbered traffic both ways,
//! checked for exactly-once in-order delivery, bounded queues, no panic and no hang.
//!
//! `SOTTO_SEED=n` reruns one seed; `SOTTO_SEEDS=n` runs n seeds (default below).

use std::time::Instant;

use sotto_sim::workload::{base_form_run, raw_run, session_run, Outcome};
use sotto_tests::seeds::{run_each, seed_count, single_seed};

/// Seeds per API in a default `cargo test` run.
const DEFAULT_SEEDS: u64 = 1000;

/// Seeds past the default count that once failed, run in every default run too: links so
/// slow (short transfers, stalls) that one large frame took longer than `pong_timeout` (73266:
/// the session API; 156183: the raw API) or `ack_starved_timeout` (156183, base form) to
/// arrive, and each resume replayed it on a link dropped before it arrived (found with
/// `SOTTO_SEEDS=200000`; fixed by `Conduit::handle_progress`).
const FOUND: [u64; 2] = [73266, 156183];

fn seeds() -> Vec<u64> {
    match single_seed() {
        Some(s) => vec![s],
        None => (1..=seed_count(DEFAULT_SEEDS)).chain(FOUND).collect(),
    }
}

fn run(api: &str, test: &str, f: fn(u64) -> Result<Outcome, String>) {
    let started = Instant::now();
    let mut total = Outcome::default();
    let mut kills = 0;
    let mut half_opens = 0;
    let mut dial_failures = 0;
    let ran = run_each(seeds(), &format!("cargo test -p sotto-sim --test randomized {test}"), |seed| match f(seed) {
        Ok(o) => {
            total.delivered += o.delivered;
            total.polls += o.polls;
            kills += o.net.kills;
            half_opens += o.net.half_opens;
            dial_failures += o.net.dial_failures;
        }
        Err(e) => panic!("{api} run failed for seed {seed}: {e}"),
    });
    eprintln!(
        "{api}: {ran} seeds in {:?}: {} messages checked, {} polls, {kills} kills, {half_opens} half-open links, {dial_failures} failed dials",
        started.elapsed(),
        total.delivered,
        total.polls,
    );
}

#[test]
fn session_api_delivers_exactly_once_in_order_under_seeded_faults() {
    run("session", "session_api", session_run);
}

#[test]
fn raw_api_delivers_exactly_once_in_order_under_seeded_faults() {
    run("raw", "raw_api", raw_run);
}

/// The raw API with extensions off on both sides (the base form every vox peer speaks; no
/// half-open links, which without keepalive nothing can detect). Before the base-form fix
/// of issue 14 defects 6 and 8, seed 1 cycled links on `AckStarved` and then stalled for
/// good with nothing runnable and no timer armed.
#[test]
fn base_form_raw_api_delivers_exactly_once_in_order_under_seeded_faults() {
    run("base form", "base_form", base_form_run);
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 17] {
        let a = session_run(seed).map(|o| (o.elapsed, o.polls, o.delivered));
        let b = session_run(seed).map(|o| (o.elapsed, o.polls, o.delivered));
        assert_eq!(a, b, "seed {seed} ran differently twice");
    }
}

/// Seeds where the acceptor's session handshake deadline, when it ran from the first attach
/// through link losses, refused a session the initiator was resuming: at the first connect
/// (5500: `connect_session` failed with `Rejected`) and after it (1888, 2665: a ready session
/// ended `Rejected`). Once the peer holds the key, the deadline now runs only while a link
/// is attached and restarts on each resume (finding 1 in docs/simulation.md); a refusal fails
/// the run.
#[test]
fn a_session_resuming_through_link_losses_is_not_rejected_by_the_session_handshake_deadline() {
    for seed in [5500, 1888, 2665] {
        session_run(seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}
