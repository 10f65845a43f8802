//! sotto (sotto-tokio, raw stable conduit) against a real vox-core 0.3.0 `StableConduit`
//! (the `vox-peer` binary), over loopback TCP, both directions of traffic:
//!
//! - a sotto initiator (EXT advertised) against a vox acceptor;
//! - a vox initiator against a sotto acceptor;
//!
//! each without a proxy (baseline) and through `chaos-proxy`, which cuts every TCP connection
//! at a random byte in 200..=5000 (mid-frame included). The sotto side must deliver
//! `msg-0 .. msg-(n-1)` exactly once and in order; what the vox side received is printed but
//! not asserted (vox skips gaps silently and may lose items itself). Gaps that sotto saw (vox
//! sent a frame past one it lost) are counted (`link_drops.gap`): sotto never delivers past a
//! gap, it drops the link and vox's resume replays the missing frame.
//!
//! Two more scenarios exercise base-form ack starvation: sotto sends one way into a small
//! replay ring and vox, sending nothing, never acks except in resume handshakes, so sotto
//! cycles the link to get its ring trimmed.
//!
//! And one shows what a close means without GOODBYE (a base-form link has no way to say it):
//! a sotto acceptor's `close` ends the session locally, the vox initiator sees a link loss,
//! resumes, and is answered REJECTED (`SessionLost`).
//!
//! The full-speed scenarios of issue 14: a 20 000-item burst to a vox acceptor that only reads
//! (defect 6: it must complete), 100 000 echoes through an echoing vox acceptor (defect 8: a
//! ring filled by lagging acks is backpressure, never a link cycle), and 100 000 echoes from a
//! vox initiator through a sotto acceptor's `recv`-then-`send` loop (defect 7).
//!
//! Run through `interop/run.sh` (which builds the binaries first). Scenarios run one at a time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use interop_tests::{
    chaos_proxy, drive_sotto, drive_sotto_echo, encode_string, msg, vox_peer, Delivery, Proc, ProxyReport, SottoRun,
    VoxReport,
};
use sotto_tokio::raw::AcceptorStats;
use sotto_tokio::{Config, SessionEnd};

/// One scenario at a time: they share two cores with the vox peer and the proxy.
static SERIAL: Mutex<()> = Mutex::new(());

/// Items each side sends in the main scenarios (about 20 bytes a frame: with cuts every
/// 200..5000 bytes, that is a few dozen link deaths a run).
const N: usize = 1000;
/// How long the vox peer waits for everything; the sotto side gives up a little later. A
/// healthy chaos run takes 2-4 s; one where vox stops making progress (see [`chaos`]) burns
/// all of it.
const VOX_TIMEOUT_SECS: u64 = 45;
/// How long the vox peer stays up after it has everything (so replays to sotto finish).
const LINGER_MS: u64 = 2000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    /// sotto dials (through the proxy, if any) a vox acceptor.
    SottoInitiator,
    /// vox dials (through the proxy, if any) a sotto acceptor.
    VoxInitiator,
}

struct Scenario {
    name: &'static str,
    dir: Dir,
    /// Chaos proxy seed; `None` connects directly.
    chaos: Option<u64>,
    /// The range the proxy draws each connection's byte budget from.
    cuts: (u64, u64),
    sotto_sends: usize,
    vox_sends: usize,
    /// The vox peer sends back what it receives (`--echo`) instead of its own messages.
    vox_echoes: bool,
    /// The sotto side is a `recv`-then-`send(..).await` echo loop instead of a sender and a
    /// receiver running side by side.
    sotto_echoes: bool,
    config: Config,
}

