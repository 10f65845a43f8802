//! Handoff at scale (issue 17): an "old" session acceptor hands N live sessions, each with
//! 64 KiB sent to its client and not yet acknowledged, and its listening socket to a "new"
//! acceptor over a Unix socket (both in this process, tokio, loopback TCP). Measures the
//! handoff's total time and time per session, the longest any one session stayed frozen, and
//! the longest pause between two messages seen by the clients that receive a tick every
//! 5 ms through the handoff (their one link change included). Repeats the whole run and
//! prints each run and the median.
//!
//! ```text
//! cargo run --release -p sotto-adapter-tests --bin handoff_bench -- [N] [RUNS] [PROBES]
//! ```
//!
//! Defaults: N = 1000 sessions, RUNS = 3, PROBES = 50 sessions ticking. Clients acknowledge
//! lazily (`ack_delay` 10 s, `ack_every` 2^20), so the 64 KiB each stays unacknowledged in
//! the old acceptor's replay rings and moves with the sessions. docs/benchmarks.md records
//! the results.
#![cfg_attr(not(unix), allow(unused))]

#[cfg(unix)]
fn main() {
    unix::main();
}

#[cfg(not(unix))]
fn main() {
    eprintln!("the handoff is Unix only");
}

#[cfg(unix)]
mod unix {
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use sotto_tokio::handoff::{receive_listener, HandoffConfig, ListenerFamily};
    use sotto_tokio::{Config, Connection, SessionAcceptor, SessionHandle};

    /// Bytes each server sends its client before the handoff (unacknowledged at it).
    const UNACKED: usize = 64 << 10;
    const CHUNK: usize = 4 << 10;
    const TICK: Duration = Duration::from_millis(5);

    pub(super) fn main() {
        let args: Vec<String> = std::env::args().collect();
        let arg = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
        let (n, runs, probes) = (arg(1, 1000), arg(2, 3), arg(3, 50));
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        println!("{n} sessions, {} KiB unacknowledged each, {probes} ticking every {TICK:?}; tokio, loopback TCP, in one process", UNACKED >> 10);
        println!("| run | total | per session | longest freeze | longest client pause | handed off | load avg |");
        println!("|---|---|---|---|---|---|---|");
        let mut results = Vec::new();
        for run in 1..=runs {
            let r = rt.block_on(one_run(n, probes.min(n)));
            println!(
                "| {run} | {:.0} ms | {:.0} us | {:.1} ms | {:.1} ms | {} | {} |",
                r.total.as_secs_f64() * 1e3,
                r.total.as_secs_f64() * 1e6 / n as f64,
                r.freeze.as_secs_f64() * 1e3,
                r.pause.as_secs_f64() * 1e3,
                r.handed_off,
                loadavg()
            );
            results.push(r);
        }
        let median = |f: fn(&Run) -> Duration| {
            let mut v: Vec<Duration> = results.iter().map(f).collect();
            v.sort();
            (v[v.len() / 2], v[0], v[v.len() - 1])
        };
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (t, t0, t1) = median(|r| r.total);
        let (p, p0, p1) = median(|r| r.pause);
        let (f, f0, f1) = median(|r| r.freeze);
        println!(
            "median total {:.0} ms (range {:.0}-{:.0}), per session {:.0} us, longest freeze {:.1} ms ({:.1}-{:.1}), longest client pause {:.1} ms ({:.1}-{:.1})",
            ms(t), ms(t0), ms(t1), t.as_secs_f64() * 1e6 / n as f64, ms(f), ms(f0), ms(f1), ms(p), ms(p0), ms(p1)
        );
    }

