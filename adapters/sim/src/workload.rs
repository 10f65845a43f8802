//! The randomized runs: per seed, an initiator and an acceptor on a faulty [`Net`], traffic
//! with sequence numbers both ways, and the checks. A run fails (returns `Err` with what
//! went wrong) on a lost, duplicated, reordered or corrupted message, an unexpected error,
//! a queue over its bound, a panic anywhere (caught ones too), or a hang: nothing runnable
//! with no timer armed, or the virtual time limit passed.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::future::Either;
use futures::{SinkExt, StreamExt};
use sotto_driver::{
    connect, connect_session, serve, serve_sessions, Config, ConnReceiver, ConnSender, SessionAcceptor, SessionHandle,
};
use sotto_proto::SessionEnd;
use sotto_tests::SimRng;

use crate::executor::{JoinHandle, Sim, SimOptions, SimRuntime};
use crate::fixture::cancel_after;
use crate::net::{Faults, Net, NetStats};

/// The bytes of a message: `tag` (u32), `seq` (u32), then `len` bytes derived from both.
#[must_use]
pub fn message(tag: u32, seq: u32, len: usize) -> Bytes {
    let mut v = Vec::with_capacity(8 + len);
    v.extend_from_slice(&tag.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend((0..len).map(|i| fill(tag, seq, i)));
    Bytes::from(v)
}

fn fill(tag: u32, seq: u32, i: usize) -> u8 {
    (tag.wrapping_mul(31).wrapping_add(seq.wrapping_mul(7)).wrapping_add(i as u32)) as u8
}

/// Check that `m` is message `seq` of `tag`: exactly once and in order means the receiver
/// sees `seq` 0, 1, 2, ... with nothing in between.
///
/// # Errors
/// What is wrong with it.
pub fn check(tag: u32, seq: u32, m: &[u8]) -> Result<(), String> {
    if m.len() < 8 {
        return Err(format!("tag {tag}: expected seq {seq}, got a {}-byte message", m.len()));
    }
    let got_tag = u32::from_le_bytes([m[0], m[1], m[2], m[3]]);
    let got_seq = u32::from_le_bytes([m[4], m[5], m[6], m[7]]);
    if got_tag != tag || got_seq != seq {
        return Err(format!("tag {tag}: expected seq {seq}, got tag {got_tag} seq {got_seq}"));
    }
    if m[8..].iter().enumerate().any(|(i, b)| *b != fill(tag, seq, i)) {
        return Err(format!("tag {tag} seq {seq}: payload corrupted"));
    }
    Ok(())
}

/// How much traffic one run carries.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Load {
    /// Initiators (sessions) at the one acceptor.
    pub initiators: u32,
    /// Connections each initiator opens.
    pub opens_a: u32,
    /// Connections the acceptor opens.
    pub opens_b: u32,
    /// Messages each way per connection (or per raw conduit).
    pub msgs: u32,
    /// Largest payload after the 8-byte header.
    pub max_len: usize,
    /// Chance (per mille) that a reader pauses before a read.
    pub slow_reader: u32,
}

impl Load {
    /// A seeded load, small enough for a thousand runs in a debug build.
    #[must_use]
    pub fn random(rng: &mut SimRng) -> Self {
        Self {
            initiators: 1,
            opens_a: rng.range(1, 3) as u32,
            opens_b: rng.range(0, 2) as u32,
            msgs: rng.range(5, 100) as u32,
            max_len: if rng.chance(300) { 900 } else { 64 },
            slow_reader: rng.range(0, 100) as u32,
        }
    }
}