struct Outcome {
    sotto: SottoRun,
    sotto_delivery: Delivery,
    vox: VoxReport,
    proxy: Option<ProxyReport>,
    acceptor: Option<AcceptorStats>,
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn vox_args(role: &str, addr_flag: &str, addr: &str, sends: usize, expect: usize, echo: bool) -> Vec<String> {
    let mut a = args(&[
        "--role",
        role,
        addr_flag,
        addr,
        "--send",
        &sends.to_string(),
        "--expect",
        &expect.to_string(),
        "--timeout-secs",
        &VOX_TIMEOUT_SECS.to_string(),
        "--linger-ms",
        &LINGER_MS.to_string(),
    ]);
    if echo {
        a.push("--echo".to_owned());
    }
    a
}

/// The chaos runs' byte budget per connection: a few dozen cuts in a 1000-item run.
const CUTS: (u64, u64) = (200, 5000);

async fn maybe_proxy(upstream: SocketAddr, chaos: Option<u64>, cuts: (u64, u64)) -> (Option<Proc>, SocketAddr) {
    match chaos {
        Some(seed) => {
            let (p, addr) = chaos_proxy(upstream, seed, cuts.0, cuts.1).await;
            (Some(p), addr)
        }
        None => (None, upstream),
    }
}

async fn run(s: &Scenario) -> Outcome {
    let sotto_timeout = Duration::from_secs(VOX_TIMEOUT_SECS + 10);
    let (sotto, mut vox, proxy, acceptor) = match s.dir {
        Dir::SottoInitiator => {
            let mut vox =
                vox_peer(&vox_args("acceptor", "--listen", "127.0.0.1:0", s.vox_sends, s.sotto_sends, s.vox_echoes));
            let vox_addr = vox.listen_addr().await;
            let (proxy, target) = maybe_proxy(vox_addr, s.chaos, s.cuts).await;
            let connector = move || async move {
                let stream = tokio::net::TcpStream::connect(target).await?;
                stream.set_nodelay(true)?;
                Ok(stream)
            };
            let conduit = sotto_tokio::raw::connect(connector, s.config)
                .await
                .map(Arc::new)
                .unwrap_or_else(|e| panic!("{}: connect: {e}; vox stderr: {:?}", s.name, vox.stderr()));
            let run = drive_sotto(&conduit, s.sotto_sends, &mut vox, sotto_timeout).await;
            drop(conduit);
            (run, vox, proxy, None)
        }
        Dir::VoxInitiator => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let sotto_addr = listener.local_addr().expect("local_addr");
            let acceptor = sotto_tokio::raw::serve_tcp(listener, s.config).expect("valid config");
            let (proxy, target) = maybe_proxy(sotto_addr, s.chaos, s.cuts).await;
            let target = target.to_string();
            let mut vox =
                vox_peer(&vox_args("initiator", "--connect", &target, s.vox_sends, s.sotto_sends, s.vox_echoes));
            let conduit = tokio::time::timeout(Duration::from_secs(20), acceptor.accept())
                .await
                .unwrap_or_else(|_| panic!("{}: no session from vox; vox stderr: {:?}", s.name, vox.stderr()))
                .map(Arc::new)
                .expect("accept");
            let run = if s.sotto_echoes {
                drive_sotto_echo(&conduit, s.vox_sends, &mut vox, sotto_timeout).await
            } else {
                drive_sotto(&conduit, s.sotto_sends, &mut vox, sotto_timeout).await
            };
            drop(conduit);
            let stats = acceptor.stats();
            (run, vox, proxy, Some(stats))
        }
    };
    vox.kill();
    let vox = VoxReport::of(&mut vox, s.sotto_sends);
    let proxy = proxy.map(|mut p| {
        p.kill();
        ProxyReport::of(&p)
    });
    let sotto_delivery = Delivery::of(&sotto.delivered, s.vox_sends);
    let out = Outcome { sotto, sotto_delivery, vox, proxy, acceptor };
    report(s, &out);
    out
}

fn report(s: &Scenario, o: &Outcome) {
    let st = &o.sotto.stats;
    let c = &st.conduit;
    let d = &c.link_drops;
    let proxy = o.proxy.map_or_else(
        || "no proxy".to_owned(),
        |p| format!("proxy: {} connections, {} cut by the byte budget", p.connections, p.kills),
    );
    println!("=== {} ({:?}, {proxy}, {:.1?})", s.name, s.dir, o.sotto.elapsed);
    println!(
        "  sotto: sent {}/{}; delivered {}; undecodable {}; ended {:?}; EXT links {}",
        o.sotto.sent,
        s.sotto_sends,
        o.sotto_delivery,
        o.sotto.undecodable.len(),
        o.sotto.ended,
        o.sotto.ext_links(),
    );
    println!(
        "  sotto: links up {} (resumes {}), down {} [{}]; gaps {}, ack-starved cycles {}, \
         duplicates dropped {}, frames sent {} (replayed {}), dials {} (failed {})",
        st.link_ups,
        c.resumes,
        st.link_downs,
        o.sotto.downs(),
        d.gap,
        d.ack_starved,
        c.duplicates_dropped,
        c.frames_sent,
        c.frames_replayed,
        st.dials,
        st.dial_failures,
    );
    if let Some(a) = &o.acceptor {
        println!(
            "  sotto acceptor: {} links, {} sessions, {} resumes, {} rejected, {} bad hellos",
            a.links, a.sessions, a.resumes, a.rejected, a.bad_hellos
        );
    }
    println!(
        "  vox: {}; received {}; exit {:?}; links {:?}; error/retry lines {}",
        o.vox.summary, o.vox.delivery, o.vox.exit, o.vox.links, o.vox.errors
    );
    if !o.vox.delivery.exact() || o.vox.exit != Some(0) {
        println!("  vox's own shortfall (not a sotto failure); its stderr tail:");
        for l in &o.vox.stderr_tail {
            println!("    {l}");
        }
    }
}

