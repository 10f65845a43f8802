//! tokio ↔ tokio over real loopback sockets: plain, through the chaos proxy, with
//! misbehaving streams, and the lifecycle cases (close, handshake deadline, REJECTED,
//! recovery timeout, backpressure).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sotto_adapter_tests::proxy::{cuttable_tcp, Chaos, ChaosProxy, Endpoint};
use sotto_adapter_tests::streams::{OneByte, WriteZeroAfter};
use sotto_adapter_tests::workload::{eventually, exchange, seed, sleep, test_config, unix_path, within};
use sotto_proto::SessionEnd;
use sotto_tokio::raw::{connect, serve, serve_tcp, serve_unix, ConduitEvent, StableConduit};
use sotto_tokio::ConnectError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

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

async fn pair_tcp() -> (StableConduit, StableConduit, sotto_tokio::raw::Acceptor) {
    let (l, addr) = tcp_listener().await;
    let acceptor = serve_tcp(l, test_config()).expect("config");
    let a = connect(move || dial_tcp(addr), test_config()).await.expect("connect");
    let b = acceptor.accept().await.expect("accept");
    (a, b, acceptor)
}

#[tokio::test]
async fn tcp_plain_exchange() {
    let (a, b, _acc) = pair_tcp().await;
    within(LIMIT, "exchange", exchange(&a, &b, 2000)).await;
    assert_eq!(a.stats().link_ups, 1);
    assert!(matches!(a.next_event().await, Some(ConduitEvent::LinkUp { resumed: false, .. })));
}

#[tokio::test]
async fn tcp_through_chaos_kills_exactly_once_in_order() {
    let seed = seed();
    println!("seed {seed}");
    let (l, addr) = tcp_listener().await;
    let acceptor = serve_tcp(l, test_config()).expect("config");
    let proxy = ChaosProxy::start(
        Endpoint::Tcp("127.0.0.1:0".parse().expect("addr")),
        Endpoint::Tcp(addr),
        Chaos { budget: (1, 8 << 10), ..Chaos::kills(seed, 40) },
    )
    .expect("proxy");
    let Endpoint::Tcp(paddr) = proxy.endpoint else { unreachable!() };
    let a = connect(move || dial_tcp(paddr), test_config()).await.expect("connect");
    let b = acceptor.accept().await.expect("accept");
    within(LIMIT, "exchange under kills", exchange(&a, &b, 3000)).await;
    println!("kills {} resumes {}", proxy.kills(), a.stats().conduit.resumes);
    assert!(proxy.kills() >= 5, "the proxy should have killed links");
    assert!(a.stats().conduit.resumes >= 5);
    assert_eq!(acceptor.stats().sessions, 1, "every link resumed the one session");
}

#[tokio::test]
async fn unix_through_chaos_stalls_and_half_open() {
    let seed = seed();
    println!("seed {seed}");
    let path = unix_path("tokio-up");
    let acceptor = serve_unix(UnixListener::bind(&path).expect("bind"), test_config()).expect("config");
    let chaos =
        Chaos { faults: 12, stall_every: 3, half_open_every: 4, budget: (1, 20 << 10), ..Chaos::kills(seed, 0) };
    let proxy =
        ChaosProxy::start(Endpoint::Unix(unix_path("tokio-proxy")), Endpoint::Unix(path), chaos).expect("proxy");
    let Endpoint::Unix(ppath) = proxy.endpoint.clone() else { unreachable!() };
    let a = connect(move || UnixStream::connect(ppath.clone()), test_config()).await.expect("connect");
    let b = acceptor.accept().await.expect("accept");
    within(LIMIT, "exchange under stalls and half-open links", exchange(&a, &b, 3000)).await;
    let s = &proxy.stats;
    println!("kills {:?} stalls {:?} half-open {:?}", s.kills, s.stalls, s.half_opens);
    assert!(s.half_opens.load(Ordering::SeqCst) >= 1);
    let keepalive = a.stats().conduit.link_drops.keepalive + b.stats().conduit.link_drops.keepalive;
    assert!(
        keepalive >= 1,
        "a half-open link is found by keepalive: a {:?} {:?}, b {:?} {:?}",
        a.stats().conduit.link_drops,
        a.stats().link_downs,
        b.stats().conduit.link_drops,
        b.stats().link_downs
    );
}

#[tokio::test]
async fn a4_one_byte_reads_and_writes() {
    let (l, addr) = tcp_listener().await;
    let incoming = futures::stream::unfold(l, |l| async move {
        let r = l.accept().await.map(|(s, _)| OneByte(s));
        Some((r, l))
    });
    let acceptor = serve(incoming, test_config()).expect("config");
    let a = connect(move || async move { dial_tcp(addr).await.map(OneByte) }, test_config()).await.expect("connect");
    let b = acceptor.accept().await.expect("accept");
    // One byte per read and per write: thousands of driver wake-ups per message in a debug
    // build (8-14 s alone on the 2-core machine, more beside the other tests of this binary),
    // so the hang detector gets a wider bound than the other tests'.
    within(Duration::from_secs(90), "exchange one byte at a time", exchange(&a, &b, 300)).await;
}

