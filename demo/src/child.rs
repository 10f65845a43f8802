//! An acceptor process of the restart mode (the demo binary run with the hidden
//! `--acceptor-child` flag, its standard input a Unix socket to the demo): the smol acceptor
//! and its side of the checked traffic. The first one listens on loopback and accepts the
//! session; each later one takes the listening socket and the session over from its
//! predecessor (`handoff`), gets the application's per-connection state from it through the
//! demo, and carries on the traffic exactly where the predecessor stopped. It exits when its
//! control channel closes.

use std::collections::BTreeMap;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use futures::StreamExt;
use sotto_smol::handoff::{receive_listener, HandoffConfig, ListenerFamily};
use sotto_smol::{ConnError, Connection, SessionAcceptor, SessionHandle};

use crate::control::{read_on_thread, ConnState, Msg, TallyDelta, Writer};
use crate::traffic::{recv_checked, send_fin, send_from, Checker, Tally};

/// How long a step of the handoff may take before the child gives up.
const STEP: Duration = Duration::from_secs(30);
/// How often the child reports its counts.
const TALLY_EVERY: Duration = Duration::from_millis(200);

/// The child's entry point (`--acceptor-child`).
pub(crate) fn main() -> ExitCode {
    let control = match control() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("--acceptor-child is the restart mode's acceptor process, run by the demo itself: {e}");
            return ExitCode::from(2);
        }
    };
    let (tx, rx) = smol::channel::bounded(64);
    let reader = control.try_clone().and_then(|r| {
        read_on_thread(
            r,
            move |m| tx.send_blocking(m).is_ok(),
            // The demo is gone (or closed the channel): so is this process.
            || std::process::exit(3),
        )
    });
    let out = Arc::new(Writer::new(control));
    if let Err(e) = reader {
        let _ = out.send(&Msg::Fail(format!("control reader: {e}")));
        return ExitCode::from(2);
    }
    match smol::block_on(run(&out, &rx)) {
        Ok(()) => {
            let _ = out.send(&Msg::Done);
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = out.send(&Msg::Fail(e.to_string()));
            ExitCode::from(1)
        }
    }
}