/// A small configuration: windows, rings and queues small enough that every backpressure
/// path runs, timeouts short enough that half-open links are found within the run.
#[must_use]
pub fn config(rng: &mut SimRng) -> Config {
    use std::time::Duration as D;
    let mut c = Config::default();
    c.protocol.max_frame_len = 1024;
    c.protocol.replay_frames = rng.range(4, 64) as u32;
    c.protocol.replay_bytes = rng.range(1024, 16 << 10) as u32;
    c.protocol.ack_delay = D::from_millis(rng.range(1, 30));
    c.protocol.ack_every = rng.range(1, 16) as u32;
    c.protocol.ping_interval = D::from_millis(200);
    c.protocol.pong_timeout = D::from_millis(500);
    c.protocol.min_ping_interval = D::from_millis(50);
    c.protocol.handshake_timeout = D::from_millis(1000);
    c.protocol.recovery_timeout = D::from_secs(30);
    c.dial.connect_timeout = Duration::from_secs(30);
    c.dial.backoff_initial = Duration::from_millis(10);
    c.dial.backoff_max = Duration::from_millis(500);
    c.buffers.inbound_items = rng.range(2, 64) as usize;
    c.buffers.inbound_bytes = rng.range(2048, 32 << 10) as usize;
    c.buffers.read_chunk = rng.range(16, 4096) as usize;
    c.buffers.write_buffer = rng.range(64, 8192) as usize;
    c.buffers.lend_from = rng.range(64, 2048) as usize;
    c.protocol.drain_timeout = Duration::from_millis(200);
    c.protocol.initial_credit = rng.range(2048, 8192) as u32;
    c.protocol.max_credit = c.protocol.initial_credit * 4;
    c.protocol.batch_bytes = rng.range(64, 4096) as u32;
    c.buffers.conn_inbound_items = rng.range(4, 256) as usize;
    c.buffers.copy_below = rng.range(0, 1024) as usize;
    c.acceptor.max_sessions = 8;
    c
}

/// What one run did.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct Outcome {
    /// Virtual time the traffic took.
    pub elapsed: Duration,
    /// Executor polls.
    pub polls: u64,
    /// What the net did.
    pub net: NetStats,
    /// Messages delivered and checked.
    pub delivered: u64,
}

/// A run's shared record of progress and of the largest queue seen.
#[derive(Debug, Default)]
pub struct Tally {
    /// Messages delivered and checked.
    pub delivered: AtomicUsize,
    /// The most messages (or raw items) ever waiting for a reader.
    pub max_queued: AtomicUsize,
    /// Raw sides that have received everything and queued everything they send.
    pub sides_done: AtomicUsize,
}

impl Tally {
    pub(crate) fn queued(&self, n: usize) {
        self.max_queued.fetch_max(n, Ordering::Relaxed);
    }
}

/// Options for the seed `seed`: a little time per poll, tasks in a seeded random order
/// (first in, first out for every fourth seed).
#[must_use]
pub fn options(seed: u64) -> SimOptions {
    let mut o = SimOptions::new(seed);
    o.time_limit = Duration::from_secs(300);
    o.fifo = seed % 4 == 0;
    o
}

/// One randomized run of the session API for `seed`.
///
/// # Errors
/// Why the run failed.
pub fn session_run(seed: u64) -> Result<Outcome, String> {
    crate::trace::traced(|| session_run_inner(seed))
}

fn session_run_inner(seed: u64) -> Result<Outcome, String> {
    crate::panics::install();
    let panics = crate::panics::count();
    let mut rng = SimRng::new(seed ^ 0x5e55_1011);
    let sim = Sim::new(options(seed));
    let rt = sim.runtime();
    let cfg = config(&mut rng);
    let mut load = Load::random(&mut rng);
    let net = Net::new(&rt, rng.next_u64(), Faults::random(&mut rng));
    load.initiators = rng.range(1, 3) as u32;
    let tally = Arc::new(Tally::default());
    // A connection's queue holds what its credit window allows: at least 16 credit a
    // message (the driver raises `conn_inbound_items` to match).
    let cfg_conn_items = cfg.buffers.conn_inbound_items.max(cfg.protocol.initial_credit as usize / 16 + 1);
    let result = sim.run(session_main(rt.clone(), net.clone(), cfg, load, Arc::clone(&tally)));
    let elapsed = sim.elapsed();
    let result = match result {
        Ok(r) => r,
        Err(stuck) => Err(format!("{stuck} (delivered {})", tally.delivered.load(Ordering::Relaxed))),
    };
    result?;
    let max = tally.max_queued.load(Ordering::Relaxed);
    let bound = cfg_conn_items * (load.opens_a + load.opens_b) as usize;
    if max > bound {
        return Err(format!(
            "{max} messages queued for readers (bound {bound}: a credit window's worth per connection)"
        ));
    }
    sim.run_to_quiescence().map_err(|s| format!("after the run: {s}"))?;
    if crate::panics::count() != panics {
        return Err("a task panicked".into());
    }
    Ok(Outcome {
        elapsed,
        polls: sim.polls(),
        net: net.stats(),
        delivered: tally.delivered.load(Ordering::Relaxed) as u64,
    })
}