/// What a run where vox gave up must still show on the sotto side: what arrived is an exact
/// prefix of vox's messages (nothing lost before the last one delivered, no duplicate, no
/// reordering, nothing foreign), on one session that never ended nor rejected a resume.
fn assert_sotto_prefix(s: &Scenario, o: &Outcome) {
    let ctx = || format!("{}: vox stderr tail {:#?}", s.name, o.vox.stderr_tail);
    let d = &o.sotto_delivery;
    assert!(o.sotto.undecodable.is_empty(), "undecodable items {:?}; {}", o.sotto.undecodable, ctx());
    assert_eq!((d.duplicates, d.out_of_order, d.foreign), (0, 0, 0), "sotto delivered {d}; {}", ctx());
    assert!(d.missing.iter().all(|&m| m >= d.received), "sotto delivered a gapped sequence: {d}; {}", ctx());
    assert_eq!(o.sotto.ended, None, "the sotto session ended; {}", ctx());
    assert_eq!(o.sotto.ext_links(), 0, "EXT must never be in force against vox; {}", ctx());
    if let Some(a) = &o.acceptor {
        assert_eq!(a.sessions, 1, "vox must resume its one session, never start another; {}", ctx());
        assert_eq!(a.rejected, 0, "no resume may be rejected; {}", ctx());
    }
}

/// What every scenario must show on the sotto side.
fn assert_sotto(s: &Scenario, o: &Outcome) {
    let ctx = || format!("{}: vox stderr tail {:#?}", s.name, o.vox.stderr_tail);
    assert!(o.sotto.undecodable.is_empty(), "undecodable items {:?}; {}", o.sotto.undecodable, ctx());
    assert!(
        o.sotto_delivery.exact(),
        "sotto must deliver msg-0..msg-{} exactly once, in order: {}; {}",
        s.vox_sends.saturating_sub(1),
        o.sotto_delivery,
        ctx()
    );
    assert_eq!(o.sotto.sent, s.sotto_sends, "sotto could not send everything ({:?}); {}", o.sotto.send_error, ctx());
    assert!(o.sotto.peer_exited, "the vox peer did not finish in time; {}", ctx());
    assert_eq!(o.sotto.ended, None, "the sotto session ended; {}", ctx());
    assert_eq!(o.sotto.ext_links(), 0, "EXT must never be in force against vox; {}", ctx());
    assert!(o.sotto.stats.link_ups >= 1);
    if let Some(a) = &o.acceptor {
        assert_eq!(a.sessions, 1, "vox must resume its one session, never start another; {}", ctx());
        assert_eq!(a.rejected, 0, "no resume may be rejected; {}", ctx());
    }
}

fn scenario(name: &'static str, dir: Dir, chaos: Option<u64>) -> Scenario {
    Scenario {
        name,
        dir,
        chaos,
        cuts: CUTS,
        sotto_sends: N,
        vox_sends: N,
        vox_echoes: false,
        sotto_echoes: false,
        config: Config::default(),
    }
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime").block_on(f)
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn baseline_sotto_initiator_vox_acceptor() {
    let _g = serial();
    let s = scenario("baseline sotto initiator -> vox acceptor", Dir::SottoInitiator, None);
    let o = block_on(run(&s));
    assert_sotto(&s, &o);
    assert_eq!(o.sotto.stats.link_ups, 1, "no link should die without a proxy");
}

#[test]
fn baseline_vox_initiator_sotto_acceptor() {
    let _g = serial();
    let s = scenario("baseline vox initiator -> sotto acceptor", Dir::VoxInitiator, None);
    let o = block_on(run(&s));
    assert_sotto(&s, &o);
    assert_eq!(o.sotto.stats.link_ups, 1, "no link should die without a proxy");
}

/// Seeds for the chaos runs (each seed is one run per direction). Override with
/// `INTEROP_SEEDS=1,2,3`.
fn seeds() -> Vec<u64> {
    std::env::var("INTEROP_SEEDS")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 3, 4])
}

