//! The session API over real sockets, on every runtime pairing: tokio ↔ tokio, smol ↔ smol,
//! tokio ↔ smol both ways, over TCP and Unix sockets, through the chaos proxy (links killed
//! mid-frame): several connections, exactly-once in-order delivery on each, both ways. Plus
//! per-connection backpressure (a slow reader stalls only its own connection), graceful
//! close of connections and of the session, rejection, and the acceptor's handshake
//! deadline and REJECTED resumes.

use std::time::Duration;

use bytes::Bytes;
use futures::future::join;
use sotto_adapter_tests::proxy::{Chaos, Endpoint};
use sotto_adapter_tests::sessions::{
    conn_message, dial, exchange_all, listen, open_accept, proxy_to, recv_seq, send_seq, session_config, Rt, Transport,
};
use sotto_adapter_tests::workload::{eventually, seed, sleep, within};
use sotto_proto::SessionEnd;
use sotto_tokio::{ConnError, OpenError, SessionEvent};

const LIMIT: Duration = Duration::from_secs(20);

/// Four connections, `n` messages each way on each, through a proxy killing the first 30
/// links after 1 B..8 KiB.
async fn chaos_run(initiator: Rt, acceptor: Rt, transport: Transport) {
    let seed = seed();
    println!("seed {seed} ({initiator:?} -> {acceptor:?} over {transport:?})");
    let (acc, upstream) = listen(acceptor, transport, session_config()).await;
    let proxy = proxy_to(upstream, Chaos { budget: (1, 8 << 10), ..Chaos::kills(seed, 30) });
    let a = dial(initiator, proxy.endpoint.clone(), session_config()).await;
    let b = acc.accept().await.expect("accept");
    let pairs = within(LIMIT, "open", open_accept(&a, &b, 4)).await;
    within(LIMIT, "exchange under kills", exchange_all(pairs, 800)).await;
    let (sa, sb) = (a.stats(), b.stats());
    println!("kills {} resumes {} / {}", proxy.kills(), sa.session.conduit.resumes, sb.session.conduit.resumes);
    assert!(proxy.kills() >= 5, "the proxy should have killed links");
    assert!(sa.session.conduit.resumes >= 5);
    assert_eq!(acc.stats().endpoint.sessions_created, 1, "every link resumed the one session");
    assert!(acc.stats().endpoint.resumes_routed >= 5);
    let mut resumed = 0;
    while let Some(Some(e)) = futures::FutureExt::now_or_never(a.next_event()) {
        resumed += u32::from(matches!(e, SessionEvent::Resumed { .. }));
    }
    assert!(resumed >= 5, "Resumed events: {resumed}");
    let timings = a.take_resume_timings();
    assert!(!timings.is_empty());
    for t in &timings {
        assert!(t.link_lost <= t.resumed);
        assert!(t.first_delivery.is_none_or(|f| f >= t.resumed), "{t:?}");
    }
}

#[tokio::test]
async fn tokio_tokio_tcp_chaos() {
    chaos_run(Rt::Tokio, Rt::Tokio, Transport::Tcp).await;
}

#[tokio::test]
async fn tokio_tokio_unix_chaos() {
    chaos_run(Rt::Tokio, Rt::Tokio, Transport::Unix).await;
}

#[test]
fn smol_smol_tcp_chaos() {
    smol::block_on(chaos_run(Rt::Smol, Rt::Smol, Transport::Tcp));
}

#[test]
fn smol_smol_unix_chaos() {
    smol::block_on(chaos_run(Rt::Smol, Rt::Smol, Transport::Unix));
}

#[tokio::test]
async fn tokio_initiator_smol_acceptor_tcp_chaos() {
    chaos_run(Rt::Tokio, Rt::Smol, Transport::Tcp).await;
}

#[tokio::test]
async fn smol_initiator_tokio_acceptor_tcp_chaos() {
    chaos_run(Rt::Smol, Rt::Tokio, Transport::Tcp).await;
}

#[tokio::test]
async fn tokio_initiator_smol_acceptor_unix_chaos() {
    chaos_run(Rt::Tokio, Rt::Smol, Transport::Unix).await;
}

