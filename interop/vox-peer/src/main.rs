//! A standalone vox-core 0.3.0 `StableConduit` peer over TCP, used by sotto's interop tests.
//!
//! Usage:
//!   vox-peer --role acceptor  --listen  127.0.0.1:PORT [--send N] [--expect N] [--timeout-secs T] [--linger-ms MS]
//!   vox-peer --role initiator --connect 127.0.0.1:PORT [--send N] [--expect N] [--timeout-secs T] [--linger-ms MS]
//!   ... [--echo]
//!
//! Sends N `String` messages "msg-<i>" (i from 0) (with `--echo`: sends back the first N
//! messages it receives, in order, as it receives them) and receives up to `--expect` messages,
//! printing `recv <string>` per message on stdout and finally
//! `summary sent=<n> received=<n> in_order=<bool>`. Exit 0 when `received == expect` and all
//! messages arrived as msg-0, msg-1, ... without gaps/dups within the timeout, 2 otherwise.
//! Diagnostics (reconnects, errors) go to stderr prefixed with `vox-peer:`.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::BufReader;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use vox_core::{prepare_acceptor_attachment, Attachment, LinkSource, SplitLink, StableConduit, StableConduitError};
use vox_stream::{StreamLink, StreamLinkRx, StreamLinkTx};
use vox_types::{Conduit, ConduitRx, ConduitTx, ConduitTxPermit, MsgFamily};

/// Message family whose item type is a plain `String` (postcard: varint(len) + UTF-8).
struct StringFamily;

impl MsgFamily for StringFamily {
    type Msg<'a> = String;
}

/// Counts links handed out (first link included), for diagnostics.
static LINKS: AtomicU64 = AtomicU64::new(0);

// ---------------------------------------------------------------------------
// Link sources
// ---------------------------------------------------------------------------

/// Acceptor: every `next_link` accepts the next TCP connection on the same listener and
/// consumes its ClientHello. Connections that fail before a ClientHello are skipped.
struct AcceptorSource {
    listener: Arc<TcpListener>,
    deadline: Instant,
}

type AcceptorLink = SplitLink<StreamLinkTx, StreamLinkRx<BufReader<OwnedReadHalf>>>;

impl LinkSource for AcceptorSource {
    type Link = AcceptorLink;

    async fn next_link(&mut self) -> std::io::Result<Attachment<AcceptorLink>> {
        loop {
            let accepted = tokio::time::timeout_at(self.deadline, self.listener.accept()).await;
            let (stream, peer) = match accepted {
                Err(_) => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "deadline")),
                Ok(Err(e)) => {
                    eprintln!("vox-peer: accept error: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Ok(Ok(x)) => x,
            };
            let _ = stream.set_nodelay(true);
            let hello =
                tokio::time::timeout(Duration::from_secs(5), prepare_acceptor_attachment(StreamLink::tcp(stream)))
                    .await;
            match hello {
                Ok(Ok(att)) => {
                    let n = LINKS.fetch_add(1, Ordering::Relaxed);
                    eprintln!("vox-peer: link #{n} accepted from {peer}");
                    return Ok(att);
                }
                Ok(Err(e)) => eprintln!("vox-peer: no ClientHello from {peer}: {e}"),
                Err(_) => eprintln!("vox-peer: ClientHello timeout from {peer}"),
            }
        }
    }
}

/// Initiator: every `next_link` (re)connects, retrying with a short sleep until the deadline.
struct InitiatorSource {
    addr: SocketAddr,
    deadline: Instant,
}

type InitiatorLink = StreamLink<OwnedReadHalf, OwnedWriteHalf>;

impl LinkSource for InitiatorSource {
    type Link = InitiatorLink;

