//! A fleet under simulation: an acceptor made of several workers (2-4, each its own
//! session acceptor with its own endpoint and task), every link landing on a worker drawn
//! from the seed, as a load balancer or `SO_REUSEPORT` without affinity would place it;
//! 2-4 initiators with the randomized session workload (traffic both ways, checked exactly
//! once and in order) on a net whose first links die (killed at any byte, or half-open), so
//! sessions resume, mostly through a worker other than the one holding them.
//!
//! With owner routing the workers form an [`AcceptorGroup`]: a resume presenting another
//! worker's key is passed there, and every seed must pass. Without it (independent
//! acceptors, untagged keys) a resume that lands elsewhere is answered REJECTED and its
//! session is lost: [`fleet_run`] fails for those seeds, which is what the variant shows.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::channel::mpsc;
use futures::StreamExt;
use sotto_driver::{serve_sessions, AcceptorGroup, SessionAcceptor};
use sotto_proto::endpoint::Issuer;
use sotto_tests::SimRng;

use crate::executor::Sim;
use crate::net::{Faults, Net, SimStream};
use crate::workload::{config, options, session_main_with, Load, Outcome, Tally};

/// The error of a run in which an initiator's `connect_session` was answered REJECTED
/// before it returned. It used to happen with one plain acceptor too (docs/fleet.md, "A
/// defect the model found"): the initiator's first link died after the ServerHello and before
/// its session handshake finished, and its redials failed until the acceptor's session
/// handshake deadline freed the half-made session. The initiator now starts afresh on such a
/// refusal, so no run ends with it; the fleet test fails on it.
pub const CONNECT_REFUSED: &str = "connect: the acceptor rejected the session";

/// What one fleet run did.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct FleetOutcome {
    /// The traffic and the net.
    pub outcome: Outcome,
    /// Workers in the fleet.
    pub workers: u16,
    /// Links passed from the worker they landed on to the one holding their session (0
    /// without owner routing).
    pub forwarded: u64,
}

/// One fleet run for `seed`, with or without owner routing (see the module docs).
///
/// # Errors
/// Why the run failed: with owner routing, any failure; without it, also the sessions lost
/// to resumes that landed on another worker. A connect refused before its session was
/// established is [`CONNECT_REFUSED`] (see there).
pub fn fleet_run(seed: u64, owner_routing: bool) -> Result<FleetOutcome, String> {
    crate::trace::traced(|| fleet_run_inner(seed, owner_routing))
}

fn fleet_run_inner(seed: u64, owner_routing: bool) -> Result<FleetOutcome, String> {
    crate::panics::install();
    let panics = crate::panics::count();
    let mut rng = SimRng::new(seed ^ 0xf1ee_7000);
    let sim = Sim::new(options(seed));
    let rt = sim.runtime();
    let cfg = config(&mut rng);
    let mut load = Load::random(&mut rng);
    load.initiators = rng.range(2, 4) as u32;
    let workers = rng.range(2, 4) as u16;
    let mut faults = Faults::random(&mut rng);
    // Links die often, so that sessions resume (each through a worker drawn anew).
    faults.faulty_links = rng.range(3, 10);
    faults.link_fault = rng.range(600, 1000) as u32;
    let net = Net::new(&rt, rng.next_u64(), faults);
    let mut secret = [0u8; 16];
    secret[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    secret[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    let issuer = Issuer::new(secret, rng.next_u64() as u32, 0, workers).map_err(|e| format!("issuer: {e}"))?;
    let group = owner_routing.then(|| AcceptorGroup::<SimStream>::with_issuer(issuer));
    let tally = Arc::new(Tally::default());
    let main = {
        let (rt, net, tally, group) = (rt.clone(), net.clone(), Arc::clone(&tally), group.clone());
        async move {
            // The "load balancer": each link goes to a worker drawn from the seed.
            let (txs, rxs): (Vec<_>, Vec<_>) = (0..workers).map(|_| mpsc::unbounded()).unzip();
            let mut incoming = Box::pin(net.session_listener());
            let draw = rt.clone();
            let balancer = rt.spawn_app(async move {
                while let Some(link) = incoming.next().await {
                    let w = (draw.random() % u64::from(workers)) as usize;
                    if txs[w].unbounded_send(link).is_err() {
                        return;
                    }
                }
            });
            let mut acceptors: Vec<SessionAcceptor> = Vec::new();
            for (w, rx) in rxs.into_iter().enumerate() {
                let acceptor = match &group {
                    Some(g) => g.serve(rt.clone(), w as u16, rx, cfg).map_err(|e| format!("serve: {e}"))?,
                    None => serve_sessions(rt.clone(), rx, cfg).map_err(|e| format!("serve: {e}"))?,
                };
                acceptors.push(acceptor);
            }
            let r = session_main_with(rt, net, cfg, load, tally, acceptors).await;
            balancer.abort();
            r
        }
    };
    let result = sim.run(main);
    let elapsed = sim.elapsed();
    match result {
        Ok(r) => r?,
        Err(stuck) => return Err(format!("{stuck} (delivered {})", tally.delivered.load(Ordering::Relaxed))),
    }
    sim.run_to_quiescence().map_err(|s| format!("after the run: {s}"))?;
    if crate::panics::count() != panics {
        return Err("a task panicked".into());
    }
    let outcome = Outcome {
        elapsed,
        polls: sim.polls(),
        net: net.stats(),
        delivered: tally.delivered.load(Ordering::Relaxed) as u64,
    };
    Ok(FleetOutcome { outcome, workers, forwarded: group.map_or(0, |g| g.forwarded()) })
}
