//! Acceptor memory at scale: resident memory per session of a sotto session acceptor with N
//! clients over loopback TCP, idle and after each session echoed `MiB` MiB then went idle,
//! with raw tokio TCP echo (the same clients and traffic) measured in the same run as the
//! baseline. Server and clients run in separate processes (this binary re-executed), so the
//! server's RSS (from /proc/self/statm) counts only the acceptor.
//!
//! ```text
//! cargo run --release -p sotto-adapter-tests --bin memory_scale -- [N] [MiB] [WAVE]
//! ```
//!
//! Defaults: N = 1000 sessions, 4 MiB echoed per session (in 16 KiB messages, WAVE = 100
//! sessions at a time). `SOTTO_MEMORY_RETURN=0` runs the acceptor with
//! `buffers.return_freed_memory` off. Prints one table row per transport; docs/benchmarks.md records the results.
//! Besides RSS, the server counts the bytes its allocations hold (a counting global
//! allocator): RSS above that is memory the allocator (glibc malloc) keeps after `free`.

use std::time::Duration;

use bytes::Bytes;
use sotto_adapter_tests::live_bytes::{live, LiveBytes};
use sotto_adapter_tests::scale::{rss, say, wait_line, Proc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[global_allocator]
static GLOBAL: LiveBytes = LiveBytes;

const MESSAGE: usize = 16 << 10;
/// How long the server waits for idle buffers to settle before measuring (sotto shrinks
/// after a second without items).
const SETTLE: Duration = Duration::from_millis(2500);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("server") => server(&args[2], parse(&args, 3, 1000)),
        Some("client") => client(&args[2], &args[3], parse(&args, 4, 1000), parse(&args, 5, 4), parse(&args, 6, 100)),
        _ => orchestrate(parse(&args, 1, 1000), parse(&args, 2, 4), parse(&args, 3, 100)),
    }
}

fn parse(args: &[String], i: usize, default: usize) -> usize {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// The server's resident set and its allocations' bytes at one moment.
struct Sample {
    rss: usize,
    live: usize,
}

impl Sample {
    fn parse<'a>(mut words: impl Iterator<Item = &'a str>) -> Self {
        let mut next = || words.next().and_then(|s| s.parse().ok()).expect("a number from the server");
        Self { rss: next(), live: next() }
    }
}

fn orchestrate(n: usize, mib: usize, wave: usize) {
    println!("{n} sessions over loopback TCP, {mib} MiB echoed per session, {wave} at a time; server RSS per session");
    println!("| transport | RSS at start | per idle session | per session after {mib} MiB, then idle |");
    println!("|---|---|---|---|");
    for kind in ["raw", "sotto"] {
        let mut server = Proc::spawn(&["server", kind, &n.to_string()]);
        let ready = server.line();
        let mut it = ready.split_whitespace().skip(1);
        let addr = it.next().expect("addr").to_string();
        let base = Sample::parse(it);
        let mut client = Proc::spawn(&["client", kind, &addr, &n.to_string(), &mib.to_string(), &wave.to_string()]);
        assert_eq!(client.line(), "CONNECTED");
        server.tell("IDLE");
        let idle = Sample::parse(server.line().split_whitespace().skip(1));
        client.tell("GO");
        assert_eq!(client.line(), "DONE");
        server.tell("AFTER");
        let after = Sample::parse(server.line().split_whitespace().skip(1));
        client.finish();
        server.finish();
        let per = |now: usize, then: usize| now.saturating_sub(then) as f64 / n as f64 / 1024.0;
        println!(
            "| {kind} | {:.1} MiB | {:.1} KiB ({:.1} KiB allocated) | {:.1} KiB ({:.1} KiB allocated) |",
            base.rss as f64 / (1 << 20) as f64,
            per(idle.rss, base.rss),
            per(idle.live, base.live),
            per(after.rss, base.rss),
            per(after.live, base.live),
        );
    }
}