/// The control channel: standard input, which must be a connected Unix socket.
fn control() -> io::Result<UnixStream> {
    let s = UnixStream::from(io::stdin().as_fd().try_clone_to_owned()?);
    s.peer_addr().map_err(|e| io::Error::other(format!("standard input is not a Unix socket ({e})")))?;
    Ok(s)
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

async fn next(rx: &smol::channel::Receiver<Msg>) -> Res<Msg> {
    Ok(rx.recv().await.map_err(|_| "control channel closed")?)
}

/// The acceptor's side of the traffic on one connection.
struct App {
    conns: Vec<(ConnState, Connection)>,
}

/// One running process: its acceptor, the listener's duplicate to pass on, its session.
struct Serving {
    acceptor: SessionAcceptor,
    passed: OwnedFd,
    session: SessionHandle,
    frames_at_start: (u64, u64),
}

async fn run(out: &Arc<Writer>, rx: &smol::channel::Receiver<Msg>) -> Res<()> {
    out.send(&Msg::Hello)?;
    let (serving, app) = match next(rx).await? {
        Msg::Start { conns } => start(out, conns).await?,
        Msg::Take { path } => take(out, rx, &path).await?,
        other => return Err(format!("unexpected first command {other}").into()),
    };
    let up = Arc::new(Tally::default());
    let down = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let reported = Arc::new(Mutex::new(TallyDelta::default()));
    let report = {
        let (out, up, down, reported) = (Arc::clone(out), Arc::clone(&up), Arc::clone(&down), Arc::clone(&reported));
        move || -> io::Result<()> {
            let now = TallyDelta::of(&up, &down);
            let mut last = reported.lock().map_err(|_| io::Error::other("tally poisoned"))?;
            let delta = now.since(&last);
            *last = now;
            out.send(&Msg::Tally(delta))
        }
    };
    // The traffic: per connection a sender and a receiver, each ending with its state.
    let mut tasks = Vec::new();
    for (state, conn) in app.conns {
        let (mut tx, mut rx_conn) = conn.split();
        let (stop, up2, down2) = (Arc::clone(&stop), Arc::clone(&up), Arc::clone(&down));
        let mut checker =
            Checker { conn: state.conn, dir: 0, next: state.recv_next, missing: state.missing.into_iter().collect() };
        let recv = smol::spawn(async move {
            let r = recv_checked(&mut rx_conn, &mut checker, &up2).await;
            (checker, r)
        });
        let c = state.conn;
        let mut seq = state.send_next;
        let send = smol::spawn(async move {
            let mut r = send_from(&mut tx, c, 1, &mut seq, &stop, &down2).await;
            if r.is_ok() {
                r = send_fin(&mut tx, c, 1, seq).await;
            }
            (seq, r)
        });
        tasks.push((recv, send));
    }
    out.send(&Msg::Running)?;
    let ticker = {
        let report = report.clone();
        smol::spawn(async move {
            loop {
                smol::Timer::after(TALLY_EVERY).await;
                if report().is_err() {
                    return;
                }
            }
        })
    };
    let frames = |s: &SessionHandle| {
        let st = s.stats();
        (st.session.conduit.frames_replayed, st.session.conduit.duplicates_dropped)
    };
    match next(rx).await? {
        Msg::Give { path } => {
            let _ = std::fs::remove_file(&path);
            let listener = UnixListener::bind(&path)?;
            out.send(&Msg::Ready)?;
            let channel = smol::unblock(move || listener.accept()).await?.0;
            let r = serving
                .acceptor
                .hand_off(channel, Some((serving.passed, ListenerFamily::Tcp)), HandoffConfig::default())
                .await;
            let _ = std::fs::remove_file(&path);
            for f in &r.failures {
                eprintln!("acceptor {}: handoff: {f}", std::process::id());
            }
            out.send(&Msg::Handed {
                offered: r.offered,
                handed_off: r.handed_off,
                kept: r.kept,
                elapsed_us: r.elapsed.as_micros() as u64,
                freeze_us: r.longest_freeze.as_micros() as u64,
            })?;
            if r.handed_off == 0 {
                return Err("the session was not handed off".into());
            }
            // The session ended here (HandedOff): every sender's next send and every
            // receiver's next receive fail, after the receivers read what they had taken.
            let states = within(
                STEP,
                "the old application's loops end",
                join_all(tasks.into_iter().map(|(recv, send)| async move {
                    let ((checker, r), (seq, s)) = futures::future::join(recv, send).await;
                    (checker, r, seq, s)
                })),
            )
            .await?;
            for (checker, r, seq, s) in states {
                for e in [r.err(), s.err()].into_iter().flatten() {
                    if !matches!(e, ConnError::Ended(sotto_smol::SessionEnd::HandedOff)) {
                        return Err(format!("connection {}: {e}", checker.conn).into());
                    }
                }
                out.send(&Msg::State(ConnState {
                    conn: checker.conn,
                    recv_next: checker.next,
                    missing: checker.missing.into_iter().collect(),
                    send_next: seq,
                }))?;
            }
        }
        Msg::Stop => {
            stop.store(true, Ordering::SeqCst);
            let ends = within(
                STEP,
                "the acceptor's side drains",
                join_all(tasks.into_iter().map(|(recv, send)| async move {
                    let ((checker, r), (_, s)) = futures::future::join(recv, send).await;
                    (checker.conn, r, s)
                })),
            )
            .await?;
            for (conn, r, s) in ends {
                if let Some(e) = [r.err(), s.err()].into_iter().flatten().next() {
                    eprintln!("\nacceptor: connection {conn}: {e}");
                }
            }
            drop(ticker);
            report()?;
            out.send(&Msg::Drained)?;
            let end = wait_end(&serving.session).await;
            let f = frames(&serving.session);
            let (r0, d0) = serving.frames_at_start;
            out.send(&Msg::Frames { replayed: f.0.saturating_sub(r0), duplicates: f.1.saturating_sub(d0) })?;
            out.send(&Msg::End(end))?;
            return Ok(());
        }
        other => return Err(format!("unexpected command {other}").into()),
    }
    drop(ticker);
    report()?;
    let f = frames(&serving.session);
    let (r0, d0) = serving.frames_at_start;
    out.send(&Msg::Frames { replayed: f.0.saturating_sub(r0), duplicates: f.1.saturating_sub(d0) })?;
    Ok(())
}

/// The first process: listen, accept the session and its connections.
async fn start(out: &Writer, conns: u32) -> Res<(Serving, App)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    out.send(&Msg::Addr(listener.local_addr()?))?;
    let (acceptor, passed, gate) = serve(listener)?;
    drop(gate); // open at once: nothing to wait for
    let session = within(STEP, "the session", acceptor.accept()).await??;
    let mut accepted = Vec::new();
    for _ in 0..conns {
        let open = within(STEP, "a connection's Open", session.accept()).await??;
        accepted.push(open.accept(b"ready").await?);
    }
    let app = App { conns: by_index(accepted, None)? };
    Ok((Serving { acceptor, passed, session, frames_at_start: (0, 0) }, app))
}

