//! The restart mode (`--restart-every SECS`, Unix): the acceptor runs in a child process (this
//! binary, `--acceptor-child`), and every SECS seconds a new one takes over the listening
//! socket and the live session from it (`sotto_smol::handoff`), gets the application's
//! per-connection state (where each direction's numbering got to) relayed from it, and
//! carries the checked traffic on; the old one exits. All under the chaos proxy's link kills
//! and full traffic both ways. The report adds the handoffs, their times and what moved.

use std::io;
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::control::{read_on_thread, Msg, Writer};
use crate::proxy::KillProxy;
use crate::report::{Latency, Report, Restarts};
use crate::traffic::{recv_loop, send_loop, Tally};
use crate::{build_report, config, Options, Stats, DRAIN_DEADLINE, LINK_LIFE_MS};

/// The hidden flag that makes the binary an acceptor process.
pub(crate) const CHILD_FLAG: &str = "--acceptor-child";
/// How long the demo waits for any one step of an acceptor process.
const STEP: Duration = Duration::from_secs(30);

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// A running acceptor process and its control channel. Dropping it closes the channel
/// (the process exits on that) and kills the process if it is still there.
struct Acceptor {
    child: Child,
    control: UnixStream,
    out: Writer,
    rx: smol::channel::Receiver<Msg>,
}

impl Acceptor {
    /// Start one; its counts go straight into `up` and `down`.
    fn spawn(up: &Arc<Tally>, down: &Arc<Tally>) -> io::Result<Self> {
        let (mine, theirs) = UnixStream::pair()?;
        let child = Command::new(std::env::current_exe()?)
            .arg(CHILD_FLAG)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let (tx, rx) = smol::channel::bounded(64);
        let (up, down) = (Arc::clone(up), Arc::clone(down));
        read_on_thread(
            mine.try_clone()?,
            move |m| match m {
                Msg::Tally(d) => {
                    d.add_to(&up, &down);
                    true
                }
                m => tx.send_blocking(m).is_ok(),
            },
            || {},
        )?;
        Ok(Self { child, out: Writer::new(mine.try_clone()?), control: mine, rx })
    }

    fn send(&self, m: &Msg) -> Res<()> {
        self.out.send(m).map_err(|e| format!("acceptor process {}: {e}", self.child.id()).into())
    }

    /// Its next message (not a count), within `STEP`; `Fail` and its exit are errors.
    async fn next(&self, what: &str) -> Res<Msg> {
        let pid = self.child.id();
        match tokio::time::timeout(STEP, self.rx.recv()).await {
            Err(_) => Err(format!("acceptor process {pid}: timed out waiting for {what}").into()),
            Ok(Err(_)) => Err(format!("acceptor process {pid} exited before {what}").into()),
            Ok(Ok(Msg::Fail(e))) => Err(format!("acceptor process {pid} failed: {e}").into()),
            Ok(Ok(m)) => Ok(m),
        }
    }

    /// Its next message, which must be `want`.
    async fn expect(&self, want: &Msg) -> Res<()> {
        let m = self.next(&want.to_string()).await?;
        if &m == want {
            Ok(())
        } else {
            Err(format!("acceptor process {}: {m:?} instead of {want:?}", self.child.id()).into())
        }
    }

