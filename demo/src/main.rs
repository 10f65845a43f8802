//! `cargo run --release -p sotto-demo`: a session kept alive across a link that dies every
//! few hundred milliseconds.
//!
//! An acceptor on smol and an initiator on tokio, on loopback, with a chaos proxy between
//! them that kills the TCP link after a random 100-400 ms (usually mid-frame). Over the
//! session, several virtual connections carry sequence-numbered messages both ways as fast
//! as credit allows; receivers check every message. A progress line runs on stderr; the
//! final report (text, or JSON with `--json`) says what was sent, delivered, lost,
//! duplicated, reordered, how often the link died and how fast the session came back. The
//! exit status is non-zero if anything was lost, duplicated, reordered or corrupted.
//!
//! Options: `--secs N` (traffic time, default 10), `--conns N` (default 4), `--seed N`,
//! `--json`, `--restart-every SECS`.
//!
//! `--restart-every SECS` (Unix only): the acceptor runs in a child process (this binary
//! again), and every SECS seconds a new acceptor process takes over the listening socket and
//! the live session from the old one (`sotto_smol::handoff`, docs/handoff.md), which then
//! exits; all under the same link kills and traffic. The acceptor application's state for
//! each connection (the next number it expects, the next it sends) moves from the old
//! process to the new one through the demo, so the checked traffic carries on exactly. The
//! report adds the handoffs, their times (median, max) and the sessions moved; lost,
//! duplicated and reordered must still be 0. Child processes exit when the demo does (their
//! control socket closes).
#![forbid(unsafe_code)]

#[cfg(unix)]
mod child;
#[cfg(unix)]
mod control;
mod proxy;
mod report;
#[cfg(unix)]
mod restart;
mod traffic;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use sotto_tokio::{Config, ResumeTiming, SessionHandle};

use proxy::KillProxy;
use report::{Direction, Latency, Report};
use traffic::{recv_loop, send_loop, Tally};

/// Lifetime of each proxied link, milliseconds.
const LINK_LIFE_MS: (u64, u64) = (100, 400);
/// How long receivers may take to see every message once the senders stop.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

struct Options {
    secs: f64,
    conns: u32,
    seed: u64,
    json: bool,
    /// Replace the acceptor process this often (restart mode).
    restart_every: Option<f64>,
}

const USAGE: &str = "usage: sotto-demo [--secs N] [--conns N] [--seed N] [--json] [--restart-every SECS]

  --secs N              seconds of traffic (default 10)
  --conns N             virtual connections, each with traffic both ways (default 4)
  --seed N              the chaos proxy's seed (default: from the clock)
  --json                the report as JSON
  --restart-every SECS  run the acceptor in a child process and replace it with a new process
                        every SECS seconds (live handoff of the listener and the session;
                        Unix only)";