/// The tag of the messages `sender` (0 initiator, 1 acceptor) sends on the `i`-th connection
/// opened by `opener`, in the session of initiator `init`.
fn tag(init: u32, opener: u32, i: u32, sender: u32) -> u32 {
    (init << 20) | (opener << 16) | (i << 1) | sender
}

async fn session_main(rt: SimRuntime, net: Net, cfg: Config, load: Load, tally: Arc<Tally>) -> Result<(), String> {
    let acceptor = serve_sessions(rt.clone(), net.session_listener(), cfg).map_err(|e| format!("serve: {e}"))?;
    session_main_with(rt, net, cfg, load, tally, vec![acceptor]).await
}

/// The next session any of `acceptors` yields (cancel-safe: each `accept` is).
async fn accept_any(acceptors: &[SessionAcceptor]) -> std::io::Result<SessionHandle> {
    poll_fn(|cx| {
        for a in acceptors {
            if let Poll::Ready(r) = std::pin::pin!(a.accept()).poll(cx) {
                return Poll::Ready(r);
            }
        }
        Poll::Pending
    })
    .await
}

/// [`session_main`] with the acceptor side served by `acceptors` (the workers of a fleet,
/// each taking some of the links): the application accepts from all of them.
pub(crate) async fn session_main_with(
    rt: SimRuntime,
    net: Net,
    cfg: Config,
    load: Load,
    tally: Arc<Tally>,
    acceptors: Vec<SessionAcceptor>,
) -> Result<(), String> {
    let acceptors = Arc::new(acceptors);
    let b_tally = Arc::clone(&tally);
    let b = rt.spawn_app(accept_loop(rt.clone(), load.initiators as usize, move |rt: SimRuntime| {
        let tally = Arc::clone(&b_tally);
        let acceptors = Arc::clone(&acceptors);
        async move {
            let sess = accept_any(&acceptors).await.map_err(|e| format!("acceptor accept: {e}"))?;
            let sess = Arc::new(sess);
            let rt2 = rt.clone();
            Ok(rt2.spawn_app(async move {
                if let Err(e) = side(&rt, &sess, 1, None, load, &tally).await {
                    // An orphan: a session whose initiator never learned of it (its first
                    // link died before the answer reached it) ends lost with nothing done.
                    let orphan = sess.ended().is_some_and(|e| e.is_lost()) && sess.stats().delivered_bytes == 0;
                    return if orphan { Ok(false) } else { Err(e) };
                }
                // Wait for the initiator's close (or, if its GOODBYE found no link, the loss).
                while sess.ended().is_none() {
                    if sess.next_event().await.is_none() {
                        break;
                    }
                }
                Ok(true)
            }))
        }
    }));
    let initiators: Vec<_> = (0..load.initiators)
        .map(|init| rt.spawn_app(initiator(rt.clone(), net.clone(), cfg, load, init, Arc::clone(&tally))))
        .collect();
    for (init, i) in initiators.into_iter().enumerate() {
        match i.await {
            Ok(()) => {}
            Err(e) => {
                return Err(match b.try_take() {
                    Some(Err(be)) => format!("acceptor: {be}; then initiator {init}: {e}"),
                    _ => format!("initiator {init}: {e}"),
                })
            }
        }
    }
    b.await
}