#[tokio::test]
async fn smol_initiator_tokio_acceptor_unix_chaos() {
    chaos_run(Rt::Smol, Rt::Tokio, Transport::Unix).await;
}

/// The session API through stalls and half-open links as well as kills, both runtime
/// directions: a half-open link is found by keepalive and replaced; every connection
/// delivers exactly once, in order.
async fn faults_run(initiator: Rt, acceptor: Rt, transport: Transport) {
    let seed = seed();
    println!("seed {seed} ({initiator:?} -> {acceptor:?} over {transport:?})");
    let (acc, upstream) = listen(acceptor, transport, session_config()).await;
    let chaos =
        Chaos { faults: 12, stall_every: 3, half_open_every: 2, budget: (1, 20 << 10), ..Chaos::kills(seed, 0) };
    let proxy = proxy_to(upstream, chaos);
    let a = dial(initiator, proxy.endpoint.clone(), session_config()).await;
    let b = acc.accept().await.expect("accept");
    let pairs = within(LIMIT, "open", open_accept(&a, &b, 3)).await;
    within(LIMIT, "exchange under stalls and half-open links", exchange_all(pairs, 1500)).await;
    let s = &proxy.stats;
    println!("kills {:?} stalls {:?} half-open {:?}", s.kills, s.stalls, s.half_opens);
    assert!(s.half_opens.load(std::sync::atomic::Ordering::SeqCst) >= 1, "a link went half-open");
    let keepalive = a.stats().session.conduit.link_drops.keepalive + b.stats().session.conduit.link_drops.keepalive;
    assert!(keepalive >= 1, "a half-open link is found by keepalive");
    assert_eq!(acc.stats().endpoint.sessions_created, 1, "every link resumed the one session");
}

#[tokio::test]
async fn tokio_initiator_smol_acceptor_unix_stalls_and_half_open() {
    faults_run(Rt::Tokio, Rt::Smol, Transport::Unix).await;
}

#[tokio::test]
async fn smol_initiator_tokio_acceptor_tcp_stalls_and_half_open() {
    faults_run(Rt::Smol, Rt::Tokio, Transport::Tcp).await;
}

/// A reader that stops on one connection holds back that connection's sender only (credit),
/// with its queue bounded by the credit; the other connection keeps flowing, over links
/// that keep dying. Reading again delivers everything in order. `tiny`: the stalled
/// connection carries empty messages, which credit bounds too (at least MIN_MESSAGE_CREDIT
/// each), so they neither pile up without limit nor stop the link for the other connection.
async fn slow_reader_run(tiny: bool) {
    let mut cfg = session_config();
    cfg.protocol.initial_credit = 16 << 10;
    // A count limit far below what credit allows: the driver must raise it (else the link
    // would stop at 64 queued empty messages and the other connection with it).
    cfg.buffers.conn_inbound_items = 64;
    let (acc, upstream) = listen(Rt::Smol, Transport::Tcp, cfg).await;
    let proxy = proxy_to(upstream, Chaos { budget: (1, 64 << 10), ..Chaos::kills(seed(), 10) });
    let a = dial(Rt::Tokio, proxy.endpoint.clone(), cfg).await;
    let b = acc.accept().await.expect("accept");
    let mut pairs = within(LIMIT, "open", open_accept(&a, &b, 2)).await;
    let (fast_a, fast_b) = pairs.pop().expect("pair");
    let (slow_a, slow_b) = pairs.pop().expect("pair");
    let (mut slow_tx, _slow_a_rx) = slow_a.split();
    let (_slow_b_tx, mut slow_rx) = slow_b.split();
    let message = |i: u64| if tiny { Bytes::new() } else { conn_message(0, i) };
    // Fill the slow connection until its sender blocks (out of credit).
    let mut sent = 0u64;
    loop {
        let send = slow_tx.send(message(sent));
        match tokio::time::timeout(Duration::from_millis(300), send).await {
            Ok(r) => {
                r.expect("send");
                sent += 1;
                assert!(sent < 100_000, "send never blocked");
            }
            Err(_) => break,
        }
    }
    let queued = b.stats().queued_messages;
    println!("slow connection blocked after {sent} messages, {queued} queued at the reader");
    let credit: u64 = (0..sent).map(|i| (message(i).len() as u64).max(sotto_proto::session::MIN_MESSAGE_CREDIT)).sum();
    assert!(credit <= 16 << 10, "no more than the credit was sent: {credit}");
    if tiny {
        assert_eq!(
            sent,
            (16 << 10) / sotto_proto::session::MIN_MESSAGE_CREDIT,
            "credit, not the ring, stopped the sender"
        );
        let all_queued = eventually(LIMIT, || b.stats().queued_messages as u64 == sent).await;
        assert!(all_queued, "all of them wait at the reader: {} of {sent}", b.stats().queued_messages);
    }
    // The other connection is unaffected.
    within(LIMIT, "fast connection while the slow one is stalled", exchange_all(vec![(fast_a, fast_b)], 1500)).await;
    // Reading the slow one releases credit: everything arrives in order, sends go on.
    let reader = async {
        for i in 0..sent + 300 {
            let got = slow_rx.recv().await.expect("message");
            assert_eq!(got, message(i), "message {i} of the slow connection");
        }
    };
    let writer = async {
        for i in sent..sent + 300 {
            slow_tx.send(message(i)).await.expect("send");
        }
    };
    within(LIMIT, "slow connection drains", join(reader, writer)).await;
}