/// One run per seed through the chaos proxy. Every run must keep sotto's guarantees.
///
/// A vox initiator sometimes stops making progress: it reconnects thousands of times and
/// exits at its timeout without having sent or received everything. The proxy log
/// (`INTEROP_PROXY_LOG=1`) shows the pattern: on every link the sotto-to-vox direction uses
/// up the whole byte budget (200..5000 bytes, both directions together) with the replay
/// sotto writes at once after the resume handshake; vox gets nothing of its own through and
/// its received count stops moving. The same happens with sotto's code from before this test
/// was written; the sotto side stays correct throughout. Such a run can only be checked for
/// what vox did send: sotto must have delivered an exact prefix of it. At least one run per
/// direction must complete in full: when none of the seeds' runs does (vox fell short in
/// all of them, seen once in a CI run for the vox initiator), up to `EXTRA_SEEDS` more
/// seeds are tried, one at a time, until one does.
fn chaos(dir: Dir, name: &'static str) {
    const EXTRA_SEEDS: u64 = 4;
    let _g = serial();
    let (mut gaps, mut kills, mut truncated, mut items) = (0, 0, 0, 0);
    let mut complete = 0;
    let base = seeds();
    let first_extra = base.iter().max().copied().unwrap_or(0) + 1;
    let extra = first_extra..first_extra + EXTRA_SEEDS;
    let mut runs = 0;
    for seed in base.iter().copied().chain(extra) {
        if runs >= base.len() && complete > 0 {
            break;
        }
        runs += 1;
        let s = scenario(name, dir, Some(seed));
        println!("--- seed {seed}");
        let o = block_on(run(&s));
        let vox_fell_short = o.vox.exit != Some(0);
        if vox_fell_short && !o.sotto_delivery.exact() {
            assert_sotto_prefix(&s, &o);
            println!("  (vox fell short on its own: sotto checked for an exact prefix of what vox sent)");
        } else {
            assert_sotto(&s, &o);
            complete += 1;
        }
        let p = o.proxy.expect("proxy report");
        assert!(p.kills >= 3, "{name} seed {seed}: the proxy should have cut several links, cut {}", p.kills);
        assert!(o.sotto.stats.conduit.resumes >= 3, "{name} seed {seed}: sotto should have resumed several times");
        gaps += o.sotto.stats.conduit.link_drops.gap;
        kills += p.kills;
        truncated += o.sotto.truncated();
        items += o.sotto_delivery.received;
    }
    println!(
        "=== {name}: {runs} runs ({complete} complete), {items} items delivered to sotto exactly once, in order; \
         {kills} links cut ({truncated} seen by sotto inside a frame); {gaps} vox gaps seen by sotto, each refilled \
         by vox's replay"
    );
    assert!(complete >= 1, "{name}: no run completed in full");
}

#[test]
fn chaos_sotto_initiator_vox_acceptor() {
    chaos(Dir::SottoInitiator, "chaos sotto initiator -> proxy -> vox acceptor");
}

#[test]
fn chaos_vox_initiator_sotto_acceptor() {
    chaos(Dir::VoxInitiator, "chaos vox initiator -> proxy -> sotto acceptor");
}

/// sotto sends one way into a 64-frame ring; vox sends nothing, so it acks only in resume
/// handshakes. sotto must not stall: once vox has been silent for `ack_starved_timeout`, it
/// cycles the link (`AckStarved`) and the resume trims its ring.
fn ack_starvation(dir: Dir, name: &'static str) {
    let _g = serial();
    let mut config = Config::default();
    config.protocol.replay_frames = 64;
    // How long vox may stay silent before a cycle, and the retry delay when a cycle brought
    // no ack (base form has no other use for `ping_interval`): short, to keep the test short.
    config.protocol.ack_starved_timeout = Duration::from_millis(300);
    config.protocol.ping_interval = Duration::from_millis(300);
    let s = Scenario {
        name,
        dir,
        chaos: None,
        cuts: CUTS,
        sotto_sends: 600,
        vox_sends: 0,
        vox_echoes: false,
        sotto_echoes: false,
        config,
    };
    let o = block_on(run(&s));
    assert_sotto(&s, &o);
    let cycles = o.sotto.stats.conduit.link_drops.ack_starved;
    assert!(cycles >= 600 / 64 - 1, "{name}: expected the link to be cycled for acks, got {cycles} cycles");
}