    fn loadavg() -> String {
        std::fs::read_to_string("/proc/loadavg")
            .map_or_else(|_| "?".into(), |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
    }

    struct Run {
        total: Duration,
        freeze: Duration,
        pause: Duration,
        handed_off: u64,
    }

    fn server_config() -> Config {
        let mut c = Config::default();
        c.acceptor.max_sessions = 100_000;
        c.acceptor.max_pending_handshakes = 4096;
        c.acceptor.max_pending_per_source = 4096;
        c.acceptor.accept_backlog = 100_000;
        c.acceptor.accept_backlog_per_source = 100_000;
        c
    }

    fn client_config() -> Config {
        let mut c = Config::default();
        c.protocol.ack_delay = Duration::from_secs(10);
        c.protocol.ack_every = 1 << 20;
        c.dial.backoff_initial = Duration::from_millis(1);
        c.dial.backoff_max = Duration::from_millis(20);
        c
    }

    /// The server application: each session's connection, kept for the run. On the new
    /// acceptor (`tick`: the adopted sessions) the probes' connections tick again at once.
    async fn serve(
        acc: Arc<SessionAcceptor>,
        conns: Arc<Mutex<Vec<(u32, Connection)>>>,
        tick_below: Option<(usize, Arc<AtomicU64>)>,
    ) {
        let adopted = tick_below.is_some();
        while let Ok(s) = acc.accept().await {
            let conns = Arc::clone(&conns);
            let tick_below = tick_below.clone();
            tokio::spawn(async move {
                let c = if adopted {
                    s.adopted_connections().pop()
                } else {
                    match s.accept().await {
                        Ok(inc) => inc.accept(b"").await.ok(),
                        Err(_) => None,
                    }
                };
                if let Some(c) = c {
                    let id: u32 = std::str::from_utf8(c.peer_metadata()).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
                    match tick_below {
                        Some((probes, stop)) if (id as usize) < probes => tick(c, stop),
                        _ => conns.lock().expect("conns").push((id, c)),
                    }
                }
                // The session handle lives as long as the session.
                let _ = s.closed().await;
            });
        }
    }

    /// Send a tick every TICK on `c` until it fails (handed off) or `stop`.
    fn tick(mut c: Connection, stop: Arc<AtomicU64>) {
        tokio::spawn(async move {
            while stop.load(Ordering::Relaxed) == 0 {
                if c.send(Bytes::from_static(b"tick")).await.is_err() {
                    return;
                }
                tokio::time::sleep(TICK).await;
            }
        });
    }

    async fn one_run(n: usize, probes: usize) -> Run {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let passed: OwnedFd = listener.try_clone().expect("dup").into();
        listener.set_nonblocking(true).expect("nonblocking");
        let old = Arc::new(
            sotto_tokio::serve_sessions_tcp(
                tokio::net::TcpListener::from_std(listener).expect("listener"),
                server_config(),
            )
            .expect("config"),
        );
        let old_conns = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(serve(Arc::clone(&old), Arc::clone(&old_conns), None));

        let stop = Arc::new(AtomicU64::new(0));
        // Clients, in waves; each opens one connection named by its index and counts bytes,
        // and (probes) the longest gap between two messages once `watch` is set.
        let received = Arc::new(AtomicU64::new(0));
        let watch = Arc::new(AtomicU64::new(0));
        let pause = Arc::new(Mutex::new(Duration::ZERO));
        let mut clients: Vec<SessionHandle> = Vec::with_capacity(n);
        for wave in (0..n).collect::<Vec<_>>().chunks(50) {
            let dials = wave.iter().map(|&i| async move {
                let s = sotto_tokio::connect_session(move || tokio::net::TcpStream::connect(addr), client_config())
                    .await
                    .expect("connect");
                let c = s.open(i.to_string().as_bytes()).await.expect("open");
                (s, c)
            });
            for (s, mut c) in futures::future::join_all(dials).await {
                let (received, watch, pause) = (Arc::clone(&received), Arc::clone(&watch), Arc::clone(&pause));
                tokio::spawn(async move {
                    let mut last: Option<Instant> = None;
                    while let Ok(m) = c.recv().await {
                        received.fetch_add(m.len() as u64, Ordering::Relaxed);
                        let now = Instant::now();
                        if watch.load(Ordering::Relaxed) == 1 {
                            if let Some(l) = last {
                                let mut p = pause.lock().expect("pause");
                                *p = (*p).max(now - l);
                            }
                            last = Some(now);
                        } else {
                            last = None;
                        }
                    }
                });
                clients.push(s);
            }
        }
        while old_conns.lock().expect("conns").len() < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // 64 KiB to every client, left unacknowledged (the clients ack lazily).
        let server_side: Vec<(u32, Connection)> = std::mem::take(&mut *old_conns.lock().expect("conns"));
        let payload = Bytes::from(vec![7u8; CHUNK]);
        // Connections kept open for the run (dropping one closes it).
        let mut held = Vec::new();
        for (id, mut c) in server_side {
            for _ in 0..UNACKED / CHUNK {
                c.send(payload.clone()).await.expect("send");
            }
            if (id as usize) < probes {
                tick(c, Arc::clone(&stop));
            } else {
                held.push(c);
            }
        }
        let expected = (n * UNACKED) as u64;
        while received.load(Ordering::Relaxed) < expected {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Probes tick for a while before the handoff.
        tokio::time::sleep(Duration::from_millis(100)).await;
        watch.store(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(50)).await;

        let (a, b) = UnixStream::pair().expect("socketpair");
        let new_conns = Arc::new(Mutex::new(Vec::new()));
        let new_side = {
            let new_conns = Arc::clone(&new_conns);
            let stop = Arc::clone(&stop);
            async move {
                let (fd, b) = tokio::task::spawn_blocking(move || (receive_listener(&b, Duration::from_secs(10)), b))
                    .await
                    .expect("thread");
                let (fd, _) = fd.expect("listener");
                let l = std::net::TcpListener::from(fd);
                l.set_nonblocking(true).expect("nonblocking");
                let new = Arc::new(
                    sotto_tokio::serve_sessions_tcp(
                        tokio::net::TcpListener::from_std(l).expect("listener"),
                        server_config(),
                    )
                    .expect("config"),
                );
                tokio::spawn(serve(Arc::clone(&new), new_conns, Some((probes, stop))));
                let report = new.receive_handoff(b, HandoffConfig::default()).await.expect("received");
                (new, report)
            }
        };
        let (sent, (new, got)) = futures::future::join(
            old.hand_off(a, Some((passed, ListenerFamily::Tcp)), HandoffConfig::default()),
            new_side,
        )
        .await;
        assert_eq!(got.adopted as usize, n, "{got:?}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while new_conns.lock().expect("conns").len() < n - probes && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        held.extend(std::mem::take(&mut *new_conns.lock().expect("conns")).into_iter().map(|(_, c)| c));
        // Every client resumes into the new acceptor.
        while new.stats().endpoint.resumes_routed < n as u64 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        watch.store(2, Ordering::Relaxed);
        stop.store(1, Ordering::Relaxed);
        let resumed = new.stats().endpoint.resumes_routed;
        if resumed as usize != n {
            eprintln!("sender {sent:?}\nreceiver {got:?}\nnew {:?}\nold {:?}", new.stats(), old.stats());
        }
        assert_eq!(resumed as usize, n, "every client resumed into the new acceptor");
        let pause = *pause.lock().expect("pause");
        drop((clients, held));
        Run { total: sent.elapsed, freeze: sent.longest_freeze, pause, handed_off: sent.handed_off }
    }
}