#[tokio::test]
async fn a3_write_returning_zero_is_a_dead_link() {
    let (a, b, _acc, dials) = {
        let (l, addr) = tcp_listener().await;
        let acceptor = serve_tcp(l, test_config()).expect("config");
        let dials = Arc::new(AtomicU32::new(0));
        let d = Arc::clone(&dials);
        let a = connect(
            move || {
                let first_links = d.fetch_add(1, Ordering::SeqCst) < 3;
                async move {
                    let s = dial_tcp(addr).await?;
                    Ok(WriteZeroAfter { inner: s, budget: if first_links { 5000 } else { usize::MAX } })
                }
            },
            test_config(),
        )
        .await
        .expect("connect");
        let b = acceptor.accept().await.expect("accept");
        (a, b, acceptor, dials)
    };
    within(LIMIT, "exchange over links whose writes return 0", exchange(&a, &b, 1000)).await;
    assert!(dials.load(Ordering::SeqCst) >= 4);
    assert!(a.stats().conduit.resumes >= 3);
}

#[tokio::test]
async fn a5_graceful_close_peer_does_not_reconnect() {
    // Initiator closes.
    let (a, b, acceptor) = pair_tcp().await;
    a.send(Bytes::from_static(b"last")).await.expect("send");
    assert_eq!(within(LIMIT, "close", a.close(0x100, "done")).await, SessionEnd::LocalClose { code: 0x100 });
    assert_eq!(&b.recv().await.expect("delivered before goodbye")[..], b"last");
    assert!(b.recv().await.is_err());
    assert_eq!(b.ended(), Some(SessionEnd::PeerGoodbye { code: 0x100 }));
    // Acceptor closes: the initiator must not redial.
    let (l, addr) = tcp_listener().await;
    let acceptor2 = serve_tcp(l, test_config()).expect("config");
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
    let b = acceptor2.accept().await.expect("accept");
    b.close(7, "bye").await;
    assert!(eventually(LIMIT, || a.ended().is_some()).await);
    assert_eq!(a.ended(), Some(SessionEnd::PeerGoodbye { code: 7 }));
    sleep(Duration::from_millis(300)).await;
    assert_eq!(dials.load(Ordering::SeqCst), 1, "no redial after GOODBYE");
    assert_eq!(acceptor2.stats().links, 1);
    drop(acceptor);
}

/// A6: dropping a raw handle closes its session gracefully: what it sent is delivered,
/// then the peer sees GOODBYE (not a link loss) and does not redial; the dropped side's
/// task ends by itself.
#[tokio::test]
async fn a6_dropped_raw_handle_sends_goodbye() {
    let (a, b, acceptor) = pair_tcp().await;
    b.send(Bytes::from_static(b"parting words")).await.expect("send");
    drop(b);
    assert_eq!(&within(LIMIT, "delivered before goodbye", a.recv()).await.expect("data")[..], b"parting words");
    assert!(eventually(LIMIT, || a.ended().is_some()).await);
    assert_eq!(a.ended(), Some(SessionEnd::PeerGoodbye { code: 0 }));
    sleep(Duration::from_millis(300)).await;
    assert_eq!(a.stats().dials, 1, "no redial after GOODBYE");
    drop(acceptor);
}

#[tokio::test]
async fn h7_handshake_deadline_drops_a_silent_client() {
    let (l, addr) = tcp_listener().await;
    let acceptor = serve_tcp(l, test_config()).expect("config");
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let started = std::time::Instant::now();
    let mut buf = [0u8; 8];
    let n = within(Duration::from_secs(5), "silent client dropped", silent.read(&mut buf)).await;
    assert!(matches!(n, Ok(0) | Err(_)), "closed without an answer");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(4), "{waited:?}");
    assert!(eventually(LIMIT, || acceptor.stats().handshake_timeouts == 1).await);
    // Bad magic: closed at once, no session.
    let mut bad = TcpStream::connect(addr).await.expect("connect");
    let mut hello = [0u8; 29];
    hello[0] = 25;
    hello[4..8].copy_from_slice(b"XXXX");
    bad.write_all(&hello).await.expect("write");
    assert!(matches!(bad.read(&mut buf).await, Ok(0) | Err(_)));
    // The acceptor still serves real sessions.
    let a = connect(move || dial_tcp(addr), test_config()).await.expect("connect");
    let b = acceptor.accept().await.expect("accept");
    within(LIMIT, "exchange", exchange(&a, &b, 10)).await;
    assert_eq!(acceptor.stats().bad_hellos, 1);
}