#[tokio::test]
async fn a7_slow_reader_stalls_only_its_connection() {
    slow_reader_run(false).await;
}

#[tokio::test]
async fn a7_slow_reader_of_empty_messages_stalls_only_its_connection() {
    slow_reader_run(true).await;
}

/// Dropping only the receiving half of a connection gives back the credit of everything it
/// held, had queued or will get: the peer's sender keeps going far past one window, and the
/// sending half still works.
#[tokio::test]
async fn dropped_receiving_half_never_blocks_the_peer() {
    let mut cfg = session_config();
    cfg.protocol.initial_credit = 16 << 10;
    let (acc, upstream) = listen(Rt::Tokio, Transport::Tcp, cfg).await;
    let a = dial(Rt::Tokio, upstream, cfg).await;
    let b = acc.accept().await.expect("accept");
    let mut pairs = open_accept(&a, &b, 1).await;
    let (x, y) = pairs.pop().expect("pair");
    let (mut x_tx, mut x_rx) = x.split();
    let (mut y_tx, y_rx) = y.split();
    // Some data reaches y's queue before its reader goes.
    for i in 0..50 {
        x_tx.send(conn_message(0, i)).await.expect("send");
    }
    drop(y_rx);
    // 16 windows' worth: it would block after one if the credit were not given back.
    let writer = async {
        for i in 50..3000 {
            x_tx.send(conn_message(0, i)).await.expect("send past a dropped reader");
        }
    };
    within(LIMIT, "sending to a dropped reader", writer).await;
    y_tx.send(Bytes::from_static(b"still sending")).await.expect("the sending half lives");
    assert_eq!(&within(LIMIT, "reply", x_rx.recv()).await.expect("reply")[..], b"still sending");
}

/// A dropped `recv` loses nothing: poll with short timeouts throughout.
#[tokio::test]
async fn a2_cancelled_recv_loses_nothing() {
    let (acc, upstream) = listen(Rt::Tokio, Transport::Tcp, session_config()).await;
    let a = dial(Rt::Tokio, upstream, session_config()).await;
    let b = acc.accept().await.expect("accept");
    let mut pairs = open_accept(&a, &b, 1).await;
    let (x, y) = pairs.pop().expect("pair");
    let (mut tx, _xr) = x.split();
    let (_yt, mut rx) = y.split();
    let sender = send_seq(&mut tx, 0, 3000);
    let receiver = async {
        let mut i = 0;
        while i < 3000 {
            if let Ok(got) = tokio::time::timeout(Duration::from_micros(50), rx.recv()).await {
                assert_eq!(got.expect("alive"), conn_message(0, i));
                i += 1;
            }
        }
    };
    within(LIMIT, "exchange with cancelled receives", join(sender, receiver)).await;
}