#[test]
fn ack_starvation_sotto_initiator_vox_acceptor() {
    ack_starvation(Dir::SottoInitiator, "ack starvation: sotto initiator -> vox acceptor, one way, 64-frame ring");
}

#[test]
fn ack_starvation_vox_initiator_sotto_acceptor() {
    ack_starvation(Dir::VoxInitiator, "ack starvation: vox initiator -> sotto acceptor, one way, 64-frame ring");
}

/// No GOODBYE in the base form: a sotto acceptor that closes its session just drops the link;
/// the vox initiator resumes as after any link loss, is answered REJECTED (the session is
/// gone) and reports `SessionLost`.
#[test]
fn close_against_a_vox_initiator_is_a_lost_session_for_vox() {
    let _g = serial();
    block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        let acceptor = sotto_tokio::raw::serve_tcp(listener, Config::default()).expect("valid config");
        // vox waits for 20 items; it gets 10, then the close.
        let mut vox = vox_peer(&vox_args("initiator", "--connect", &addr.to_string(), 0, 20, false));
        let conduit = tokio::time::timeout(Duration::from_secs(20), acceptor.accept())
            .await
            .expect("a session from vox")
            .expect("accept");
        for i in 0..10 {
            conduit.send(encode_string(&msg(i))).await.expect("send");
        }
        // close() without extensions ends the session at once, dropping unsent items: wait
        // until vox has everything first.
        assert!(vox.wait_stdout("recv msg-9", Duration::from_secs(20)).await, "vox got the 10 items");
        assert_eq!(conduit.close(0, "done").await, SessionEnd::LocalClose { code: 0 });
        assert!(vox.wait_exit(Duration::from_secs(20)).await.is_some(), "vox gives up on a lost session");
        let report = VoxReport::of(&mut vox, 20);
        let stderr = vox.stderr();
        println!("=== close against a vox initiator (no GOODBYE in the base form)");
        println!("  vox: {}; exit {:?}", report.summary, report.exit);
        println!("  sotto acceptor: {} rejected resume(s)", acceptor.stats().rejected);
        for l in stderr.iter().filter(|l| l.contains("session lost")).take(2) {
            println!("  vox: {l}");
        }
        assert_eq!(report.delivery.received, 10);
        assert!(stderr.iter().any(|l| l.contains("session lost")), "vox should report SessionLost: {stderr:?}");
        assert!(acceptor.stats().rejected >= 1, "sotto answers the resume of a closed session with REJECTED");
    });
}

/// Items in the one-way burst of issue 14 defect 6 (five times the default replay ring).
const BURST: usize = 20_000;
/// Echoes in the full-speed echo scenarios (issue 14 defects 7 and 8).
const ECHOES: usize = 100_000;

/// Issue 14 defect 6: a sotto initiator sends `BURST` items as fast as it can, with the
/// default configuration (a 4096-frame ring), to a vox acceptor that only reads and so never
/// acks except in a resume handshake. The burst used to stop for good after one ring's worth
/// (no cycle, no event). Now the conduit cycles the link once the peer has sent no ack for
/// `ack_starved_timeout`, and the resume hello's position trims the ring.
///
/// Run twice: on a current-thread runtime, where the sender fills the whole ring before the
/// driver transmits a frame (the case that stalled every time), and on a multi-thread one.
#[test]
fn one_way_burst_to_a_read_only_vox_acceptor_is_all_delivered() {
    let _g = serial();
    one_way_burst(false);
    one_way_burst(true);
}

fn one_way_burst(multi_thread: bool) {
    let rt = if multi_thread { "multi-thread runtime" } else { "current-thread runtime" };
    println!("--- {rt}");
    let s = Scenario {
        name: "one-way burst: sotto initiator -> read-only vox acceptor, default ring",
        dir: Dir::SottoInitiator,
        chaos: None,
        cuts: CUTS,
        sotto_sends: BURST,
        vox_sends: 0,
        vox_echoes: false,
        sotto_echoes: false,
        config: Config::default(),
    };
    let o = if multi_thread {
        block_on(run(&s))
    } else {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(run(&s))
    };
    assert_sotto(&s, &o);
    assert!(o.vox.delivery.exact(), "vox must receive the whole burst ({rt}): {}", o.vox.delivery);
    let cycles = o.sotto.stats.conduit.link_drops.ack_starved;
    let rings = (BURST as u64).div_ceil(u64::from(s.config.protocol.replay_frames));
    assert!(
        (1..=2 * rings).contains(&cycles),
        "a ring's worth per cycle: expected 1..={} ack-starved cycles, got {cycles} ({rt})",
        2 * rings
    );
}

