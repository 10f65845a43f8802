//! Admission that delays instead of refusing, over real sockets (tokio, loopback TCP): a fresh
//! session over its source's accept-backlog share is held (its hello read) until the
//! application takes one of that source's sessions, and closed at its handshake deadline if
//! the application never does; links parked over their source's pending quota are closed at
//! their deadline, and one source parks at most its cap. Sources are 127.0.0.1 and
//! 127.0.0.2, the acceptor naming a source by its peer IP.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use sotto_adapter_tests::key_tap::dial_from;
use sotto_adapter_tests::workload::{eventually, test_config, within};
use sotto_proto::wire::{ClientHello, HELLO_LEN};
use sotto_tokio::{Config, SessionHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(30);
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn server_config() -> Config {
    let mut c = test_config();
    c.protocol.handshake_timeout = Duration::from_secs(10);
    c
}

async fn serve(config: Config) -> (sotto_tokio::SessionAcceptor, SocketAddr) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    (sotto_tokio::serve_sessions_tcp(l, config).expect("config"), addr)
}

/// Connect a session to `to` from `from` (127.0.0.1 when `None`).
async fn connect_from(to: SocketAddr, from: Option<IpAddr>) -> SessionHandle {
    sotto_tokio::connect_session(move || dial_from(to, from), test_config()).await.expect("connect")
}

/// Connect a session to `to` from 127.0.0.1 with a client that waits up to 10 s for its
/// ServerHello (a held or parked link is answered late, not closed).
async fn connect_patient(to: SocketAddr) -> SessionHandle {
    let mut config = test_config();
    config.protocol.handshake_timeout = Duration::from_secs(10);
    sotto_tokio::connect_session(move || dial_from(to, None), config).await.expect("connect")
}

/// A fresh ClientHello with its length prefix.
fn fresh_hello() -> Vec<u8> {
    let mut hello = (HELLO_LEN as u32).to_le_bytes().to_vec();
    hello.extend_from_slice(&ClientHello { resume_key: None, last_received: None, ext: true, early: false }.encode());
    hello
}

/// Whether the acceptor closed `s` (a read sees the end, or an error) within `d`.
async fn closed_within(s: &mut TcpStream, d: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(tokio::time::timeout(d, s.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
}

/// Clients from one address open sessions all at once, far faster than the application
/// takes them, with a small share (4) and a pending quota of the same size: every session
/// is established on the first link its client dialed and accepted, none turned away at the
/// share (before, each one over the share was closed and its client redialed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_over_their_source_share_wait_held_and_all_get_in_without_a_redial() {
    const SHARE: usize = 4;
    const SESSIONS: usize = 40;
    let mut config = server_config();
    config.acceptor.accept_backlog_per_source = SHARE;
    config.acceptor.max_pending_per_source = SHARE;
    let (acc, addr) = serve(config).await;
    let dials: Vec<_> = (0..SESSIONS).map(|_| tokio::spawn(connect_patient(addr))).collect();
    // The application takes one session every 10 ms.
    let mut accepted = Vec::new();
    for _ in 0..SESSIONS {
        tokio::time::sleep(Duration::from_millis(10)).await;
        accepted.push(within(LIMIT, "accept", acc.accept()).await.expect("accept"));
    }
    let mut clients = Vec::new();
    for d in dials {
        clients.push(within(LIMIT, "a client connects", d).await.expect("task"));
    }
    let stats = acc.stats();
    println!("{stats:?}");
    assert_eq!(stats.sessions, SESSIONS as u64, "{stats:?}");
    assert_eq!(stats.backlog_source_full, 0, "none turned away at the share: {stats:?}");
    assert_eq!(stats.backlog_full, 0, "{stats:?}");
    assert!(stats.links_held > 0, "sessions over the share waited held: {stats:?}");
    assert_eq!(stats.held_expired, 0, "{stats:?}");
    assert_eq!(stats.links, SESSIONS as u64, "every client connected on its first link (no redial): {stats:?}");
    assert_eq!(
        stats.endpoint.source_quota_refused, stats.links_parked,
        "each parked link counted once at the quota, not again on every retry: {stats:?}"
    );
    for c in &clients {
        assert!(c.stats().link_established, "{:?}", c.stats());
    }
    drop((clients, accepted));
}

/// A held session whose application never takes its source's sessions is closed at its
/// handshake deadline, uncharged (not an expired handshake of the endpoint's), and the
/// pending slot it kept is free again: with one pending slot in all, another source's
/// link is refused while the held one waits and gets in after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_session_never_accepted_is_closed_at_its_deadline_and_frees_its_pending_slot() {
    let deadline = Duration::from_millis(1000);
    let mut config = server_config();
    config.protocol.handshake_timeout = deadline;
    config.acceptor.accept_backlog_per_source = 1;
    config.acceptor.max_pending_handshakes = 1;
    config.acceptor.max_pending_per_source = 1;
    let (acc, addr) = serve(config).await;
    // The first session from 127.0.0.1 fills its share; the application never takes it.
    let first = within(LIMIT, "the first session", connect_from(addr, None)).await;
    // A second fresh hello from there is held, keeping the only pending slot.
    let mut held = dial_from(addr, None).await.expect("connect");
    held.write_all(&fresh_hello()).await.expect("hello");
    let t0 = Instant::now();
    assert!(eventually(LIMIT, || acc.stats().links_held == 1).await, "held: {:?}", acc.stats());
    let refused_before = acc.stats().endpoint.links_refused;
    let mut other = dial_from(addr, Some(OTHER)).await.expect("connect");
    assert!(closed_within(&mut other, LIMIT).await, "the other source finds no pending slot");
    assert!(acc.stats().endpoint.links_refused > refused_before, "{:?}", acc.stats());
    assert!(!closed_within(&mut held, Duration::from_millis(100)).await, "the held link still waits");

    assert!(closed_within(&mut held, LIMIT).await, "the held link is closed");
    let waited = t0.elapsed();
    println!("held link closed after {waited:?}");
    assert!(waited >= deadline - Duration::from_millis(200), "not before its deadline: {waited:?}");
    let stats = acc.stats();
    assert_eq!((stats.links_held, stats.held_expired, stats.backlog_source_full), (1, 1, 0), "{stats:?}");
    assert_eq!(stats.endpoint.handshakes_expired, 0, "not an expired handshake: {:?}", stats.endpoint);
    assert_eq!(stats.endpoint.pending_links, 0, "its pending slot is free: {:?}", stats.endpoint);

    // The slot is free: the other source's session gets in.
    let second = within(LIMIT, "the other source's session", connect_from(addr, Some(OTHER))).await;
    let a = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    let b = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    assert_eq!(acc.stats().sessions, 2);
    drop((first, second, a, b));
}