/// Closing a connection delivers what was sent, then the close with its metadata; closing
/// the session sends GOODBYE: the peer's connections and session end, nobody redials.
#[tokio::test]
async fn a5_graceful_close_of_connections_and_session() {
    let (acc, upstream) = listen(Rt::Smol, Transport::Unix, session_config()).await;
    let a = dial(Rt::Tokio, upstream, session_config()).await;
    let b = acc.accept().await.expect("accept");
    let mut pairs = open_accept(&a, &b, 2).await;
    let (mut x1, mut y1) = pairs.pop().expect("pair");
    let (mut x0, mut y0) = pairs.pop().expect("pair");
    // Connection close: data first, then PeerClosed with the metadata; the other lives on.
    x1.send(Bytes::from_static(b"last words")).await.expect("send");
    x1.close(b"bye").await;
    assert_eq!(&y1.recv().await.expect("data before close")[..], b"last words");
    assert_eq!(y1.recv().await, Err(ConnError::PeerClosed(Bytes::from_static(b"bye"))));
    assert!(matches!(y1.send(Bytes::from_static(b"x")).await, Err(ConnError::PeerClosed(_))));
    y0.send(Bytes::from_static(b"still here")).await.expect("send");
    assert_eq!(&x0.recv().await.expect("other connection")[..], b"still here");
    // Rejection.
    let (opened, answered) = join(a.open(b"no thanks"), async {
        b.accept().await.expect("accept").reject(42, b"nope").await.expect("reject");
    })
    .await;
    assert_eq!(opened.expect_err("rejected"), OpenError::Rejected { code: 42, metadata: Bytes::from_static(b"nope") });
    let () = answered;
    // Session close from the initiator: queued data is delivered, then GOODBYE.
    x0.send(Bytes::from_static(b"before goodbye")).await.expect("send");
    assert_eq!(within(LIMIT, "close", a.close(0x200, "done")).await, SessionEnd::LocalClose { code: 0x200 });
    assert_eq!(&y0.recv().await.expect("delivered before goodbye")[..], b"before goodbye");
    assert_eq!(y0.recv().await, Err(ConnError::Ended(SessionEnd::PeerGoodbye { code: 0x200 })));
    assert!(eventually(LIMIT, || b.ended().is_some()).await);
    let mut last = None;
    while let Some(e) = b.next_event().await {
        last = Some(e);
    }
    assert_eq!(last, Some(SessionEvent::Closed(SessionEnd::PeerGoodbye { code: 0x200 })));
    sleep(Duration::from_millis(200)).await;
    assert_eq!(a.stats().dials, 1, "no redial after close");
    assert!(matches!(x0.send(Bytes::from_static(b"late")).await, Err(ConnError::Ended(_))));
}

/// The acceptor closes: the initiator's session ends with the peer's GOODBYE and it does
/// not redial; dropping an acceptor-side handle also sends GOODBYE.
#[test]
fn a5_a6_acceptor_close_and_drop_send_goodbye() {
    smol::block_on(async {
        let (acc, upstream) = listen(Rt::Smol, Transport::Tcp, session_config()).await;
        let a = dial(Rt::Smol, upstream.clone(), session_config()).await;
        let b = acc.accept().await.expect("accept");
        b.close(7, "bye").await;
        assert!(eventually(LIMIT, || a.ended().is_some()).await);
        assert_eq!(a.ended(), Some(SessionEnd::PeerGoodbye { code: 7 }));
        let a2 = dial(Rt::Smol, upstream, session_config()).await;
        drop(acc.accept().await.expect("accept"));
        assert!(eventually(LIMIT, || a2.ended().is_some()).await);
        assert_eq!(a2.ended(), Some(SessionEnd::PeerGoodbye { code: 0 }));
        sleep(Duration::from_millis(200)).await;
        assert_eq!(a.stats().dials + a2.stats().dials, 2, "no redial after GOODBYE");
    });
}

