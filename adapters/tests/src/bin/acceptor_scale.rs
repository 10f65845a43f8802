//! A session acceptor at scale, each figure against raw tokio TCP (or a plain reference)
//! measured in the same run:
//!
//! - ramp: N sessions connected to one acceptor over loopback, 256 handshakes in flight;
//! - rtt: 16 B round trips on one session while the other N - 1 sit idle;
//! - cut: every client link cut at once (the client process fails every stream under its
//!   sessions), time until every session echoed 16 B again and how many were lost; raw:
//!   the time to reconnect N TCP connections (256 in flight) and echo 16 B on each;
//! - parallel: in memory (duplex streams, no sockets), two sessions of one acceptor moving
//!   16 B messages on a 2-worker runtime against a 1-worker one (raw duplex pairs likewise);
//! - contend: 4 tasks on a 4-worker runtime sending 16 B on four connections of one session,
//!   the latency of each `send`, against 4 threads pushing 16 B into a `Mutex<Vec<u8>>`.
//!
//! Server and clients of the socket parts run in separate processes (this binary
//! re-executed); both ends use `Config::default()`. Memory per session is measured by
//! `memory_scale`.
//!
//! ```text
//! cargo run --release -p sotto-adapter-tests --bin acceptor_scale -- [N]
//! ```
//!
//! Default N = 1000. docs/benchmarks.md ("Acceptor at scale") records the results. With
//! `SOTTO_SCALE_STATS=1` the sotto server prints its acceptor's counters (links taken,
//! refused and why, sessions, resumes) to stderr when it exits. `SOTTO_SCALE_BACKLOG=N` sets
//! the server's listen backlog (default 128, as `TcpListener::bind`), for raw and sotto alike.
//! `SOTTO_MEMORY_RETURN=0` turns the server's `buffers.return_freed_memory` off.
//! `SOTTO_SCALE_ONLY=ramp` measures the ramp alone (raw, then sotto) and skips the rest.
//! Next to the handshake rate the orchestrator prints the CPU time server and client used
//! per handshake during the ramp (from /proc), which a busy machine disturbs less than the
//! rate.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use sotto_adapter_tests::kill_switch::{connect_killable, cut, Slot};
use sotto_adapter_tests::scale::{load_average, quantile, raise_fd_limit, runtime, say, wait_line, Proc};
use sotto_tokio::{Config, Connection, SessionHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Handshakes in flight while ramping up (and raw reconnects after the cut).
const IN_FLIGHT: usize = 256;
/// Round trips timed (after as many again to warm up).
const ROUND_TRIPS: usize = 2000;
/// How long the cut sessions get to come back before the rest count as lost.
const RESUME_DEADLINE: Duration = Duration::from_secs(120);
/// 16 B messages per session in the in-memory parallel case.
const PARALLEL_MSGS: usize = 4_000_000;
/// 16 B sends per task in the contention case.
const CONTEND_SENDS: usize = 100_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("server") => server(&args[2]),
        Some("client") => client(&args[2], &args[3], parse(&args, 4, 1000)),
        _ => orchestrate(parse(&args, 1, 1000)),
    }
}

