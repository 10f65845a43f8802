//! The acceptor's ownership of sessions, over real sockets (tokio, loopback TCP): a resume
//! presenting an old key is refused without touching the live link, at the session acceptor
//! and at the raw (vox-compatible) acceptor; and an acceptor's sessions move data without
//! the endpoint's lock (each session is locked on its own).

use std::time::Duration;

use sotto_adapter_tests::key_tap::{resume_with, KeyTap};
use sotto_adapter_tests::sessions::{exchange_all, open_accept, session_config};
use sotto_adapter_tests::workload::{eventually, exchange, test_config, within};
use sotto_proto::wire::{ServerHello, HELLO_LEN, LEN_PREFIX};
use sotto_tokio::SessionEvent;

const LIMIT: Duration = Duration::from_secs(20);

/// A REJECTED reply, length-prefixed, is all the acceptor wrote.
fn assert_rejected(reply: &[u8]) {
    assert_eq!(reply.len(), LEN_PREFIX + HELLO_LEN, "one ServerHello, then the link closed: {reply:?}");
    assert_eq!(&reply[LEN_PREFIX..], &ServerHello::rejected().encode()[..], "REJECTED");
}

#[tokio::test]
async fn session_acceptor_refused_resume_with_an_old_key_never_touches_the_live_link() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let upstream = l.local_addr().expect("addr");
    let acc = sotto_tokio::serve_sessions_tcp(l, session_config()).expect("config");
    let tap = KeyTap::start(upstream).await;
    let to = tap.addr;
    let a = sotto_tokio::connect_session(move || tokio::net::TcpStream::connect(to), session_config())
        .await
        .expect("connect");
    let b = acc.accept().await.expect("accept");
    let pairs = within(LIMIT, "open", open_accept(&a, &b, 1)).await;
    let pairs = within(LIMIT, "exchange", exchange_all(pairs, 50)).await;
    // Cut the link: the session resumes presenting key 1 and is issued key 2, which the
    // traffic that follows uses (retiring key 1).
    tap.cut();
    assert!(eventually(LIMIT, || tap.keys().len() >= 2 && a.stats().link_established).await, "resumed");
    let pairs = within(LIMIT, "exchange after the resume", exchange_all(pairs, 50)).await;
    let old = tap.keys()[0];
    let (a_before, b_before) = (a.stats(), b.stats());
    while futures::FutureExt::now_or_never(a.next_event()).flatten().is_some() {}

    // Anyone who saw key 1 tries it, straight to the acceptor.
    let reply = within(LIMIT, "the refused resume", resume_with(upstream, old)).await;
    assert_rejected(&reply);

    let pairs = within(LIMIT, "exchange after the refused resume", exchange_all(pairs, 50)).await;
    let (a_after, b_after) = (a.stats(), b.stats());
    assert_eq!(b_after.link_downs, b_before.link_downs, "the acceptor's live link was not touched");
    assert_eq!(b_after.session.conduit.link_drops.superseded, b_before.session.conduit.link_drops.superseded);
    assert_eq!(a_after.link_downs, a_before.link_downs, "the initiator's link never went down");
    assert_eq!(a_after.session.conduit.resumes, a_before.session.conduit.resumes, "no resume followed");
    assert!(futures::FutureExt::now_or_never(a.next_event())
        .flatten()
        .is_none_or(|e| !matches!(e, SessionEvent::Resumed { .. })));
    let ep = acc.stats().endpoint;
    assert_eq!(ep.rejected, 1, "refused by the session, counted once: {ep:?}");
    assert_eq!(tap.keys().len(), 2, "no key issued for the refused resume");
    drop(pairs);
}

#[tokio::test]
async fn raw_acceptor_refused_resume_with_an_old_key_never_touches_the_live_link() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let upstream = l.local_addr().expect("addr");
    let acc = sotto_tokio::raw::serve_tcp(l, test_config()).expect("config");
    let tap = KeyTap::start(upstream).await;
    let to = tap.addr;
    let a =
        sotto_tokio::raw::connect(move || tokio::net::TcpStream::connect(to), test_config()).await.expect("connect");
    let b = acc.accept().await.expect("accept");
    within(LIMIT, "exchange", exchange(&a, &b, 50)).await;
    tap.cut();
    assert!(eventually(LIMIT, || tap.keys().len() >= 2 && a.stats().link_established).await, "resumed");
    within(LIMIT, "exchange after the resume", exchange(&a, &b, 50)).await;
    let old = tap.keys()[0];
    let (a_before, b_before) = (a.stats(), b.stats());

    let reply = within(LIMIT, "the refused resume", resume_with(upstream, old)).await;
    assert_rejected(&reply);

    within(LIMIT, "exchange after the refused resume", exchange(&a, &b, 50)).await;
    let (a_after, b_after) = (a.stats(), b.stats());
    assert_eq!(b_after.link_downs, b_before.link_downs, "the acceptor's live link was not touched");
    assert_eq!(b_after.conduit.link_drops.superseded, b_before.conduit.link_drops.superseded);
    assert_eq!(a_after.link_downs, a_before.link_downs, "the initiator's link never went down");
    assert_eq!(a_after.conduit.resumes, a_before.conduit.resumes, "no resume followed");
    assert_eq!(tap.keys().len(), 2, "no key issued for the refused resume");
}