/// The endpoint's handshake deadline closes a silent link; a bad hello is closed at once; an
/// unknown resume key is answered REJECTED and the session is lost, never retried.
#[tokio::test]
async fn endpoint_deadline_bad_hello_and_rejected_resume() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (acc, upstream) = listen(Rt::Tokio, Transport::Tcp, session_config()).await;
    let Endpoint::Tcp(addr) = upstream.clone() else { unreachable!() };
    let mut silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let started = std::time::Instant::now();
    let mut buf = [0u8; 8];
    let n = within(Duration::from_secs(5), "silent client dropped", silent.read(&mut buf)).await;
    assert!(matches!(n, Ok(0) | Err(_)), "closed without an answer");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(4), "{waited:?}");
    assert_eq!(acc.stats().endpoint.handshakes_expired, 1);
    let mut bad = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut hello = [0u8; 29];
    hello[0] = 25;
    hello[4..8].copy_from_slice(b"XXXX");
    bad.write_all(&hello).await.expect("write");
    assert!(matches!(bad.read(&mut buf).await, Ok(0) | Err(_)));
    assert!(eventually(LIMIT, || acc.stats().endpoint.bad_hellos == 1).await);
    // A session whose acceptor "restarts": its key is unknown to the new one.
    let target = std::sync::Arc::new(std::sync::Mutex::new(addr));
    let t = std::sync::Arc::clone(&target);
    let a = sotto_tokio::connect_session(
        move || {
            let addr = *t.lock().expect("lock");
            tokio::net::TcpStream::connect(addr)
        },
        session_config(),
    )
    .await
    .expect("connect");
    let (acc2, upstream2) = listen(Rt::Tokio, Transport::Tcp, session_config()).await;
    let Endpoint::Tcp(addr2) = upstream2 else { unreachable!() };
    *target.lock().expect("lock") = addr2;
    let b = acc.accept().await.expect("accept");
    // Dropping the acceptor and the session handle without a GOODBYE reaching `a`: kill
    // the link first by dropping everything on the acceptor side.
    drop(acc);
    drop(b);
    assert!(eventually(LIMIT, || a.ended().is_some()).await);
    let end = a.ended();
    assert!(
        end == Some(SessionEnd::Rejected) || end == Some(SessionEnd::PeerGoodbye { code: 0 }),
        "lost by REJECTED, or closed by the dropped handle's GOODBYE: {end:?}"
    );
    if end == Some(SessionEnd::Rejected) {
        assert_eq!(acc2.stats().endpoint.rejected, 1);
    }
}

/// A new session is yielded only once its session handshake has finished: a client that
/// sends a valid ClientHello, reads its ServerHello and goes silent, and one that drops its
/// link right after the ClientHello, are never seen by `accept`; both sessions are closed
/// and freed at the link's handshake deadline (1 s here). A normal client afterwards is
/// yielded, and it is the one `accept` returns.
async fn unfinished_session_handshake_run(acceptor: Rt) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (acc, upstream) = listen(acceptor, Transport::Tcp, session_config()).await;
    let Endpoint::Tcp(addr) = upstream.clone() else { unreachable!() };
    let hello =
        sotto_proto::wire::ClientHello { resume_key: None, last_received: None, ext: true, early: false }.encode();
    let mut first = (hello.len() as u32).to_le_bytes().to_vec();
    first.extend_from_slice(&hello);
    let started = std::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
    silent.write_all(&first).await.expect("write");
    let mut server_hello = vec![0u8; first.len()];
    within(LIMIT, "ServerHello", silent.read_exact(&mut server_hello)).await.expect("ServerHello");
    let decoded = sotto_proto::wire::ServerHello::decode(server_hello[4..].try_into().expect("len")).expect("decode");
    assert!(!decoded.rejected, "a fresh session was created");
    let mut dropper = tokio::net::TcpStream::connect(addr).await.expect("connect");
    dropper.write_all(&first).await.expect("write");
    assert!(eventually(LIMIT, || acc.stats().endpoint.sessions_created == 2).await);
    drop(dropper);
    // Before the deadline: both sessions live in the endpoint, neither is yielded.
    let early = tokio::time::timeout(Duration::from_millis(500), acc.accept()).await;
    assert!(early.is_err(), "a session whose handshake has not finished was yielded");
    if started.elapsed() < Duration::from_millis(900) {
        let s = acc.stats();
        assert_eq!((s.sessions, s.sessions_expired, s.endpoint.sessions_live), (0, 0, 2), "{s:?}");
    }
    // At the deadline both are closed and freed, still unseen.
    assert!(eventually(LIMIT, || acc.stats().sessions_expired == 2 && acc.stats().endpoint.sessions_live == 0).await);
    assert!(started.elapsed() >= Duration::from_millis(900), "closed before the deadline: {:?}", started.elapsed());
    assert_eq!(acc.stats().sessions, 0);
    let mut rest = [0u8; 64];
    loop {
        // The silent client's link is closed (after whatever the acceptor sent on closing).
        match within(LIMIT, "silent link closed", silent.read(&mut rest)).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    // A normal client is yielded: the pair can talk.
    let a = dial(Rt::Tokio, upstream, session_config()).await;
    let b = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    let pairs = within(LIMIT, "open", open_accept(&a, &b, 1)).await;
    within(LIMIT, "exchange", exchange_all(pairs, 50)).await;
    let s = acc.stats();
    assert_eq!((s.sessions, s.sessions_expired, s.endpoint.sessions_created), (1, 2, 3), "{s:?}");
}