#[tokio::test]
async fn rejected_resume_is_lost_and_never_retried() {
    let (l1, addr1) = tcp_listener().await;
    let (l2, addr2) = tcp_listener().await;
    let first = serve_tcp(l1, test_config()).expect("config");
    let second = serve_tcp(l2, test_config()).expect("config");
    let (proxy, paddr1) = cuttable_tcp(addr1);
    let target = Arc::new(std::sync::Mutex::new(paddr1));
    let t = Arc::clone(&target);
    let dials = Arc::new(AtomicU32::new(0));
    let d = Arc::clone(&dials);
    let a = connect(
        move || {
            d.fetch_add(1, Ordering::SeqCst);
            let addr = *t.lock().expect("lock");
            dial_tcp(addr)
        },
        test_config(),
    )
    .await
    .expect("connect");
    let b = first.accept().await.expect("accept");
    // The "acceptor restarts" (crashes: no GOODBYE): the session's key is unknown to the
    // other one.
    *target.lock().expect("lock") = addr2;
    drop(proxy);
    drop(b);
    drop(first);
    assert!(eventually(LIMIT, || a.ended().is_some()).await);
    assert_eq!(a.ended(), Some(SessionEnd::Rejected));
    let after = dials.load(Ordering::SeqCst);
    sleep(Duration::from_millis(300)).await;
    assert_eq!(dials.load(Ordering::SeqCst), after, "REJECTED is not retried");
    assert!(a.recv().await.is_err());
    assert_eq!(second.stats().rejected, 1);
}

#[tokio::test]
async fn initial_connect_retries_then_succeeds_or_times_out() {
    let (l, addr) = tcp_listener().await;
    let acceptor = serve_tcp(l, test_config()).expect("config");
    let tries = Arc::new(AtomicU32::new(0));
    let t = Arc::clone(&tries);
    let a = connect(
        move || {
            let n = t.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 3 {
                    return Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
                }
                dial_tcp(addr).await
            }
        },
        test_config(),
    )
    .await
    .expect("connect after transient failures");
    assert_eq!(tries.load(Ordering::SeqCst), 4);
    let b = acceptor.accept().await.expect("accept");
    within(LIMIT, "exchange", exchange(&a, &b, 10)).await;
    // Nothing listens: times out with the last error.
    let (l, dead) = tcp_listener().await;
    drop(l);
    let mut cfg = test_config();
    cfg.dial.connect_timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let err = connect(move || dial_tcp(dead), cfg).await.expect_err("nothing listens");
    assert!(matches!(err, ConnectError::TimedOut { last_error: Some(_) }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // A permanent error is not retried.
    let err =
        connect(|| async { Err::<TcpStream, _>(std::io::Error::from(std::io::ErrorKind::PermissionDenied)) }, cfg)
            .await
            .expect_err("permanent");
    assert!(matches!(err, ConnectError::Io(_)), "{err:?}");
}

#[tokio::test]
async fn recovery_timeout_reports_the_session_lost() {
    let (l, addr) = tcp_listener().await;
    let acceptor = serve_tcp(l, test_config()).expect("config");
    let mut cfg = test_config();
    cfg.protocol.recovery_timeout = Duration::from_millis(500);
    let (proxy, paddr) = cuttable_tcp(addr);
    let a = connect(move || dial_tcp(paddr), cfg).await.expect("connect");
    let b = acceptor.accept().await.expect("accept");
    // The acceptor's side crashes (no GOODBYE): the link goes, redials are refused.
    drop(proxy);
    drop(b);
    drop(acceptor);
    let recv = within(Duration::from_secs(5), "pending recv completes", a.recv()).await;
    assert_eq!(recv.expect_err("lost").0, SessionEnd::RecoveryTimeout);
    let mut saw_down = false;
    while let Some(e) = a.next_event().await {
        saw_down |= matches!(e, ConduitEvent::LinkDown { .. });
        if let ConduitEvent::Ended(end) = e {
            assert!(end.is_lost());
        }
    }
    assert!(saw_down);
}

#[tokio::test]
async fn send_backpressures_while_the_ring_is_full() {
    let mut cfg = test_config();
    cfg.protocol.replay_frames = 16;
    cfg.buffers.inbound_items = 4;
    let (l, addr) = tcp_listener().await;
    let acceptor = serve_tcp(l, cfg).expect("config");
    let a = connect(move || dial_tcp(addr), cfg).await.expect("connect");
    let b = acceptor.accept().await.expect("accept");
    // b does not read: its queue fills, then the socket buffers, then a's ring.
    let mut sent = 0u64;
    let blocked = loop {
        let send = a.send(sotto_adapter_tests::workload::message(sent));
        match futures::future::select(std::pin::pin!(send), std::pin::pin!(sleep(Duration::from_millis(300)))).await {
            futures::future::Either::Left((r, _)) => {
                r.expect("send");
                sent += 1;
                assert!(sent < 1_000_000, "send never blocked");
            }
            futures::future::Either::Right(_) => break sent,
        }
    };
    assert!(a.stats().conduit.replay_frames <= 16);
    assert!(b.stats().inbound_items <= 4);
    // Reading drains everything, in order, and sends go on.
    let reader = sotto_adapter_tests::workload::recv_all(&b, blocked + 50);
    let writer = async {
        for i in blocked..blocked + 50 {
            a.send(sotto_adapter_tests::workload::message(i)).await.expect("send");
        }
    };
    within(LIMIT, "drain after backpressure", futures::future::join(reader, writer)).await;
}