/// Links parked over their source's pending quota are closed at their deadline
/// (`handshake_timeout` after they were parked) when no slot came free for them by then;
/// and one source parks at most its cap (the lot less a reserve of one pending share for
/// the others), so another source's over-quota link still gets parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_links_close_at_their_deadline_and_one_source_cannot_fill_the_lot() {
    let deadline = Duration::from_millis(1800);
    let mut config = server_config();
    config.protocol.handshake_timeout = deadline;
    // A silent pending link holds its source's one slot for 1.2 s.
    config.acceptor.first_byte_timeout = Duration::from_millis(1200);
    config.acceptor.max_pending_handshakes = 4;
    config.acceptor.max_pending_per_source = 1;
    let (acc, addr) = serve(config).await;
    // The lot holds 4 links; one source parks at most 4 - 1 = 3.
    let t0 = Instant::now();
    let mut a = Vec::new();
    for n in 1..=6u64 {
        a.push(dial_from(addr, None).await.expect("connect"));
        assert!(eventually(LIMIT, || acc.stats().links == n).await, "taken in order");
    }
    let stats = acc.stats();
    assert_eq!((stats.endpoint.pending_links, stats.links_parked), (1, 3), "{stats:?}");
    // The two past the source's cap are closed at once.
    assert!(closed_within(&mut a[4], LIMIT).await && closed_within(&mut a[5], LIMIT).await, "closed");
    // Another source's over-quota link still finds room.
    let b: Vec<TcpStream> = {
        let mut v = Vec::new();
        for _ in 0..2 {
            v.push(dial_from(addr, Some(OTHER)).await.expect("connect"));
        }
        v
    };
    assert!(eventually(LIMIT, || acc.stats().links_parked == 4).await, "the other source parks: {:?}", acc.stats());
    // The premise: everything parked within 0.5 s, so the parked links' deadline (1.8 s
    // after) comes between the first round of silent links closing (1.2 s) and the second
    // (2.4 s).
    assert!(t0.elapsed() < Duration::from_millis(500), "set up in time: {:?}", t0.elapsed());
    // At 1.2 s the first silent links are closed and one parked link of each source starts;
    // at 1.8 s the two others from 127.0.0.1 are still parked and closed at their deadline.
    assert!(
        eventually(LIMIT, || acc.stats().parked_expired == 2).await,
        "parked links closed at their deadline: {:?}",
        acc.stats()
    );
    let waited = t0.elapsed();
    println!("parked links closed after {waited:?}");
    assert!(waited >= deadline - Duration::from_millis(100), "not before their deadline: {waited:?}");
    assert!(closed_within(&mut a[2], LIMIT).await && closed_within(&mut a[3], LIMIT).await);
    let stats = acc.stats();
    println!("{stats:?}");
    assert_eq!(stats.links_parked, 4, "{stats:?}");
    drop((a, b));
}