    async fn next_link(&mut self) -> std::io::Result<Attachment<InitiatorLink>> {
        loop {
            if Instant::now() >= self.deadline {
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "deadline"));
            }
            match tokio::time::timeout_at(self.deadline, TcpStream::connect(self.addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    let n = LINKS.fetch_add(1, Ordering::Relaxed);
                    eprintln!("vox-peer: link #{n} connected to {}", self.addr);
                    return Ok(Attachment::initiator(StreamLink::tcp(stream)));
                }
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(_) => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Args
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Args {
    role: String,
    listen: Option<String>,
    connect: Option<String>,
    send: u64,
    expect: u64,
    timeout_secs: u64,
    linger_ms: u64,
    echo: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args { timeout_secs: 30, linger_ms: 1000, ..Default::default() };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("missing value for {flag}"));
        let num = |s: String| s.parse::<u64>().map_err(|e| format!("bad number {s:?}: {e}"));
        match flag.as_str() {
            "--role" => a.role = val()?,
            "--listen" => a.listen = Some(val()?),
            "--connect" => a.connect = Some(val()?),
            "--send" => a.send = num(val()?)?,
            "--expect" => a.expect = num(val()?)?,
            "--timeout-secs" => a.timeout_secs = num(val()?)?,
            "--linger-ms" => a.linger_ms = num(val()?)?,
            "--echo" => a.echo = true,
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    match a.role.as_str() {
        "acceptor" if a.listen.is_some() => {}
        "initiator" if a.connect.is_some() => {}
        _ => return Err("need --role acceptor --listen ADDR or --role initiator --connect ADDR".into()),
    }
    Ok(a)
}

// ---------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------

struct Outcome {
    sent: u64,
    received: u64,
    in_order: bool,
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vox-peer: {e}");
            return ExitCode::from(64);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    let out = rt.block_on(run(&args));
    // Do not wait for stuck tasks (a reconnect loop, a blocked accept) at shutdown.
    rt.shutdown_timeout(Duration::from_millis(100));
    let ok = out.received == args.expect && out.in_order;
    println!("summary sent={} received={} in_order={}", out.sent, out.received, out.in_order);
    let _ = std::io::stdout().flush();
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

async fn run(args: &Args) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let fail = Outcome { sent: 0, received: 0, in_order: false };
    if args.role == "acceptor" {
        let listener = match TcpListener::bind(args.listen.as_deref().unwrap()).await {
            Ok(l) => Arc::new(l),
            Err(e) => {
                eprintln!("vox-peer: bind: {e}");
                return fail;
            }
        };
        eprintln!("vox-peer: listening on {}", listener.local_addr().unwrap());
        let make = || AcceptorSource { listener: Arc::clone(&listener), deadline };
        match setup(make, deadline).await {
            Some(c) => drive(c, args, deadline).await,
            None => fail,
        }
    } else {
        let addr: SocketAddr = match args.connect.as_deref().unwrap().parse() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("vox-peer: bad --connect: {e}");
                return fail;
            }
        };
        match setup(|| InitiatorSource { addr, deadline }, deadline).await {
            Some(c) => drive(c, args, deadline).await,
            None => fail,
        }
    }
}

