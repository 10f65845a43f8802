//! smol ↔ smol over real loopback sockets: plain, through the chaos proxy, one byte at a
//! time, graceful close and the handshake deadline.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::unix::{UnixListener, UnixStream};
use smol::net::{TcpListener, TcpStream};
use sotto_adapter_tests::proxy::{Chaos, ChaosProxy, Endpoint};
use sotto_adapter_tests::streams::{OneByte, OverReport, WriteZeroAfter};
use sotto_adapter_tests::workload::{eventually, exchange, seed, sleep, test_config, unix_path, within};
use sotto_proto::SessionEnd;
use sotto_smol::raw::{connect, serve, serve_tcp, serve_unix, StableConduit};

const LIMIT: Duration = Duration::from_secs(20);

async fn tcp_listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    (l, a)
}

async fn dial_tcp(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

async fn pair_tcp() -> (StableConduit, StableConduit, sotto_smol::raw::Acceptor) {
    let (l, addr) = tcp_listener().await;
    let acceptor = serve_tcp(l, test_config()).expect("config");
    let a = connect(move || dial_tcp(addr), test_config()).await.expect("connect");
    let b = acceptor.accept().await.expect("accept");
    (a, b, acceptor)
}

#[test]
fn tcp_plain_exchange() {
    smol::block_on(async {
        let (a, b, _acc) = pair_tcp().await;
        within(LIMIT, "exchange", exchange(&a, &b, 2000)).await;
        assert_eq!(b.stats().link_ups, 1);
    });
}

#[test]
fn unix_through_chaos_kills_exactly_once_in_order() {
    smol::block_on(async {
        let seed = seed();
        println!("seed {seed}");
        let path = unix_path("smol-up");
        let acceptor = serve_unix(UnixListener::bind(&path).expect("bind"), test_config()).expect("config");
        let chaos = Chaos { budget: (1, 8 << 10), ..Chaos::kills(seed, 40) };
        let proxy =
            ChaosProxy::start(Endpoint::Unix(unix_path("smol-proxy")), Endpoint::Unix(path), chaos).expect("proxy");
        let Endpoint::Unix(ppath) = proxy.endpoint.clone() else { unreachable!() };
        let a = connect(move || UnixStream::connect(ppath.clone()), test_config()).await.expect("connect");
        let b = acceptor.accept().await.expect("accept");
        within(LIMIT, "exchange under kills", exchange(&a, &b, 3000)).await;
        println!("kills {} resumes {}", proxy.kills(), a.stats().conduit.resumes);
        assert!(proxy.kills() >= 5);
        assert_eq!(acceptor.stats().sessions, 1);
    });
}

#[test]
fn tcp_through_chaos_stalls_and_half_open() {
    smol::block_on(async {
        let seed = seed();
        println!("seed {seed}");
        let (l, addr) = tcp_listener().await;
        let acceptor = serve_tcp(l, test_config()).expect("config");
        let chaos =
            Chaos { faults: 12, stall_every: 3, half_open_every: 4, budget: (1, 20 << 10), ..Chaos::kills(seed, 0) };
        let proxy = ChaosProxy::start(Endpoint::Tcp("127.0.0.1:0".parse().expect("addr")), Endpoint::Tcp(addr), chaos)
            .expect("proxy");
        let Endpoint::Tcp(paddr) = proxy.endpoint else { unreachable!() };
        let a = connect(move || dial_tcp(paddr), test_config()).await.expect("connect");
        let b = acceptor.accept().await.expect("accept");
        within(LIMIT, "exchange under stalls and half-open links", exchange(&a, &b, 3000)).await;
        assert!(proxy.stats.half_opens.load(Ordering::SeqCst) >= 1);
    });
}

#[test]
fn a3_a4_one_byte_reads_and_writes_and_write_zero() {
    smol::block_on(async {
        let (l, addr) = tcp_listener().await;
        let incoming = futures::stream::unfold(l, |l| async move {
            let r = l.accept().await.map(|(s, _)| OneByte(s));
            Some((r, l))
        });
        let acceptor = serve(incoming, test_config()).expect("config");
        let dials = Arc::new(AtomicU32::new(0));
        let d = Arc::clone(&dials);
        let a = connect(
            move || {
                let budget = if d.fetch_add(1, Ordering::SeqCst) < 2 { 3000 } else { usize::MAX };
                async move { dial_tcp(addr).await.map(|s| OneByte(WriteZeroAfter { inner: s, budget })) }
            },
            test_config(),
        )
        .await
        .expect("connect");
        let b = acceptor.accept().await.expect("accept");
        within(LIMIT, "exchange one byte at a time", exchange(&a, &b, 300)).await;
        assert!(dials.load(Ordering::SeqCst) >= 3, "writes returning 0 killed the first links");
    });
}

/// A4: a stream that reports more bytes than it was given (on writes and on reads) costs
/// its link, never the framing: every lie is caught, the session resumes, and everything
/// arrives once, in order.
#[test]
fn a4_stream_reporting_more_than_it_was_given_costs_the_link() {
    smol::block_on(async {
        let (l, addr) = tcp_listener().await;
        let acceptor = serve_tcp(l, test_config()).expect("config");
        let dials = Arc::new(AtomicU32::new(0));
        let d = Arc::clone(&dials);
        let a = connect(
            move || {
                // The first three links lie on their 5th read and write; later ones never do.
                let every = if d.fetch_add(1, Ordering::SeqCst) < 3 { 5 } else { 0 };
                async move { dial_tcp(addr).await.map(|s| OverReport::new(s, every)) }
            },
            test_config(),
        )
        .await
        .expect("connect");
        let b = acceptor.accept().await.expect("accept");
        within(LIMIT, "exchange over lying streams", exchange(&a, &b, 3000)).await;
        let st = a.stats();
        println!("dials {} link downs {}", dials.load(Ordering::SeqCst), st.link_downs);
        assert!(dials.load(Ordering::SeqCst) >= 4, "each lying link was dropped");
        assert!(st.conduit.resumes >= 3, "and the session resumed each time");
        // Dropped for the lie itself (not clamped into a corrupt stream that the framing or
        // the peer then happened to reject).
        let mut lies = 0;
        while let Some(Some(e)) = futures::FutureExt::now_or_never(a.next_event()) {
            lies += u32::from(matches!(
                e,
                sotto_smol::raw::ConduitEvent::LinkDown {
                    cause: sotto_smol::LinkDownCause::Io(std::io::ErrorKind::InvalidData)
                }
            ));
        }
        assert!(lies >= 3, "links dropped as InvalidData: {lies}");
    });
}

#[test]
fn a5_graceful_close_peer_does_not_reconnect() {
    smol::block_on(async {
        let (l, addr) = tcp_listener().await;
        let acceptor = serve_tcp(l, test_config()).expect("config");
        let dials = Arc::new(AtomicU32::new(0));
        let d = Arc::clone(&dials);
        let a = connect(
            move || {
                d.fetch_add(1, Ordering::SeqCst);
                dial_tcp(addr)
            },
            test_config(),
        )
        .await
        .expect("connect");
        let b = acceptor.accept().await.expect("accept");
        assert_eq!(b.close(9, "bye").await, SessionEnd::LocalClose { code: 9 });
        assert!(eventually(LIMIT, || a.ended().is_some()).await);
        assert_eq!(a.ended(), Some(SessionEnd::PeerGoodbye { code: 9 }));
        sleep(Duration::from_millis(300)).await;
        assert_eq!(dials.load(Ordering::SeqCst), 1, "no redial after GOODBYE");
        assert_eq!(acceptor.stats().links, 1);
    });
}

#[test]
fn h7_handshake_deadline_drops_a_silent_client() {
    smol::block_on(async {
        let (l, addr) = tcp_listener().await;
        let acceptor = serve_tcp(l, test_config()).expect("config");
        let mut silent = TcpStream::connect(addr).await.expect("connect");
        let started = std::time::Instant::now();
        let mut buf = [0u8; 8];
        let n = within(Duration::from_secs(5), "silent client dropped", silent.read(&mut buf)).await;
        assert!(matches!(n, Ok(0) | Err(_)));
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(4), "{waited:?}");
        assert!(eventually(LIMIT, || acceptor.stats().handshake_timeouts == 1).await);
        // A hello of the wrong size is refused without waiting for the deadline.
        let mut bad = TcpStream::connect(addr).await.expect("connect");
        bad.write_all(&[24, 0, 0, 0]).await.expect("write");
        let n = within(Duration::from_millis(500), "bad size refused early", bad.read(&mut buf)).await;
        assert!(matches!(n, Ok(0) | Err(_)));
        let (a, b, _acc) = pair_tcp().await;
        within(LIMIT, "exchange", exchange(&a, &b, 10)).await;
    });
}