fn parse(args: &[String], i: usize, default: usize) -> usize {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn orchestrate(n: usize) {
    let fds = raise_fd_limit(u64::try_from(n).expect("n") * 2 + 1024);
    println!("acceptor_scale: {n} sessions; open-file limit {fds}; load average {} at start", load_average());
    if (fds as usize) < n + 256 {
        println!("the open-file limit is below N + 256: the socket parts would fail; raise `ulimit -n`");
        return;
    }
    let mut rows: Vec<[String; 2]> = Vec::new();
    let mut socket = Vec::new();
    // CPU time per handshake during the ramp, (server, client), in microseconds.
    let mut cpu: Vec<(f64, f64)> = Vec::new();
    for kind in ["raw", "sotto"] {
        let mut server = Proc::spawn(&["server", kind]);
        let ready = server.line();
        let addr = ready.split_whitespace().nth(1).expect("addr").to_string();
        let server_cpu = cpu_secs(server.child.id());
        let mut client = Proc::spawn(&["client", kind, &addr, &n.to_string()]);
        eprintln!("{kind}: connecting");
        let ramp: f64 = client.line().split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("RAMP secs");
        let per = |secs: f64| secs * 1e6 / n as f64;
        cpu.push((per(cpu_secs(server.child.id()) - server_cpu), per(cpu_secs(client.child.id()))));
        eprintln!("{kind}: ramp done");
        if ramp_only() {
            client.finish();
            server.finish();
            socket.push((n as f64 / ramp, 0.0, 0.0, 0.0, 0.0));
            continue;
        }
        let rtt = client.line();
        let mut w = rtt.split_whitespace().skip(1).map(|s| s.parse::<f64>().expect("RTT"));
        let (p50, p99) = (w.next().expect("p50"), w.next().expect("p99"));
        eprintln!("{kind}: round trips done");
        let cut = client.line();
        let mut w = cut.split_whitespace().skip(1).map(|s| s.parse::<f64>().expect("CUT"));
        let (cut_secs, lost) = (w.next().expect("secs"), w.next().expect("lost"));
        client.finish();
        server.finish();
        socket.push((n as f64 / ramp, p50, p99, cut_secs, lost));
    }
    let (raw, sotto) = (socket[0], socket[1]);
    rows.push([
        format!("handshakes/s ramping to {n}"),
        format!("{:.0} vs {:.0} raw: {:.2}x", sotto.0, raw.0, sotto.0 / raw.0),
    ]);
    let (raw_cpu, sotto_cpu) = (cpu[0], cpu[1]);
    rows.push([
        "CPU per handshake while ramping, server + client".into(),
        format!(
            "{:.0} + {:.0} us vs {:.0} + {:.0} us raw: {:.2}x",
            sotto_cpu.0,
            sotto_cpu.1,
            raw_cpu.0,
            raw_cpu.1,
            (sotto_cpu.0 + sotto_cpu.1) / (raw_cpu.0 + raw_cpu.1).max(f64::MIN_POSITIVE)
        ),
    ]);
    if ramp_only() {
        print_rows(rows);
        return;
    }
    rows.push([
        format!("16 B round trip p50 / p99, {} idle", n - 1),
        format!(
            "{:.1} / {:.1} us vs {:.1} / {:.1} us raw: {:.2}x / {:.2}x",
            sotto.1 / 1e3,
            sotto.2 / 1e3,
            raw.1 / 1e3,
            raw.2 / 1e3,
            sotto.1 / raw.1,
            sotto.2 / raw.2
        ),
    ]);
    rows.push([
        format!("all {n} links cut: all resumed (raw: reconnected)"),
        format!(
            "{:.0} ms vs {:.0} ms raw: {:.2}x; lost {} (raw {})",
            sotto.3 * 1e3,
            raw.3 * 1e3,
            sotto.3 / raw.3,
            sotto.4,
            raw.4
        ),
    ]);
    eprintln!("in memory");
    let one = parallel(1, true);
    let two = parallel(2, true);
    let raw_one = parallel(1, false);
    let raw_two = parallel(2, false);
    rows.push([
        "2 sessions of one acceptor in memory, 2 workers vs 1".into(),
        format!(
            "{:.2} vs {:.2} M msgs/s: {:.2}x (raw duplex {:.2}x: {:.2} vs {:.2})",
            two / 1e6,
            one / 1e6,
            two / one,
            raw_two / raw_one,
            raw_two / 1e6,
            raw_one / 1e6
        ),
    ]);
    let (s50, s99, s999) = contend_sotto();
    let (m50, m99, m999) = contend_mutex();
    rows.push([
        "16 B send p50 / p99 / p99.9, 4 tasks on one session".into(),
        format!(
            "{s50} / {s99} / {s999} ns vs Mutex<Vec> {m50} / {m99} / {m999} ns: {:.1}x / {:.1}x / {:.1}x",
            s50 as f64 / m50.max(1) as f64,
            s99 as f64 / m99.max(1) as f64,
            s999 as f64 / m999.max(1) as f64
        ),
    ]);
    print_rows(rows);
}

/// CPU time (user + system, every thread) process `pid` has used, in seconds (Linux, from
/// /proc/PID/stat, in 10 ms ticks: at N = 1,000 a per-handshake figure is good to about 10 us).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which is in parentheses and may hold spaces):
    // state is the first, utime and stime the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after.split_whitespace().skip(11).take(2).filter_map(|t| t.parse::<u64>().ok()).sum();
    ticks as f64 / 100.0
}

/// Whether `SOTTO_SCALE_ONLY=ramp` asks for the ramp alone (read by every process).
fn ramp_only() -> bool {
    std::env::var("SOTTO_SCALE_ONLY").is_ok_and(|v| v == "ramp")
}