/// A later process: take the listener and the session over from the process at `path`,
/// then the application's state from the demo.
async fn take(out: &Writer, rx: &smol::channel::Receiver<Msg>, path: &Path) -> Res<(Serving, App)> {
    let channel = UnixStream::connect(path)?;
    let c2 = channel.try_clone()?;
    let (fd, _) = smol::unblock(move || receive_listener(&c2, STEP)).await?;
    let (acceptor, passed, gate) = serve(TcpListener::from(fd))?;
    let acceptor = Arc::new(acceptor);
    let receiving = {
        let a = Arc::clone(&acceptor);
        smol::spawn(async move { a.receive_handoff(channel, HandoffConfig::default()).await })
    };
    let session = within(STEP, "the adopted session", acceptor.accept()).await??;
    // Its keys route here now: let the initiator's links in.
    drop(gate);
    let report = within(STEP, "the handoff's end", receiving).await??;
    let conns = session.adopted_connections();
    out.send(&Msg::Adopted { sessions: report.adopted, conns: conns.len() as u32 })?;
    let mut states = BTreeMap::new();
    loop {
        match within(STEP, "the application's state", next(rx)).await?? {
            Msg::State(s) => {
                states.insert(s.conn, s);
            }
            Msg::Go => break,
            other => return Err(format!("unexpected command {other}").into()),
        }
    }
    let app = App { conns: by_index(conns, Some(states))? };
    let acceptor = Arc::into_inner(acceptor).ok_or("the acceptor is still shared")?;
    let st = session.stats();
    let frames_at_start = (st.session.conduit.frames_replayed, st.session.conduit.duplicates_dropped);
    Ok((Serving { acceptor, passed, session, frames_at_start }, app))
}

/// Each connection with its demo index (from its Open's metadata, `stream-<i>`) and its
/// state (fresh, or the one relayed).
fn by_index(conns: Vec<Connection>, mut states: Option<BTreeMap<u32, ConnState>>) -> Res<Vec<(ConnState, Connection)>> {
    let mut v = Vec::new();
    for c in conns {
        let i: u32 = std::str::from_utf8(c.peer_metadata())
            .ok()
            .and_then(|m| m.strip_prefix("stream-"))
            .and_then(|n| n.parse().ok())
            .ok_or("a connection with unexpected metadata")?;
        let state = match states.as_mut() {
            None => ConnState { conn: i, recv_next: 0, missing: Vec::new(), send_next: 0 },
            Some(s) => s.remove(&i).ok_or_else(|| format!("no state for connection {i}"))?,
        };
        v.push((state, c));
    }
    if let Some(left) = states.filter(|s| !s.is_empty()) {
        return Err(format!("state for connections not adopted: {:?}", left.keys()).into());
    }
    v.sort_by_key(|(s, _)| s.conn);
    Ok(v)
}

/// Serve `listener` (keeping a duplicate of it to pass on); links are taken from it only
/// once the returned gate is dropped.
fn serve(listener: TcpListener) -> Res<(SessionAcceptor, OwnedFd, smol::channel::Sender<()>)> {
    let passed: OwnedFd = listener.try_clone()?.into();
    let listener = smol::net::TcpListener::try_from(listener)?;
    let (gate, gate_rx) = smol::channel::bounded::<()>(1);
    let incoming = futures::stream::unfold((listener, Some(gate_rx)), |(l, gate)| async move {
        if let Some(g) = gate {
            // Closed when the gate is dropped.
            let _ = g.recv().await;
        }
        let r = l.accept().await.map(|(s, _)| {
            let _ = s.set_nodelay(true);
            s
        });
        Some((r, (l, None)))
    })
    .boxed();
    let acceptor = sotto_smol::serve_sessions(incoming, crate::config()).map_err(|e| format!("config: {e}"))?;
    Ok((acceptor, passed, gate))
}

async fn wait_end(s: &SessionHandle) -> String {
    for _ in 0..500 {
        if let Some(end) = s.ended() {
            return format!("{end:?}");
        }
        smol::Timer::after(Duration::from_millis(10)).await;
    }
    "still open".to_string()
}

async fn within<T>(limit: Duration, what: &str, f: impl std::future::Future<Output = T>) -> Res<T> {
    match futures::future::select(Box::pin(f), smol::Timer::after(limit)).await {
        futures::future::Either::Left((v, _)) => Ok(v),
        futures::future::Either::Right(_) => Err(format!("timed out waiting for {what}").into()),
    }
}