/// `StableConduit::new` with retries: a first link that dies during the hello exchange
/// (`LinkDead`/`Io`) is retried with a fresh source until the deadline; a `Setup` error (e.g.
/// wrong hello magic/size) or `SessionLost` is final.
async fn setup<LS: LinkSource>(make: impl Fn() -> LS, deadline: Instant) -> Option<StableConduit<StringFamily, LS>> {
    loop {
        match tokio::time::timeout_at(deadline, StableConduit::<StringFamily, _>::new(make())).await {
            Ok(Ok(c)) => return Some(c),
            Ok(Err(e @ (StableConduitError::LinkDead | StableConduitError::Io(_)))) if Instant::now() < deadline => {
                eprintln!("vox-peer: setup failed, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(Err(e)) => {
                eprintln!("vox-peer: setup: {e}");
                return None;
            }
            Err(_) => {
                eprintln!("vox-peer: setup timed out");
                return None;
            }
        }
    }
}

fn is_fatal(e: &StableConduitError) -> bool {
    matches!(e, StableConduitError::SessionLost | StableConduitError::Decode(_) | StableConduitError::Encode(_))
}

async fn drive<LS>(conduit: StableConduit<StringFamily, LS>, args: &Args, deadline: Instant) -> Outcome
where
    LS: LinkSource,
    <LS::Link as vox_types::Link>::Tx: Send + 'static,
    <LS::Link as vox_types::Link>::Rx: Send + 'static,
{
    let (tx, mut rx) = conduit.split();
    let tx = Arc::new(tx);
    let n_send = args.send;

    // With `--echo`, the sender sends what the main loop received, in order.
    let (echo_tx, mut echo_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let echo = args.echo;

    // Sender task: "msg-0" .. "msg-(N-1)", or the echoes. Errors from reserve/send are retried
    // (the message is not consumed when `send` returns LinkDead: that check precedes seq
    // assignment), except a lost session.
    let sent_ctr = Arc::new(AtomicU64::new(0));
    let sender = {
        let tx = Arc::clone(&tx);
        let sent_ctr = Arc::clone(&sent_ctr);
        tokio::spawn(async move {
            let mut sent = 0u64;
            'outer: while sent < n_send {
                let msg = if echo {
                    match echo_rx.recv().await {
                        Some(m) => m,
                        None => break,
                    }
                } else {
                    format!("msg-{sent}")
                };
                loop {
                    match tx.reserve().await {
                        Ok(permit) => match permit.send(msg.clone()) {
                            Ok(()) => break,
                            Err(e) if is_fatal(&e) => {
                                eprintln!("vox-peer: send failed: {e}");
                                break 'outer;
                            }
                            Err(e) => eprintln!("vox-peer: send retry ({e})"),
                        },
                        Err(e) => {
                            let s = e.to_string();
                            eprintln!("vox-peer: reserve error: {s}");
                            if s.contains("session lost") || s.contains("deadline") {
                                break 'outer;
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                sent += 1;
                sent_ctr.store(sent, Ordering::Relaxed);
            }
        })
    };

    // Receiver task. GOTCHA: vox's `StableConduitRx::recv` is not cancel-safe: it takes the
    // link Rx out of shared state across the await, so dropping the future (e.g. a
    // `timeout(recv())`) drops the link and forces a reconnect. So recv runs uninterrupted in
    // its own task and results come through a channel.
    let (msg_tx, mut msg_rx) = tokio::sync::mpsc::unbounded_channel::<Result<String, String>>();
    let receiver = tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(Some(msg)) => {
                    let s: &String = &msg;
                    if msg_tx.send(Ok(s.clone())).is_err() {
                        return;
                    }
                }
                Ok(None) => {
                    let _ = msg_tx.send(Err("conduit closed".into()));
                    return;
                }
                Err(e) => {
                    let fatal = is_fatal(&e) || Instant::now() >= deadline;
                    let _ = msg_tx.send(Err(format!("recv error: {e}")));
                    if fatal {
                        return;
                    }
                    // Reconnect failed (e.g. the handshake on a new link died); vox puts its
                    // LinkSource back, so calling recv again retries the reconnect.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    });

    let mut received = 0u64;
    let mut in_order = true;
    let mut stdout = std::io::stdout();
    let mut linger_until: Option<Instant> = None;
    let mut receiver_alive = true;
    loop {
        if linger_until.is_none() && received >= args.expect && sender.is_finished() {
            linger_until = Some((Instant::now() + Duration::from_millis(args.linger_ms)).min(deadline));
        }
        let stop_at = linger_until.unwrap_or(deadline);
        if Instant::now() >= stop_at {
            break;
        }
        // Wake periodically to notice the sender finishing.
        let wake = stop_at.min(Instant::now() + Duration::from_millis(50));
        if !receiver_alive {
            break; // session lost / conduit finished: nothing more can arrive
        }
        match tokio::time::timeout_at(wake, msg_rx.recv()).await {
            Err(_) => {}
            Ok(Some(Ok(s))) => {
                if s != format!("msg-{received}") {
                    if in_order {
                        eprintln!("vox-peer: out of order: got {s:?}, expected \"msg-{received}\"");
                    }
                    in_order = false;
                }
                received += 1;
                let _ = writeln!(stdout, "recv {s}");
                if echo {
                    let _ = echo_tx.send(s);
                }
            }
            Ok(Some(Err(e))) => eprintln!("vox-peer: {e}"),
            Ok(None) => receiver_alive = false,
        }
    }
    let _ = stdout.flush();

    if !sender.is_finished() {
        sender.abort();
        eprintln!("vox-peer: sender did not finish");
    }
    let _ = sender.await;
    receiver.abort();
    let _ = receiver.await;
    let sent = sent_ctr.load(Ordering::Relaxed);
    // Flush the current link's writer before exiting.
    if let Ok(tx) = Arc::try_unwrap(tx) {
        let _ = tokio::time::timeout(Duration::from_millis(500), tx.close()).await;
    }
    eprintln!("vox-peer: links used: {}", LINKS.load(Ordering::Relaxed));
    Outcome { sent, received, in_order }
}