/// One initiator: connect, run its side, close. A connect or a session the acceptor refuses
/// (`Rejected`) fails the run: links dying during the session handshake must not cost the
/// session (finding 1 in docs/simulation.md, fixed).
async fn initiator(
    rt: SimRuntime,
    net: Net,
    cfg: Config,
    load: Load,
    init: u32,
    tally: Arc<Tally>,
) -> Result<(), String> {
    let dial = net.clone();
    let a = connect_session(rt.clone(), move || dial.dial(), cfg).await.map_err(|e| format!("connect: {e}"))?;
    let a = Arc::new(a);
    if let Err(e) = side(&rt, &a, 0, Some(init), load, &tally).await {
        return Err(match a.ended() {
            Some(SessionEnd::Rejected) => format!("the acceptor refused to resume a ready session: {e}"),
            _ => e,
        });
    }
    // Close once the acceptor has everything (a close without a link sends no GOODBYE and
    // may lose what was not acknowledged, as documented).
    while a.unacked() > 0 {
        rt.sleep(Duration::from_millis(10)).await;
    }
    let end = a.close(0, "done").await;
    if !matches!(end, SessionEnd::LocalClose { .. }) {
        return Err(format!("close ended as {end:?}"));
    }
    Ok(())
}

/// A handler for one accepted session: `Ok(true)` when it carried the run's traffic,
/// `Ok(false)` for an orphan (a session the initiator never learned of, ended lost with
/// nothing delivered).
type Handler = JoinHandle<Result<bool, String>>;