#[tokio::test]
async fn unfinished_session_handshake_is_never_yielded_tokio() {
    unfinished_session_handshake_run(Rt::Tokio).await;
}

#[tokio::test]
async fn unfinished_session_handshake_is_never_yielded_smol() {
    unfinished_session_handshake_run(Rt::Smol).await;
}

/// A9: a panic in the application's connector (in the closure, or in the future it returns)
/// fails that dial like an I/O error: the session resumes over the next dial and delivers
/// everything once, in order; the runtime and the session's state are untouched.
#[tokio::test]
async fn a9_panicking_connector_fails_the_dial_not_the_session() {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    let (acc, upstream) = listen(Rt::Smol, Transport::Tcp, session_config()).await;
    let proxy = proxy_to(upstream, Chaos { budget: (1, 8 << 10), ..Chaos::kills(seed(), 6) });
    let Endpoint::Tcp(addr) = proxy.endpoint.clone() else { unreachable!() };
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let a = sotto_tokio::connect_session(
        move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            // Calls 1, 5, 9, ... panic in the closure; 3, 7, ... in the future; even ones dial.
            assert!(n % 4 != 1, "connector panics (call {n}, on purpose)");
            async move {
                assert!(n % 4 != 3, "connect future panics (call {n}, on purpose)");
                tokio::net::TcpStream::connect(addr).await
            }
        },
        session_config(),
    )
    .await
    .expect("the first dial succeeds");
    let b = acc.accept().await.expect("accept");
    let pairs = within(LIMIT, "open", open_accept(&a, &b, 2)).await;
    within(LIMIT, "exchange while every other redial panics", exchange_all(pairs, 1500)).await;
    let panicked = calls.load(Ordering::SeqCst) / 2;
    println!(
        "kills {} connector calls {} resumes {}",
        proxy.kills(),
        calls.load(Ordering::SeqCst),
        a.stats().session.conduit.resumes
    );
    assert!(panicked >= 2, "the connector should have panicked on some redials");
    assert!(a.stats().session.conduit.resumes >= 3);
    assert!(a.ended().is_none(), "the session outlived its connector's panics");
    assert_eq!(acc.stats().endpoint.sessions_created, 1, "every link resumed the one session");
}

/// A9: a connector that panics on the first connect fails `connect_session` at once with
/// an error (no retry until `connect_timeout`, no abort).
#[test]
fn a9_connector_panicking_on_the_first_connect_is_an_error() {
    smol::block_on(async {
        let started = std::time::Instant::now();
        let r = sotto_smol::connect_session(
            || async { panic!("connect future panics (on purpose)") as std::io::Result<smol::net::TcpStream> },
            session_config(),
        )
        .await;
        assert!(matches!(r, Err(sotto_smol::ConnectError::Io(_))), "{:?}", r.err());
        assert!(started.elapsed() < Duration::from_secs(2), "no retries: {:?}", started.elapsed());
    });
}