fn server(kind: &str, n: usize) {
    sotto_adapter_tests::scale::runtime(2).block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = std::sync::Arc::clone(&accepted);
        if kind == "raw" {
            say(&format!("READY {addr} {} {}", rss(), live()));
            tokio::spawn(async move {
                loop {
                    let Ok((s, _)) = l.accept().await else { return };
                    let _ = s.set_nodelay(true);
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::spawn(async move {
                        let (mut r, mut w) = s.into_split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    });
                }
            });
        } else {
            // max_sessions stays at its default (100,000): nothing is allocated for it up front.
            let mut config = sotto_tokio::Config::default();
            config.acceptor.max_pending_handshakes = 4096;
            config.acceptor.accept_backlog = 4096;
            config.acceptor.failure_budget = u32::MAX;
            // SOTTO_MEMORY_RETURN=0: without giving freed buffers back (glibc's malloc_trim).
            config.buffers.return_freed_memory = std::env::var("SOTTO_MEMORY_RETURN").map_or(true, |v| v != "0");
            let acc = sotto_tokio::serve_sessions_tcp(l, config).expect("config");
            say(&format!("READY {addr} {} {}", rss(), live()));
            tokio::spawn(async move {
                loop {
                    let Ok(s) = acc.accept().await else { return };
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::spawn(async move {
                        let Ok(inc) = s.accept().await else { return };
                        let Ok(conn) = inc.accept(b"").await else { return };
                        let (mut tx, mut rx) = conn.split();
                        while let Ok(m) = rx.recv().await {
                            if tx.send(m).await.is_err() {
                                return;
                            }
                        }
                        drop(s);
                    });
                }
            });
        }
        while accepted.load(std::sync::atomic::Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(wait_line().await, "IDLE");
        tokio::time::sleep(SETTLE).await;
        say(&format!("IDLE {} {}", rss(), live()));
        assert_eq!(wait_line().await, "AFTER");
        tokio::time::sleep(SETTLE).await;
        say(&format!("AFTER {} {}", rss(), live()));
        let _ = wait_line().await;
    });
}

fn client(kind: &str, addr: &str, n: usize, mib: usize, wave: usize) {
    let addr: std::net::SocketAddr = addr.parse().expect("addr");
    let bytes = mib << 20;
    sotto_adapter_tests::scale::runtime(2).block_on(async move {
        if kind == "raw" {
            let mut conns = Vec::new();
            for _ in 0..n {
                let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
                s.set_nodelay(true).expect("nodelay");
                conns.push(s);
            }
            say("CONNECTED");
            assert_eq!(wait_line().await, "GO");
            for wave in conns.chunks_mut(wave.max(1)) {
                let runs = wave.iter_mut().map(|s| async move {
                    let (mut r, mut w) = s.split();
                    let send = async {
                        let m = vec![0x5a; MESSAGE];
                        for _ in 0..bytes / MESSAGE {
                            w.write_all(&m).await.expect("write");
                        }
                    };
                    let recv = async {
                        let mut buf = vec![0; MESSAGE];
                        let mut got = 0;
                        while got < bytes {
                            let k = r.read(&mut buf).await.expect("read");
                            assert!(k > 0, "echo closed");
                            got += k;
                        }
                    };
                    futures::future::join(send, recv).await;
                });
                futures::future::join_all(runs).await;
            }
            say("DONE");
            let _ = wait_line().await;
            drop(conns);
        } else {
            let mut sessions = Vec::new();
            for chunk in 0..n.div_ceil(50) {
                let k = 50.min(n - chunk * 50);
                let dials = (0..k).map(|_| async move {
                    let s = sotto_tokio::connect_session(
                        move || async move {
                            let s = tokio::net::TcpStream::connect(addr).await?;
                            s.set_nodelay(true)?;
                            Ok(s)
                        },
                        sotto_tokio::Config::default(),
                    )
                    .await
                    .expect("connect");
                    let c = s.open(b"").await.expect("open");
                    (s, Some(c))
                });
                sessions.extend(futures::future::join_all(dials).await);
            }
            say("CONNECTED");
            assert_eq!(wait_line().await, "GO");
            for wave in sessions.chunks_mut(wave.max(1)) {
                let runs = wave.iter_mut().map(|(_, c)| async move {
                    let conn = c.take().expect("connection");
                    let (mut tx, mut rx) = conn.split();
                    let m = Bytes::from(vec![0x5a; MESSAGE]);
                    let send = async {
                        for _ in 0..bytes / MESSAGE {
                            tx.send(&m).await.expect("send");
                        }
                    };
                    let recv = async {
                        let mut got = 0;
                        while got < bytes {
                            got += rx.recv().await.expect("echo").len();
                        }
                    };
                    futures::future::join(send, recv).await;
                    *c = Some(sotto_tokio::Connection::reunite(tx, rx).expect("halves"));
                });
                futures::future::join_all(runs).await;
            }
            say("DONE");
            let _ = wait_line().await;
            drop(sessions);
        }
    });
}