/// The acceptor's application: accept sessions (each with `accept_one`, which starts its
/// handler) until `needed` handlers have carried their session's traffic; fails on the
/// first handler that fails.
async fn accept_loop<F, Fut>(rt: SimRuntime, needed: usize, mut accept_one: F) -> Result<(), String>
where
    F: FnMut(SimRuntime) -> Fut,
    Fut: Future<Output = Result<Handler, String>>,
{
    let mut handlers: Vec<Handler> = Vec::new();
    let mut carried = 0;
    while carried < needed {
        let accepted = Box::pin(accept_one(rt.clone()));
        let finished = Box::pin(poll_fn(|cx| {
            let mut i = 0;
            while i < handlers.len() {
                match Pin::new(&mut handlers[i]).poll(cx) {
                    Poll::Ready(Ok(true)) => {
                        handlers.swap_remove(i);
                        return Poll::Ready(Ok(()));
                    }
                    Poll::Ready(Ok(false)) => {
                        handlers.swap_remove(i);
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => i += 1,
                }
            }
            Poll::Pending
        }));
        match futures::future::select(accepted, finished).await {
            Either::Left((h, _)) => {
                let h = h?;
                handlers.push(h);
            }
            Either::Right((r, _)) => {
                r?;
                carried += 1;
            }
        }
    }
    Ok(())
}

/// One side's connections: open its own, accept the peer's, run each both ways. `init` is
/// the initiator's index (every tag carries it, so a message of another session is caught);
/// the acceptor (`None`) learns it from the metadata of the first open it accepts (the
/// initiator always opens one).
async fn side(
    rt: &SimRuntime,
    sess: &Arc<SessionHandle>,
    me: u32,
    init: Option<u32>,
    load: Load,
    tally: &Arc<Tally>,
) -> Result<(), String> {
    let (mine, theirs) = if me == 0 { (load.opens_a, load.opens_b) } else { (load.opens_b, load.opens_a) };
    let done = Arc::new(AtomicBool::new(false));
    // Stops the monitor however this function returns.
    struct Stop(Arc<AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let stop = Stop(Arc::clone(&done));
    let monitor = {
        let (sess, done, tally, rt2) = (Arc::clone(sess), Arc::clone(&done), Arc::clone(tally), rt.clone());
        rt.spawn_app(async move {
            while !done.load(Ordering::Relaxed) {
                tally.queued(sess.stats().queued_messages);
                rt2.sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut runs = Vec::new();
    let mut answered = 0;
    let init = match init {
        Some(init) => init,
        None => {
            let (i, init, conn) = answer(sess).await?;
            let (tx, rx) = conn.split();
            runs.push(conn_run(rt, tx, rx, tag(init, 1 - me, i, me), tag(init, 1 - me, i, 1 - me), load, tally));
            answered = 1;
            init
        }
    };
    let acceptor = {
        let (sess, rt2, tally) = (Arc::clone(sess), rt.clone(), Arc::clone(tally));
        rt.spawn_app(async move {
            let mut runs = Vec::new();
            for _ in answered..theirs {
                let (i, _, conn) = answer(&sess).await?;
                let (tx, rx) = conn.split();
                runs.push(conn_run(&rt2, tx, rx, tag(init, 1 - me, i, me), tag(init, 1 - me, i, 1 - me), load, &tally));
            }
            for r in runs {
                r.await?;
            }
            Ok::<_, String>(())
        })
    };
    for i in 0..mine {
        let mut md = i.to_le_bytes().to_vec();
        md.extend_from_slice(&init.to_le_bytes());
        let conn = sess.open(&md).await.map_err(|e| format!("open: {e:?}"))?;
        let (tx, rx) = conn.split();
        runs.push(conn_run(rt, tx, rx, tag(init, me, i, me), tag(init, me, i, 1 - me), load, tally));
    }
    let mut result = Ok(());
    for r in runs {
        result = result.and(r.await);
    }
    result = result.and(acceptor.await);
    drop(stop);
    monitor.await;
    result
}

/// Accept the peer's next open: (its index, the initiator's index, the connection).
async fn answer(sess: &SessionHandle) -> Result<(u32, u32, sotto_driver::Connection), String> {
    let inc = sess.accept().await.map_err(|e| format!("accept: {e:?}"))?;
    let md = inc.metadata().clone();
    let word = |at: usize| md.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
    let (i, init) = (word(0).ok_or("bad metadata")?, word(4).ok_or("bad metadata")?);
    let conn = inc.accept(&[]).await.map_err(|e| format!("answer: {e:?}"))?;
    Ok((i, init, conn))
}

/// One connection both ways: a sender task and a receiver task, then a close.
fn conn_run(
    rt: &SimRuntime,
    mut tx: ConnSender,
    mut rx: ConnReceiver,
    send_tag: u32,
    recv_tag: u32,
    load: Load,
    tally: &Arc<Tally>,
) -> JoinHandle<Result<(), String>> {
    let rt2 = rt.clone();
    let tally = Arc::clone(tally);
    let mode = rt.random() % 3;
    let read_mode = rt.random() % 2;
    let mut rng = SimRng::new(rt.random());
    // Calls cancelled after 1-3 polls (and made again), per mille: `send`, `send_many` and
    // `recv` are cancel-safe, so a cancelled one sent or took nothing.
    let cancel = if rng.chance(500) { rng.range(1, 150) as u32 } else { 0 };
    rt.spawn_app(async move {
        let sender = {
            let mut rng = rng.fork(1);
            rt2.spawn_app(async move {
                let mut seq = 0;
                while seq < load.msgs {
                    let len = rng.range(0, load.max_len as u64) as usize;
                    let polls = if rng.chance(cancel) { rng.range(1, 3) as usize } else { usize::MAX };
                    match mode {
                        0 => {
                            let m = message(send_tag, seq, len);
                            if let Some(r) = cancel_after(tx.send(m), polls).await {
                                r.map_err(|e| format!("send: {e}"))?;
                                seq += 1;
                            }
                        }
                        1 => {
                            let n = rng.range(1, 8).min(u64::from(load.msgs - seq)) as u32;
                            let batch: Vec<Bytes> = (seq..seq + n).map(|s| message(send_tag, s, len)).collect();
                            if let Some(r) = cancel_after(tx.send_many(&batch), polls).await {
                                seq += r.map_err(|e| format!("send_many: {e}"))? as u32;
                            }
                        }
                        _ => {
                            // The Sink is not cancelled here (issue 14 defect 1).
                            let n = rng.range(1, 8).min(u64::from(load.msgs - seq)) as u32;
                            for s in seq..seq + n {
                                tx.feed(message(send_tag, s, len)).await.map_err(|e| format!("Sink::feed: {e}"))?;
                            }
                            tx.flush().await.map_err(|e| format!("Sink::flush: {e}"))?;
                            seq += n;
                        }
                    }
                }
                Ok::<_, String>(tx)
            })
        };
        let mut seq = 0;
        while seq < load.msgs {
            if rng.chance(load.slow_reader) {
                rt2.sleep(Duration::from_millis(rng.range(1, 50))).await;
            }
            let polls = if rng.chance(cancel) { rng.range(1, 3) as usize } else { usize::MAX };
            let m = if read_mode == 0 {
                match cancel_after(rx.recv(), polls).await {
                    Some(r) => r.map_err(|e| format!("recv tag {recv_tag} seq {seq}: {e}"))?,
                    None => continue,
                }
            } else {
                match cancel_after(rx.next(), polls).await {
                    Some(m) => m.ok_or_else(|| format!("stream ended before tag {recv_tag} seq {seq}"))?,
                    None => continue,
                }
            };
            check(recv_tag, seq, &m)?;
            tally.delivered.fetch_add(1, Ordering::Relaxed);
            seq += 1;
        }
        let mut tx = sender.await?;
        tx.close_with(&[]).await;
        match rx.recv().await {
            Ok(m) => Err(format!("tag {recv_tag}: a message after the last: {:?}", &m[..m.len().min(8)])),
            Err(_) => Ok(()),
        }
    })
}

/// One randomized run of the raw stable-conduit API for `seed`.
///
/// # Errors
/// Why the run failed.
pub fn raw_run(seed: u64) -> Result<Outcome, String> {
    crate::trace::traced(|| raw_run_inner(seed, true))
}

/// [`raw_run`] with sotto's extensions off on both sides: the base form, as with a vox peer
/// (no standalone acks, no keepalive, no GOODBYE).
///
/// # Errors
/// Why the run failed.
pub fn base_form_run(seed: u64) -> Result<Outcome, String> {
    crate::trace::traced(|| raw_run_inner(seed, false))
}

fn raw_run_inner(seed: u64, ext: bool) -> Result<Outcome, String> {
    crate::panics::install();
    let panics = crate::panics::count();
    let mut rng = SimRng::new(seed ^ 0x00da_7a00);
    let sim = Sim::new(options(seed));
    let rt = sim.runtime();
    let mut cfg = config(&mut rng);
    cfg.protocol.ext = ext;
    let load = Load::random(&mut rng);
    let msgs = load.msgs * 2;
    let seed_net = rng.next_u64();
    let mut faults = Faults::random(&mut rng);
    if !ext {
        // The base form has no keepalive: nothing can tell a half-open link from a quiet
        // one, so those would hang the run by design.
        faults.half_open = 0;
    }
    let net = Net::new(&rt, seed_net, faults);
    let tally = Arc::new(Tally::default());
    let inbound_items = cfg.buffers.inbound_items;
    let result = sim.run(raw_main(rt.clone(), net.clone(), cfg, msgs, load, Arc::clone(&tally)));
    let elapsed = sim.elapsed();
    match result {
        Ok(r) => r?,
        Err(stuck) => return Err(format!("{stuck} (delivered {})", tally.delivered.load(Ordering::Relaxed))),
    }
    sim.run_to_quiescence().map_err(|s| format!("after the run: {s}"))?;
    if crate::panics::count() != panics {
        return Err("a task panicked".into());
    }
    let max = tally.max_queued.load(Ordering::Relaxed);
    if max > inbound_items {
        return Err(format!("{max} items queued for a reader (bound {inbound_items})"));
    }
    Ok(Outcome {
        elapsed,
        polls: sim.polls(),
        net: net.stats(),
        delivered: tally.delivered.load(Ordering::Relaxed) as u64,
    })
}

async fn raw_main(
    rt: SimRuntime,
    net: Net,
    cfg: Config,
    msgs: u32,
    load: Load,
    tally: Arc<Tally>,
) -> Result<(), String> {
    let max_len = load.max_len.min(cfg.conduit_config().max_item_len() as usize - 8);
    let acceptor = serve(rt.clone(), net.listener(), cfg).map_err(|e| format!("serve: {e}"))?;
    let acceptor = Arc::new(acceptor);
    let b_tally = Arc::clone(&tally);
    let b = rt.spawn_app(accept_loop(rt.clone(), 1, move |rt: SimRuntime| {
        let tally = Arc::clone(&b_tally);
        let acceptor = Arc::clone(&acceptor);
        async move {
            let c = Arc::new(acceptor.accept().await.map_err(|e| format!("raw accept: {e}"))?);
            let rt2 = rt.clone();
            Ok(rt2.spawn_app(async move {
                if let Err(e) = raw_side(&rt, &c, 1, msgs, max_len, load.slow_reader, &tally).await {
                    let orphan = c.ended().is_some_and(|e| e.is_lost()) && c.stats().conduit.frames_delivered == 0;
                    return if orphan { Ok(false) } else { Err(e) };
                }
                while c.ended().is_none() {
                    if c.next_event().await.is_none() {
                        break;
                    }
                }
                Ok(true)
            }))
        }
    }));
    let dial = net.clone();
    let a = Arc::new(connect(rt.clone(), move || dial.dial(), cfg).await.map_err(|e| format!("raw connect: {e}"))?);
    if let Err(e) = raw_side(&rt, &a, 0, msgs, max_len, load.slow_reader, &tally).await {
        return Err(match b.try_take() {
            Some(Err(be)) => format!("acceptor: {be}; then initiator: {e}"),
            _ => format!("initiator: {e}"),
        });
    }
    // Close once both sides have received everything: a close sends no GOODBYE without a
    // link (or in the base form) and may lose what was not acknowledged, and in the base
    // form the last items are acknowledged only by data that never comes.
    while tally.sides_done.load(Ordering::Relaxed) < 2 {
        rt.sleep(Duration::from_millis(10)).await;
    }
    let end = a.close(0, "done").await;
    if !matches!(end, SessionEnd::LocalClose { .. }) {
        return Err(format!("raw initiator close ended as {end:?}"));
    }
    b.await
}

/// One raw side: a sender task with items `0..msgs`, this task receiving the peer's.
async fn raw_side(
    rt: &SimRuntime,
    c: &Arc<sotto_driver::StableConduit>,
    me: u32,
    msgs: u32,
    max_len: usize,
    slow: u32,
    tally: &Arc<Tally>,
) -> Result<(), String> {
    let mut rng = SimRng::new(rt.random());
    let sender = {
        let (c, mut rng) = (Arc::clone(c), rng.fork(1));
        rt.spawn_app(async move {
            for seq in 0..msgs {
                let len = rng.range(0, max_len as u64) as usize;
                c.send(message(me, seq, len)).await.map_err(|e| format!("raw send: {e:?}"))?;
            }
            Ok::<_, String>(())
        })
    };
    // `recv` cancelled after 1-3 polls (and made again), per mille: it is cancel-safe.
    let cancel = if rng.chance(500) { rng.range(1, 150) as u32 } else { 0 };
    let mut seq = 0;
    while seq < msgs {
        if rng.chance(slow) {
            rt.sleep(Duration::from_millis(rng.range(1, 50))).await;
        }
        tally.queued(c.stats().inbound_items);
        let polls = if rng.chance(cancel) { rng.range(1, 3) as usize } else { usize::MAX };
        let Some(m) = cancel_after(c.recv(), polls).await else { continue };
        let m = m.map_err(|e| format!("raw recv seq {seq}: {e:?}; stats {:?}", c.stats()))?;
        check(1 - me, seq, &m)?;
        tally.delivered.fetch_add(1, Ordering::Relaxed);
        seq += 1;
    }
    sender.await?;
    tally.sides_done.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