/// A9: a panic in the application's stream type ends that session (`Evicted`: its task's
/// state is gone) and nothing else: the runtime, the acceptor and another session go on.
#[tokio::test]
async fn a9_panicking_stream_ends_only_its_own_session() {
    use sotto_adapter_tests::streams::PanicOnRead;
    let (acc, upstream) = listen(Rt::Tokio, Transport::Tcp, session_config()).await;
    let Endpoint::Tcp(addr) = upstream.clone() else { unreachable!() };
    let doomed = sotto_tokio::connect_session(
        move || async move {
            let s = tokio::net::TcpStream::connect(addr).await?;
            Ok(PanicOnRead { inner: s, reads: 40 })
        },
        session_config(),
    )
    .await
    .expect("connect");
    let doomed_peer = acc.accept().await.expect("accept");
    let healthy = dial(Rt::Tokio, upstream, session_config()).await;
    let healthy_peer = acc.accept().await.expect("accept");
    // Traffic on the doomed session reaches its stream's panic; the sender (waiting for
    // credit the unread peer never grants, by then) hears that the session ended.
    let mut pairs = within(LIMIT, "open", open_accept(&doomed, &doomed_peer, 1)).await;
    let (mut x, _y) = pairs.pop().expect("pair");
    let sender = async {
        for i in 0.. {
            if let Err(e) = x.send(conn_message(0, i)).await {
                return e;
            }
        }
        unreachable!()
    };
    let e = within(LIMIT, "the doomed sender fails", sender).await;
    assert_eq!(e, ConnError::Ended(SessionEnd::Evicted));
    assert_eq!(doomed.ended(), Some(SessionEnd::Evicted));
    // Everything else is untouched.
    let pairs = within(LIMIT, "open", open_accept(&healthy, &healthy_peer, 2)).await;
    within(LIMIT, "the other session", exchange_all(pairs, 500)).await;
    let late = dial(Rt::Tokio, Endpoint::Tcp(addr), session_config()).await;
    drop(acc.accept().await.expect("the acceptor still accepts"));
    drop(late);
}

/// Every half of every connection in its own task on a 4-worker tokio runtime, so the
/// application's tasks and the drivers take a session's lock from different threads at once
/// (the contended path of the session lock: spinning, sleeping, waking), plus a task reading
/// `stats()` and events in a loop, all through a proxy killing links. Exactly once, in
/// order, on every connection, both ways. (Counted once with a temporary counter in the
/// lock: a run takes the contended path a few hundred times and sleeps some 35 times.)
#[test]
fn tokio_multi_thread_tasks_contend_for_the_session_lock() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().expect("runtime");
    rt.block_on(async {
        let seed = seed();
        println!("seed {seed}");
        let (acc, upstream) = listen(Rt::Tokio, Transport::Tcp, session_config()).await;
        let proxy = proxy_to(upstream, Chaos { budget: (1, 64 << 10), ..Chaos::kills(seed, 10) });
        let a = std::sync::Arc::new(dial(Rt::Tokio, proxy.endpoint.clone(), session_config()).await);
        let b = acc.accept().await.expect("accept");
        let pairs = within(LIMIT, "open", open_accept(&a, &b, 6)).await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let (a, stop) = (std::sync::Arc::clone(&a), std::sync::Arc::clone(&stop));
            tokio::spawn(async move {
                let mut looks = 0u64;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let _ = a.stats();
                    while futures::FutureExt::now_or_never(a.next_event()).flatten().is_some() {}
                    looks += 1;
                    tokio::task::yield_now().await;
                }
                looks
            })
        };
        let mut tasks = Vec::new();
        for (tag, (x, y)) in pairs.into_iter().enumerate() {
            let tag = tag as u32;
            let (mut xt, mut xr) = x.split();
            let (mut yt, mut yr) = y.split();
            tasks.push(tokio::spawn(async move { send_seq(&mut xt, tag, 3000).await }));
            tasks.push(tokio::spawn(async move { recv_seq(&mut yr, tag, 3000).await }));
            tasks.push(tokio::spawn(async move { send_seq(&mut yt, tag, 3000).await }));
            tasks.push(tokio::spawn(async move { recv_seq(&mut xr, tag, 3000).await }));
        }
        within(Duration::from_secs(60), "exchange on four workers", async {
            for t in tasks {
                t.await.expect("a sending or receiving task panicked");
            }
        })
        .await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let looks = watcher.await.expect("watcher");
        println!("kills {} stats looks {looks}", proxy.kills());
        assert!(looks > 0);
        assert!(proxy.kills() >= 3, "the proxy should have killed links");
        assert_eq!(acc.stats().endpoint.sessions_created, 1, "every link resumed the one session");
    });
}