fn options() -> Result<Options, String> {
    let mut o = Options {
        secs: 10.0,
        conns: 4,
        seed: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64),
        json: false,
        restart_every: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--secs" => o.secs = value("--secs")?.parse().map_err(|e| format!("--secs: {e}"))?,
            "--conns" => o.conns = value("--conns")?.parse().map_err(|e| format!("--conns: {e}"))?,
            "--seed" => o.seed = value("--seed")?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--json" => o.json = true,
            "--restart-every" => {
                let v: f64 = value("--restart-every")?.parse().map_err(|e| format!("--restart-every: {e}"))?;
                if !v.is_finite() || v <= 0.0 {
                    return Err("--restart-every must be positive".to_string());
                }
                if cfg!(not(unix)) {
                    return Err("--restart-every needs Unix (the handoff passes sockets between processes)".to_string());
                }
                o.restart_every = Some(v);
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if !o.secs.is_finite() || o.secs <= 0.0 || o.conns == 0 {
        return Err("--secs and --conns must be positive".to_string());
    }
    Ok(o)
}

fn main() -> ExitCode {
    #[cfg(unix)]
    if std::env::args().nth(1).as_deref() == Some(restart::CHILD_FLAG) {
        return child::main();
    }
    let opts = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match rt.block_on(run_mode(&opts)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("demo failed: {e}");
            return ExitCode::from(2);
        }
    };
    if opts.json {
        match facet_json::to_string_pretty(&report) {
            Ok(j) => println!("{j}"),
            Err(e) => {
                eprintln!("json: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        print!("{}", report.text());
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn config() -> Config {
    // One session: no need for the acceptor's default 64 preallocated session slots.
    let mut c = Config::default();
    c.acceptor.max_sessions = 2;
    c
}

/// The default demo, or the restart mode.
async fn run_mode(opts: &Options) -> Result<Report, Box<dyn std::error::Error>> {
    match opts.restart_every {
        None => run(opts).await,
        #[cfg(unix)]
        Some(every) => restart::run(opts, Duration::from_secs_f64(every)).await,
        #[cfg(not(unix))]
        Some(_) => Err("--restart-every needs Unix".into()),
    }
}

async fn run(opts: &Options) -> Result<Report, Box<dyn std::error::Error>> {
    // The acceptor: smol. Its driver and its connections' tasks run on smol's executor.
    let listener = smol::net::TcpListener::bind("127.0.0.1:0").await?;
    let upstream = listener.local_addr()?;
    let acceptor = sotto_smol::serve_sessions_tcp(listener, config()).map_err(|e| format!("config: {e}"))?;
    let proxy = KillProxy::start(upstream, LINK_LIFE_MS, opts.seed)?;
    // The initiator: tokio (this runtime), dialing through the proxy.
    let paddr = proxy.addr;
    let dial = move || async move {
        let s = tokio::net::TcpStream::connect(paddr).await?;
        s.set_nodelay(true)?;
        Ok(s)
    };
    let a = sotto_tokio::connect_session(dial, config()).await?;
    let b = acceptor.accept().await?;

    // Connections: the initiator opens them, the acceptor accepts.
    let mut a_conns = Vec::new();
    let mut b_conns = Vec::new();
    for i in 0..opts.conns {
        let name = format!("stream-{i}");
        // The Open completes once the acceptor answers it: both at once.
        let answer = async { b.accept().await?.accept(b"ready").await.map_err(Box::<dyn std::error::Error>::from) };
        let (opened, accepted) = futures::future::join(a.open(name.as_bytes()), answer).await;
        a_conns.push(opened?);
        b_conns.push(accepted?);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let up = Arc::new(Tally::default()); // initiator -> acceptor
    let down = Arc::new(Tally::default()); // acceptor -> initiator
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for (i, c) in a_conns.into_iter().enumerate() {
        let (tx, rx) = c.split();
        let (stop, up, down) = (Arc::clone(&stop), Arc::clone(&up), Arc::clone(&down));
        let conn = i as u32;
        senders.push(tokio::spawn(async move { send_loop(tx, conn, 0, &stop, &up).await }));
        receivers.push(tokio::spawn(async move { recv_loop(rx, conn, 1, &down).await }));
    }
    let mut smol_tasks = Vec::new();
    for (i, c) in b_conns.into_iter().enumerate() {
        let (tx, rx) = c.split();
        let (stop, up, down) = (Arc::clone(&stop), Arc::clone(&up), Arc::clone(&down));
        let conn = i as u32;
        smol_tasks.push(smol::spawn(async move { send_loop(tx, conn, 1, &stop, &down).await }));
        smol_tasks.push(smol::spawn(async move {
            recv_loop(rx, conn, 0, &up).await;
            0
        }));
    }

    // Traffic, with a progress line.
    let started = Instant::now();
    let traffic = Duration::from_secs_f64(opts.secs);
    let mut timings = Vec::new();
    let mut last = (started, 0u64, 0u64);
    while started.elapsed() < traffic {
        tokio::time::sleep(Duration::from_millis(250).min(traffic.saturating_sub(started.elapsed()))).await;
        timings.extend(a.take_resume_timings().into_iter().map(|t| (true, t)));
        timings.extend(b.take_resume_timings().into_iter().map(|t| (false, t)));
        let now = Instant::now();
        let delivered = up.delivered.load(Ordering::Relaxed) + down.delivered.load(Ordering::Relaxed);
        let bytes = up.bytes.load(Ordering::Relaxed) + down.bytes.load(Ordering::Relaxed);
        let dt = now.duration_since(last.0).as_secs_f64().max(1e-9);
        eprint!(
            "\r{:5.1} s  sent {:>10}  delivered {:>10}  link kills {:>4}  resumes {:>4}  {:7.1} MB/s {:>9.0} msgs/s ",
            started.elapsed().as_secs_f64(),
            up.sent.load(Ordering::Relaxed) + down.sent.load(Ordering::Relaxed),
            delivered,
            proxy.kills(),
            a.stats().session.conduit.resumes,
            (bytes - last.2) as f64 / dt / 1e6,
            (delivered - last.1) as f64 / dt,
        );
        last = (now, delivered, bytes);
    }
    let seconds = started.elapsed().as_secs_f64();
    let (delivered_at_stop, bytes_at_stop) = (
        up.delivered.load(Ordering::Relaxed) + down.delivered.load(Ordering::Relaxed),
        up.bytes.load(Ordering::Relaxed) + down.bytes.load(Ordering::Relaxed),
    );
    eprintln!();

    // Stop: no more kills, senders send their FIN, receivers check everything arrived.
    proxy.calm.store(true, Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let drain = async {
        join_all(senders).await;
        join_all(receivers).await;
        join_all(smol_tasks).await;
    };
    let complete = tokio::time::timeout(DRAIN_DEADLINE, drain).await.is_ok()
        && up.finished.load(Ordering::SeqCst) == u64::from(opts.conns)
        && down.finished.load(Ordering::SeqCst) == u64::from(opts.conns);
    timings.extend(a.take_resume_timings().into_iter().map(|t| (true, t)));
    timings.extend(b.take_resume_timings().into_iter().map(|t| (false, t)));
    let (sa, sb) = (a.stats(), b.stats());
    let initiator_end = a.close(0, "demo done").await;
    let acceptor_end = wait_end(&b).await;
    Ok(build_report(
        opts,
        &proxy,
        &up,
        &down,
        Stats { seconds, delivered_at_stop, bytes_at_stop, complete },
        &timings,
        &sa,
        (sb.session.conduit.frames_replayed, sb.session.conduit.duplicates_dropped),
        (initiator_end, acceptor_end),
    ))
}

/// Wait (bounded) for a session to end, returning how.
async fn wait_end(s: &SessionHandle) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(end) = s.ended() {
            return format!("{end:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    "still open".to_string()
}

struct Stats {
    seconds: f64,
    delivered_at_stop: u64,
    bytes_at_stop: u64,
    complete: bool,
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    opts: &Options,
    proxy: &KillProxy,
    up: &Tally,
    down: &Tally,
    run: Stats,
    timings: &[(bool, ResumeTiming)],
    sa: &sotto_tokio::SessionStats,
    (acceptor_replayed, acceptor_duplicates): (u64, u64),
    (initiator_end, acceptor_end): (sotto_proto::SessionEnd, String),
) -> Report {
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::SeqCst);
    let kills: Vec<Instant> = proxy.log.kills.lock().map(|k| k.clone()).unwrap_or_default();
    // Pair each resume with the latest kill before its outage began.
    let kill_before = |t: Instant| kills.iter().rev().find(|k| **k <= t).copied();
    let mut first = Vec::new();
    let mut relink = Vec::new();
    for (initiator, t) in timings {
        let Some(kill) = kill_before(t.link_lost) else { continue };
        if let Some(f) = t.first_delivery {
            first.push(f.duration_since(kill).as_secs_f64());
        }
        if *initiator {
            relink.push(t.resumed.duration_since(kill).as_secs_f64());
        }
    }
    let mut r = Report {
        seconds: run.seconds,
        connections: opts.conns,
        sent: load(&up.sent) + load(&down.sent),
        delivered: load(&up.delivered) + load(&down.delivered),
        // A receiver that never saw its direction's FIN could not count what it missed:
        // then whatever was sent and not delivered is lost.
        lost: if run.complete {
            load(&up.lost) + load(&down.lost)
        } else {
            let undelivered = |t: &Tally| load(&t.sent).saturating_sub(load(&t.delivered)).max(load(&t.lost));
            undelivered(up) + undelivered(down)
        },
        duplicated: load(&up.duplicated) + load(&down.duplicated),
        reordered: load(&up.reordered) + load(&down.reordered),
        corrupted: load(&up.corrupted) + load(&down.corrupted),
        initiator_to_acceptor: Direction { sent: load(&up.sent), delivered: load(&up.delivered) },
        acceptor_to_initiator: Direction { sent: load(&down.sent), delivered: load(&down.delivered) },
        throughput_mb_s: run.bytes_at_stop as f64 / run.seconds / 1e6,
        throughput_msgs_s: run.delivered_at_stop as f64 / run.seconds,
        link_kills: kills.len() as u64,
        kills_mid_frame: proxy.log.mid_frame.load(Ordering::SeqCst),
        resumes: sa.session.conduit.resumes,
        frames_replayed: sa.session.conduit.frames_replayed + acceptor_replayed,
        duplicate_frames_discarded: sa.session.conduit.duplicates_dropped + acceptor_duplicates,
        resume_latency: Latency::of(
            "per resume and side: from the proxy killing the link to the first message delivered to that side \
             over the next link",
            first,
        ),
        relink_latency: Latency::of(
            "per resume: from the proxy killing the link to the initiator's next link completing its handshake",
            relink,
        ),
        initiator_end: format!("{initiator_end:?}"),
        acceptor_end,
        complete: run.complete,
        restarts: None,
        ok: false,
    };
    r.ok = r.complete && r.lost == 0 && r.duplicated == 0 && r.reordered == 0 && r.corrupted == 0;
    r
}