/// `Smol::on(executor)`: sotto's tasks run on the application's executor, and only while it
/// runs. The session's dials (made by its driver task) happen on the one thread running the
/// executor, and nothing connects while the executor is not run.
#[test]
fn tasks_run_on_the_applications_executor() {
    let ex = Arc::new(smol::Executor::new());
    let rt = sotto_smol::Smol::on(Arc::clone(&ex));
    let here = std::thread::current().id();
    let dialed_on = Arc::new(std::sync::Mutex::new(Vec::new()));
    smol::block_on(async {
        let (l, addr) = tcp_listener().await;
        let acceptor = rt.serve_sessions_tcp(l, test_config()).expect("config");
        let d = Arc::clone(&dialed_on);
        let connecting = rt.connect_session(
            move || {
                d.lock().expect("lock").push(std::thread::current().id());
                dial_tcp(addr)
            },
            test_config(),
        );
        let mut connecting = Box::pin(connecting);
        // The executor is not running: the driver is never polled, so no dial happens.
        let idle = futures::future::select(connecting.as_mut(), Box::pin(sleep(Duration::from_millis(300)))).await;
        assert!(matches!(idle, futures::future::Either::Right(_)), "connected without the executor running");
        assert!(dialed_on.lock().expect("lock").is_empty());
        ex.run(async {
            let a = within(LIMIT, "connect", connecting).await.expect("connect");
            let b = within(LIMIT, "accept", acceptor.accept()).await.expect("accept");
            let (x, y) = futures::future::join(a.open(b"m"), async {
                b.accept().await.expect("incoming").accept(b"").await.expect("answer")
            })
            .await;
            let (mut x, mut y) = (x.expect("open"), y);
            for i in 0..100u32 {
                x.send(i.to_le_bytes()).await.expect("send");
            }
            for i in 0..100u32 {
                assert_eq!(&y.recv().await.expect("recv")[..], &i.to_le_bytes());
            }
            a.close(0, "done").await;
        })
        .await;
    });
    let dialed_on = dialed_on.lock().expect("lock");
    assert!(!dialed_on.is_empty());
    assert!(dialed_on.iter().all(|t| *t == here), "dialed on {dialed_on:?}, the executor runs on {here:?}");
}