fn print_rows(rows: Vec<[String; 2]>) {
    println!("| measure | sotto vs raw, same run |");
    println!("|---|---|");
    for [m, v] in rows {
        println!("| {m} | {v} |");
    }
    println!("load average {} at the end", load_average());
}

// ---- socket parts: server and client processes ----

/// The server's listener on 127.0.0.1: listen backlog 128 as `TcpListener::bind` gives, or
/// `SOTTO_SCALE_BACKLOG` (for raw and sotto alike; the kernel caps it at
/// `net.core.somaxconn`). With 128, connects beyond what the accept queue holds are dropped
/// and retried by the client's kernel a second later.
fn listener() -> tokio::net::TcpListener {
    let backlog = std::env::var("SOTTO_SCALE_BACKLOG").ok().and_then(|v| v.parse().ok()).unwrap_or(128);
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("reuseaddr");
    socket.bind(([127, 0, 0, 1], 0).into()).expect("bind");
    socket.listen(backlog).expect("listen")
}

fn server(kind: &str) {
    let _ = raise_fd_limit(1 << 20);
    runtime(2).block_on(async {
        let l = listener();
        let addr = l.local_addr().expect("addr");
        if kind == "raw" {
            tokio::spawn(async move {
                loop {
                    let Ok((s, _)) = l.accept().await else { return };
                    let _ = s.set_nodelay(true);
                    tokio::spawn(async move {
                        let (mut r, mut w) = s.into_split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    });
                }
            });
        } else {
            let mut config = Config::default();
            config.buffers.return_freed_memory = std::env::var("SOTTO_MEMORY_RETURN").map_or(true, |v| v != "0");
            let acc = Arc::new(sotto_tokio::serve_sessions_tcp(l, config).expect("config"));
            let a = Arc::clone(&acc);
            tokio::spawn(async move {
                loop {
                    let Ok(s) = a.accept().await else { return };
                    tokio::spawn(echo_session(s));
                }
            });
            say(&format!("READY {addr}"));
            let _ = wait_line().await;
            if std::env::var_os("SOTTO_SCALE_STATS").is_some() {
                eprintln!("acceptor stats: {:?}", acc.stats());
            }
            return;
        }
        say(&format!("READY {addr}"));
        let _ = wait_line().await;
    });
}