/// Two sessions of one acceptor exchange data while the test holds the endpoint's lock: no
/// send, receive or driver step of a session needs it (on a design where the endpoint owns
/// the sessions, every one of them does, and this test hangs).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sessions_of_one_acceptor_move_data_with_the_endpoint_lock_held() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let acc = sotto_tokio::serve_sessions_tcp(l, session_config()).expect("config");
    let mut sides = Vec::new();
    for _ in 0..2 {
        let a = sotto_tokio::connect_session(move || tokio::net::TcpStream::connect(addr), session_config())
            .await
            .expect("connect");
        let b = acc.accept().await.expect("accept");
        let pairs = within(LIMIT, "open", open_accept(&a, &b, 2)).await;
        sides.push((a, b, pairs));
    }
    let held = acc.hold_endpoint_lock();
    let runs: Vec<_> =
        sides.iter_mut().map(|(_, _, pairs)| tokio::spawn(exchange_all(std::mem::take(pairs), 500))).collect();
    // Wait on this thread without touching any session, then release the lock whatever
    // happened, so that a failure is reported rather than left hanging.
    // (The timer runs on async-io's own thread: it fires even if every worker is stuck.)
    let all = futures::future::join_all(runs);
    let done = match futures::future::select(all, async_io::Timer::after(LIMIT)).await {
        futures::future::Either::Left((done, _)) => Some(done),
        futures::future::Either::Right(_) => None,
    };
    drop(held);
    let done = done.expect("both sessions exchanged data with the endpoint's lock held");
    assert!(done.iter().all(Result::is_ok));
    assert_eq!(done.len(), 2);
    for (a, b, _) in &sides {
        assert!(a.stats().link_established && b.stats().link_established);
    }
}

/// Read until the acceptor closes the link; returns how long after `from` that was.
async fn closed_after(s: &mut tokio::net::TcpStream, from: std::time::Instant) -> Duration {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 256];
    loop {
        match within(LIMIT, "link closed", s.read(&mut buf)).await {
            Ok(0) | Err(_) => return from.elapsed(),
            Ok(_) => {}
        }
    }
}

/// Links whose handshake expires are closed at the handshake deadline (1 s here), not a
/// `drain_timeout` (10 s here) later: a link that never sends its ClientHello, and one whose
/// new session never finishes its session handshake (nothing is owed on either).
#[tokio::test]
async fn expired_handshakes_are_closed_at_their_deadline_not_a_drain_timeout_later() {
    use tokio::io::AsyncWriteExt;
    let mut config = session_config();
    config.protocol.drain_timeout = Duration::from_secs(10);
    // No keepalive verdict before the deadline (the silent client answers no ping).
    config.protocol.ping_interval = Duration::from_secs(10);
    config.protocol.pong_timeout = Duration::from_secs(20);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let acc = sotto_tokio::serve_sessions_tcp(l, config).expect("config");
    let deadline = config.protocol.handshake_timeout;
    let slack = Duration::from_secs(4);

    let started = std::time::Instant::now();
    let mut mute = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let hello =
        sotto_proto::wire::ClientHello { resume_key: None, last_received: None, ext: true, early: false }.encode();
    let mut first = (hello.len() as u32).to_le_bytes().to_vec();
    first.extend_from_slice(&hello);
    let mut silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
    silent.write_all(&first).await.expect("write");
    let (mute_closed, silent_closed) =
        futures::future::join(closed_after(&mut mute, started), closed_after(&mut silent, started)).await;
    for (what, at) in [("no ClientHello", mute_closed), ("no session handshake", silent_closed)] {
        assert!(
            at >= deadline.saturating_sub(Duration::from_millis(100)),
            "{what}: closed before the deadline ({at:?})"
        );
        assert!(at < deadline + slack, "{what}: closed {at:?} after connecting, not at the {deadline:?} deadline");
    }
    let s = acc.stats();
    assert_eq!((s.sessions, s.sessions_expired), (0, 1), "{s:?}");
}

/// A full acceptor (every one of `max_sessions` live and attached) refuses a new session as
/// full, counted apart from unknown keys.
#[tokio::test]
async fn a_full_acceptor_refuses_a_new_session_as_full_not_as_an_unknown_key() {
    let mut config = session_config();
    config.acceptor.max_sessions = 1;
    config.dial.connect_timeout = Duration::from_secs(2);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let acc = sotto_tokio::serve_sessions_tcp(l, config).expect("config");
    let a = sotto_tokio::connect_session(move || tokio::net::TcpStream::connect(addr), config).await.expect("connect");
    let _b = acc.accept().await.expect("accept");
    let second =
        within(LIMIT, "refused", sotto_tokio::connect_session(move || tokio::net::TcpStream::connect(addr), config))
            .await;
    assert!(matches!(second, Err(sotto_tokio::ConnectError::Full)), "told full: {second:?}");
    let ep = acc.stats().endpoint;
    assert!(ep.rejected_full >= 1, "{ep:?}");
    assert_eq!(ep.rejected, 0, "no resume was refused: {ep:?}");
    assert_eq!(ep.sessions_live, 1);
    assert!(a.stats().link_established);
}