    /// Wait (bounded) for it to exit successfully.
    async fn exit(mut self) -> Res<()> {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("acceptor process {} exited with {status}", self.child.id()).into())
                };
            }
            if Instant::now() > deadline {
                return Err(format!("acceptor process {} did not exit", self.child.id()).into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        let _ = self.control.shutdown(Shutdown::Both);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One handoff, as measured.
struct Handoff {
    /// When the demo told the old process to hand off.
    started: Instant,
    /// The old process's `hand_off`, from its start to the last ACK.
    elapsed: Duration,
    /// The longest the session was frozen.
    freeze: Duration,
    /// From the demo's command to the old process to the new process's traffic running.
    takeover: Duration,
    sessions: u64,
    connections: u64,
}

/// Replace `old` with a new acceptor process: listener, session, application state.
async fn replace(
    old: Acceptor,
    n: u64,
    up: &Arc<Tally>,
    down: &Arc<Tally>,
    frames: &mut (u64, u64),
) -> Res<(Acceptor, Handoff)> {
    let new = Acceptor::spawn(up, down)?;
    new.expect(&Msg::Hello).await?;
    let path = std::env::temp_dir().join(format!("sotto-demo-{}-{n}.sock", std::process::id()));
    let t0 = Instant::now();
    old.send(&Msg::Give { path: path.clone() })?;
    old.expect(&Msg::Ready).await?;
    new.send(&Msg::Take { path })?;
    let Msg::Handed { handed_off, kept, elapsed_us, freeze_us, .. } = old.next("the handoff's report").await? else {
        return Err("the old acceptor process did not report its handoff".into());
    };
    if handed_off == 0 || kept > 0 {
        return Err(format!("handoff {n}: {handed_off} sessions handed off, {kept} kept").into());
    }
    let Msg::Adopted { sessions, conns } = new.next("the adopted sessions").await? else {
        return Err("the new acceptor process did not report what it adopted".into());
    };
    // The old application's state, connection by connection, once its loops ended.
    loop {
        match old.next("the application's state").await? {
            Msg::State(s) => new.send(&Msg::State(s))?,
            Msg::Frames { replayed, duplicates } => {
                frames.0 += replayed;
                frames.1 += duplicates;
            }
            Msg::Done => break,
            other => return Err(format!("unexpected {other:?} from the old acceptor process").into()),
        }
    }
    new.send(&Msg::Go)?;
    new.expect(&Msg::Running).await?;
    let takeover = t0.elapsed();
    old.exit().await?;
    Ok((
        new,
        Handoff {
            started: t0,
            elapsed: Duration::from_micros(elapsed_us),
            freeze: Duration::from_micros(freeze_us),
            takeover,
            sessions,
            connections: u64::from(conns),
        },
    ))
}

/// Run the demo with the acceptor replaced every `every`.
pub(crate) async fn run(opts: &Options, every: Duration) -> Res<Report> {
    let up = Arc::new(Tally::default()); // initiator -> acceptor
    let down = Arc::new(Tally::default()); // acceptor -> initiator
    let mut frames = (0u64, 0u64);
    let mut current = Acceptor::spawn(&up, &down)?;
    current.expect(&Msg::Hello).await?;
    current.send(&Msg::Start { conns: opts.conns })?;
    let Msg::Addr(upstream) = current.next("its address").await? else {
        return Err("the first acceptor process did not say where it listens".into());
    };
    let proxy = KillProxy::start(upstream, LINK_LIFE_MS, opts.seed)?;
    let paddr = proxy.addr;
    let dial = move || async move {
        let s = tokio::net::TcpStream::connect(paddr).await?;
        s.set_nodelay(true)?;
        Ok(s)
    };
    let a = sotto_tokio::connect_session(dial, config()).await?;
    let mut a_conns = Vec::new();
    for i in 0..opts.conns {
        a_conns.push(a.open(format!("stream-{i}").as_bytes()).await?);
    }
    current.expect(&Msg::Running).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for (i, c) in a_conns.into_iter().enumerate() {
        let (tx, rx) = c.split();
        let (stop, up, down) = (Arc::clone(&stop), Arc::clone(&up), Arc::clone(&down));
        let conn = i as u32;
        senders.push(tokio::spawn(async move { send_loop(tx, conn, 0, &stop, &up).await }));
        receivers.push(tokio::spawn(async move { recv_loop(rx, conn, 1, &down).await }));
    }

    let started = Instant::now();
    let traffic = Duration::from_secs_f64(opts.secs);
    let mut handoffs = Vec::new();
    let mut timings = Vec::new();
    let mut next_handoff = every;
    let mut last = (started, 0u64, 0u64);
    while started.elapsed() < traffic {
        if started.elapsed() >= next_handoff {
            let (new, h) = replace(current, handoffs.len() as u64 + 1, &up, &down, &mut frames).await?;
            current = new;
            handoffs.push(h);
            while next_handoff <= started.elapsed() {
                next_handoff += every;
            }
            continue;
        }
        let until = traffic.min(next_handoff).saturating_sub(started.elapsed());
        tokio::time::sleep(Duration::from_millis(250).min(until)).await;
        timings.extend(a.take_resume_timings().into_iter().map(|t| (true, t)));
        let now = Instant::now();
        let delivered = up.delivered.load(Ordering::Relaxed) + down.delivered.load(Ordering::Relaxed);
        let bytes = up.bytes.load(Ordering::Relaxed) + down.bytes.load(Ordering::Relaxed);
        let dt = now.duration_since(last.0).as_secs_f64().max(1e-9);
        eprint!(
            "\r{:5.1} s  sent {:>10}  delivered {:>10}  link kills {:>4}  resumes {:>4}  handoffs {:>3}  {:7.1} MB/s ",
            started.elapsed().as_secs_f64(),
            up.sent.load(Ordering::Relaxed) + down.sent.load(Ordering::Relaxed),
            delivered,
            proxy.kills(),
            a.stats().session.conduit.resumes,
            handoffs.len(),
            bytes.saturating_sub(last.2) as f64 / dt / 1e6,
        );
        last = (now, delivered, bytes);
    }
    let seconds = started.elapsed().as_secs_f64();
    let (delivered_at_stop, bytes_at_stop) = (
        up.delivered.load(Ordering::Relaxed) + down.delivered.load(Ordering::Relaxed),
        up.bytes.load(Ordering::Relaxed) + down.bytes.load(Ordering::Relaxed),
    );
    eprintln!();

    proxy.calm.store(true, Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    current.send(&Msg::Stop)?;
    let drain = async {
        join_all(senders).await;
        join_all(receivers).await;
    };
    let drained = tokio::time::timeout(DRAIN_DEADLINE, drain).await.is_ok();
    let acceptor_drained = current.expect(&Msg::Drained).await;
    if let Err(e) = &acceptor_drained {
        eprintln!("{e}");
    }
    let complete = drained
        && acceptor_drained.is_ok()
        && up.finished.load(Ordering::SeqCst) == u64::from(opts.conns)
        && down.finished.load(Ordering::SeqCst) == u64::from(opts.conns);
    timings.extend(a.take_resume_timings().into_iter().map(|t| (true, t)));
    let sa = a.stats();
    let initiator_end = a.close(0, "demo done").await;
    let mut acceptor_end = "unknown".to_string();
    while acceptor_drained.is_ok() {
        match current.next("the acceptor's end").await {
            Ok(Msg::Frames { replayed, duplicates }) => {
                frames.0 += replayed;
                frames.1 += duplicates;
            }
            Ok(Msg::End(e)) => acceptor_end = e,
            Ok(Msg::Done) => break,
            Ok(other) => return Err(format!("unexpected {other:?} from the acceptor process").into()),
            Err(e) => {
                eprintln!("{e}");
                break;
            }
        }
    }
    let _ = current.exit().await;
    // The initiator's resumes: after a link the proxy killed, or after the link the old
    // acceptor process closed in a handoff (whichever came last before the link was lost).
    let kills: Vec<Instant> = proxy.log.kills.lock().map(|k| k.clone()).unwrap_or_default();
    let latest = |v: &mut dyn Iterator<Item = Instant>, at: Instant| v.filter(|k| *k <= at).max();
    let (mut after_kill, mut after_handoff) = (Vec::new(), Vec::new());
    for (side, t) in timings {
        let kill = latest(&mut kills.iter().copied(), t.link_lost);
        match latest(&mut handoffs.iter().map(|h| h.started), t.link_lost) {
            Some(h) if kill.is_none_or(|k| k < h) => {
                if let Some(f) = t.first_delivery {
                    after_handoff.push(f.duration_since(h).as_secs_f64());
                }
            }
            _ => after_kill.push((side, t)),
        }
    }
    let restarts = Restarts {
        every_s: every.as_secs_f64(),
        handoffs: handoffs.len() as u64,
        acceptor_processes: handoffs.len() as u64 + 1,
        sessions_moved: handoffs.iter().map(|h| h.sessions).sum(),
        connections_moved: handoffs.iter().map(|h| h.connections).sum(),
        handoff_time: Latency::of(
            "per handoff: the old process's hand_off, from its start (it stops listening) to the new process's \
             last ACK",
            handoffs.iter().map(|h| h.elapsed.as_secs_f64()).collect(),
        ),
        takeover_time: Latency::of(
            "per handoff: from the demo telling the old process to hand off to the new process running the \
             traffic (listener, session, then the application's state relayed)",
            handoffs.iter().map(|h| h.takeover.as_secs_f64()).collect(),
        ),
        resume_after_handoff: Latency::of(
            "per resume after a handoff: from the demo telling the old process to hand off to the first message \
             delivered to the initiator over its link to the new process",
            after_handoff,
        ),
        longest_freeze_ms: handoffs.iter().map(|h| h.freeze.as_secs_f64() * 1e3).fold(0.0, f64::max),
    };
    let mut report = build_report(
        opts,
        &proxy,
        &up,
        &down,
        Stats { seconds, delivered_at_stop, bytes_at_stop, complete },
        &after_kill,
        &sa,
        frames,
        (initiator_end, acceptor_end),
    );
    report.resume_latency.definition =
        format!("{}; initiator side only, resumes after a handoff counted apart", report.resume_latency.definition);
    report.relink_latency.definition =
        format!("{}; resumes after a handoff not counted", report.relink_latency.definition);
    report.restarts = Some(restarts);
    Ok(report)
}