/// Echo every connection the peer opens on `s`, until the session ends.
async fn echo_session(s: SessionHandle) {
    while let Ok(inc) = s.accept().await {
        tokio::spawn(async move {
            let Ok(conn) = inc.accept(b"").await else { return };
            let (mut tx, mut rx) = conn.split();
            while let Ok(m) = rx.recv().await {
                if tx.send(m).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn client(kind: &str, addr: &str, n: usize) {
    let _ = raise_fd_limit(1 << 20);
    let addr: SocketAddr = addr.parse().expect("addr");
    runtime(2).block_on(async move {
        if kind == "raw" {
            raw_client(addr, n).await;
        } else {
            sotto_client(addr, n).await;
        }
        if !ramp_only() {
            let _ = wait_line().await;
        }
    });
}

async fn raw_connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

async fn raw_client(addr: SocketAddr, n: usize) {
    let t = Instant::now();
    let mut conns: Vec<TcpStream> = stream::iter(0..n)
        .map(|_| raw_connect(addr))
        .buffer_unordered(IN_FLIGHT)
        .map(|r| r.expect("connect"))
        .collect()
        .await;
    say(&format!("RAMP {}", t.elapsed().as_secs_f64()));
    if ramp_only() {
        // Hold the links until told to exit, so that no teardown overlaps the measure.
        let _ = wait_line().await;
        return;
    }
    let c = &mut conns[0];
    let mut buf = [0u8; 16];
    let mut times = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..2 * ROUND_TRIPS {
        let t = Instant::now();
        c.write_all(&[0x5a; 16]).await.expect("write");
        c.read_exact(&mut buf).await.expect("read");
        if i >= ROUND_TRIPS {
            times.push(t.elapsed().as_nanos() as f64);
        }
    }
    say(&format!("RTT {}", percentiles(&mut times)));
    let t = Instant::now();
    drop(conns);
    let lost = stream::iter(0..n)
        .map(|_| async move {
            let mut s = raw_connect(addr).await?;
            s.write_all(&[0x5a; 16]).await?;
            let mut buf = [0u8; 16];
            s.read_exact(&mut buf).await?;
            Ok::<_, io::Error>(s)
        })
        .buffer_unordered(IN_FLIGHT)
        .filter(|r| std::future::ready(r.is_err()))
        .count()
        .await;
    say(&format!("CUT {} {lost}", t.elapsed().as_secs_f64()));
}

/// p50 and p99 of `times`, space-separated.
fn percentiles(times: &mut [f64]) -> String {
    times.sort_by(f64::total_cmp);
    format!("{} {}", quantile(times, 0.5), quantile(times, 0.99))
}

async fn sotto_session(addr: SocketAddr) -> (SessionHandle, Slot) {
    connect_killable(addr, Config::default()).await.expect("connect_session")
}

async fn sotto_client(addr: SocketAddr, n: usize) {
    let t = Instant::now();
    let sessions: Vec<(SessionHandle, Slot)> =
        stream::iter(0..n).map(|_| sotto_session(addr)).buffer_unordered(IN_FLIGHT).collect().await;
    say(&format!("RAMP {}", t.elapsed().as_secs_f64()));
    if ramp_only() {
        // Hold the links until told to exit, so that no teardown overlaps the measure.
        let _ = wait_line().await;
        return;
    }
    let mut conns: Vec<Connection> = stream::iter(&sessions)
        .map(|(s, _)| async move { s.open(b"").await.expect("open") })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let c = &mut conns[0];
    let mut times = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..2 * ROUND_TRIPS {
        let t = Instant::now();
        c.send([0x5a; 16]).await.expect("send");
        let _ = c.recv().await.expect("echo");
        if i >= ROUND_TRIPS {
            times.push(t.elapsed().as_nanos() as f64);
        }
    }
    say(&format!("RTT {}", percentiles(&mut times)));
    let t = Instant::now();
    for (_, slot) in &sessions {
        cut(slot);
    }
    let resumed = AtomicUsize::new(0);
    let echoes = conns.iter_mut().map(|c| async {
        let echo = async {
            c.send([0x5a; 16]).await?;
            c.recv().await
        };
        if matches!(tokio::time::timeout(RESUME_DEADLINE, echo).await, Ok(Ok(_))) {
            resumed.fetch_add(1, Ordering::Relaxed);
        }
    });
    futures::future::join_all(echoes).await;
    let lost = n - resumed.load(Ordering::Relaxed);
    say(&format!("CUT {} {lost}", t.elapsed().as_secs_f64()));
    drop(conns);
    drop(sessions);
}

// ---- in-memory parts ----

/// An acceptor over in-memory duplex streams, and a connector feeding it.
fn memory_acceptor(
) -> (sotto_tokio::SessionAcceptor, futures::channel::mpsc::UnboundedSender<io::Result<tokio::io::DuplexStream>>) {
    let (tx, rx) = futures::channel::mpsc::unbounded();
    (sotto_tokio::serve_sessions(rx, Config::default()).expect("config"), tx)
}

async fn memory_session(
    links: &futures::channel::mpsc::UnboundedSender<io::Result<tokio::io::DuplexStream>>,
) -> SessionHandle {
    let links = links.clone();
    sotto_tokio::connect_session(
        move || {
            let links = links.clone();
            async move {
                let (a, b) = tokio::io::duplex(256 << 10);
                links.unbounded_send(Ok(b)).map_err(|_| io::Error::other("acceptor gone"))?;
                Ok(a)
            }
        },
        Config::default(),
    )
    .await
    .expect("connect_session")
}

/// A connection opened by `client` and accepted by `server`: (opener's end, acceptor's end).
async fn pair(client: &SessionHandle, server: &SessionHandle) -> (Connection, Connection) {
    let answer = async { server.accept().await.expect("incoming").accept(b"").await.expect("answer") };
    let (opened, accepted) = tokio::join!(client.open(b""), answer);
    (opened.expect("open"), accepted)
}

/// Messages per second moved by two sender/receiver pairs on a runtime with `workers`
/// workers: two sessions of one acceptor (`sotto`), or two raw duplex pairs.
fn parallel(workers: usize, sotto: bool) -> f64 {
    runtime(workers).block_on(async {
        if sotto {
            let mut runs = Vec::new();
            let (acc, links) = memory_acceptor();
            let mut clients = Vec::new();
            for _ in 0..2 {
                let client = memory_session(&links).await;
                let server = acc.accept().await.expect("accept");
                let (mut tx, mut rx) = pair(&client, &server).await;
                clients.push((client, server));
                runs.push(tokio::spawn(async move {
                    let recv = tokio::spawn(async move {
                        for _ in 0..PARALLEL_MSGS {
                            let _ = rx.recv().await.expect("recv");
                        }
                        rx
                    });
                    let t = Instant::now();
                    for _ in 0..PARALLEL_MSGS {
                        tx.send([0x5a; 16]).await.expect("send");
                    }
                    let _rx = recv.await.expect("receiver");
                    (t, Instant::now(), tx)
                }));
            }
            let ends = futures::future::join_all(runs).await;
            drop(clients);
            span(ends.into_iter().map(|r| r.expect("run")).map(|(a, b, _)| (a, b)))
        } else {
            let mut runs = Vec::new();
            for _ in 0..2 {
                let (mut a, mut b) = tokio::io::duplex(256 << 10);
                runs.push(tokio::spawn(async move {
                    let recv = tokio::spawn(async move {
                        let mut buf = [0u8; 16];
                        for _ in 0..PARALLEL_MSGS {
                            b.read_exact(&mut buf).await.expect("read");
                        }
                    });
                    let t = Instant::now();
                    for _ in 0..PARALLEL_MSGS {
                        a.write_all(&[0x5a; 16]).await.expect("write");
                    }
                    recv.await.expect("receiver");
                    (t, Instant::now())
                }));
            }
            let ends = futures::future::join_all(runs).await;
            span(ends.into_iter().map(|r| r.expect("run")))
        }
    })
}

/// Total messages per second over runs spanning `(start, end)` each.
fn span(runs: impl Iterator<Item = (Instant, Instant)>) -> f64 {
    let runs: Vec<_> = runs.collect();
    let start = runs.iter().map(|r| r.0).min().expect("runs");
    let end = runs.iter().map(|r| r.1).max().expect("runs");
    (runs.len() * PARALLEL_MSGS) as f64 / (end - start).as_secs_f64()
}

/// p50, p99 and p99.9 of `times` in nanoseconds.
fn tail(mut times: Vec<u64>) -> (u64, u64, u64) {
    times.sort_unstable();
    (quantile(&times, 0.5), quantile(&times, 0.99), quantile(&times, 0.999))
}

/// `send` latency of 4 tasks sending 16 B each on their own connection of one session.
fn contend_sotto() -> (u64, u64, u64) {
    runtime(4).block_on(async {
        let (acc, links) = memory_acceptor();
        let client = memory_session(&links).await;
        let server = acc.accept().await.expect("accept");
        let mut tasks = Vec::new();
        let mut drains = Vec::new();
        for _ in 0..4 {
            let (mut tx, mut rx) = pair(&client, &server).await;
            drains.push(tokio::spawn(async move {
                for _ in 0..CONTEND_SENDS {
                    let _ = rx.recv().await.expect("recv");
                }
            }));
            tasks.push(async move {
                let mut times = Vec::with_capacity(CONTEND_SENDS);
                for _ in 0..CONTEND_SENDS {
                    let t = Instant::now();
                    tx.send([0x5a; 16]).await.expect("send");
                    times.push(t.elapsed().as_nanos() as u64);
                }
                (times, tx)
            });
        }
        let spawned: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
        let mut times = Vec::new();
        let mut senders = Vec::new();
        for t in spawned {
            let (t, tx) = t.await.expect("task");
            times.extend(t);
            senders.push(tx);
        }
        for d in drains {
            d.await.expect("drain");
        }
        drop(senders);
        drop((client, server));
        tail(times)
    })
}

/// The reference: 4 threads pushing 16 B into one `Mutex<Vec<u8>>` (cleared at 64 KiB).
fn contend_mutex() -> (u64, u64, u64) {
    let buf = Arc::new(Mutex::new(Vec::<u8>::with_capacity(64 << 10)));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let buf = Arc::clone(&buf);
            std::thread::spawn(move || {
                let mut times = Vec::with_capacity(CONTEND_SENDS);
                for _ in 0..CONTEND_SENDS {
                    let t = Instant::now();
                    {
                        let mut b = buf.lock().expect("lock");
                        if b.len() + 16 > b.capacity() {
                            b.clear();
                        }
                        b.extend_from_slice(&[0x5a; 16]);
                    }
                    times.push(t.elapsed().as_nanos() as u64);
                }
                times
            })
        })
        .collect();
    tail(threads.into_iter().flat_map(|t| t.join().expect("thread")).collect())
}