fn echo_through_a_vox_acceptor(name: &'static str, chaos: Option<u64>, cuts: (u64, u64)) -> Outcome {
    let s = Scenario {
        name,
        dir: Dir::SottoInitiator,
        chaos,
        cuts,
        sotto_sends: ECHOES,
        vox_sends: ECHOES,
        vox_echoes: true,
        sotto_echoes: false,
        config: Config::default(),
    };
    let o = block_on(run(&s));
    assert_sotto(&s, &o);
    o
}

/// Issue 14 defect 8: a sotto initiator sends `ECHOES` items at full speed to a vox acceptor
/// that echoes each one. The ring fills, because vox's acks ride on its echoes and lag by what
/// is in flight; that is backpressure, not starvation: the link is never cycled.
#[test]
fn echoes_through_a_healthy_vox_acceptor_never_cycle_the_link() {
    let _g = serial();
    let o = echo_through_a_vox_acceptor("echoes: sotto initiator -> echoing vox acceptor", None, CUTS);
    assert_eq!(o.sotto.stats.conduit.link_drops.ack_starved, 0, "no ack-starved cycle with a healthy vox peer");
    assert_eq!(o.sotto.stats.link_ups, 1, "no link should die without a proxy");
}

/// Issue 14 defect 8, with a few link cuts: the same echoes through the chaos proxy, which
/// cuts each connection after 1 to 3 MB (a handful of cuts a run). Every echo arrives exactly
/// once and in order; the ack-starved cycles are reported.
#[test]
fn echoes_through_a_vox_acceptor_survive_a_few_link_cuts() {
    let _g = serial();
    let o = echo_through_a_vox_acceptor(
        "echoes: sotto initiator -> proxy (1-3 MB a link) -> echoing vox acceptor",
        Some(1),
        (1_000_000, 3_000_000),
    );
    println!("  ack-starved cycles with link cuts: {}", o.sotto.stats.conduit.link_drops.ack_starved);
    assert!(o.sotto.stats.conduit.resumes >= 1, "the proxy should have cut at least one link");
}

/// Issue 14 defect 7: a raw sotto acceptor whose application is one loop, `recv` then
/// `send(..).await`, echoes `ECHOES` items to a vox initiator sending at full speed. It must
/// complete without a stall and without blaming the link with a keepalive timeout.
///
/// The loop stops reading while its `send` waits for acks, and vox's acks ride on the frames
/// it no longer reads: the driver keeps reading (up to its hold limit) and applies the acks
/// of the frames it holds back. What no driver can change: vox acks only on its own data, so
/// once vox has sent its last item, echoes still to go beyond one ring's worth (4096 frames)
/// can only learn vox's position through a resume handshake. Those cycles (`AckStarved`,
/// one per `ack_starved_timeout` at most) are the base-form rule, not a stall; every link
/// that went down went down for that reason, and their number is bounded by the echoes left
/// when vox went quiet.
#[test]
fn recv_then_send_echo_acceptor_keeps_up_with_a_vox_initiator() {
    let _g = serial();
    let s = Scenario {
        name: "echoes: vox initiator -> sotto acceptor echoing in a recv-then-send loop",
        dir: Dir::VoxInitiator,
        chaos: None,
        cuts: CUTS,
        sotto_sends: ECHOES,
        vox_sends: ECHOES,
        vox_echoes: false,
        sotto_echoes: true,
        config: Config::default(),
    };
    let o = block_on(run(&s));
    assert_sotto(&s, &o);
    assert!(o.vox.delivery.exact(), "vox must get every echo back: {}", o.vox.delivery);
    let keepalive = o.sotto.stats.conduit.link_drops.keepalive;
    assert_eq!(keepalive, 0, "a healthy link is never blamed with KeepaliveTimeout");
    let starved = o.sotto.stats.conduit.link_drops.ack_starved;
    println!("  ack-starved cycles: {starved}");
    assert!(starved <= ECHOES as u64 / 4096 + 1, "at most one cycle per ring's worth of echoes: {starved}");
    assert_eq!(o.sotto.stats.link_ups, starved + 1, "links went down only for ack starvation");
}
