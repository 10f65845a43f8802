//! Fair admission at the session acceptor, over real sockets (tokio, loopback TCP): one
//! source holding hundreds of idle connections does not keep another source from opening
//! and resuming sessions. The two sources are 127.0.0.1 (the idle flood) and 127.0.0.2 (the
//! clients served), the acceptor naming a source by its peer IP.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use sotto_adapter_tests::key_tap::{dial_from, KeyTap};
use sotto_adapter_tests::sessions::{exchange_all, open_accept};
use sotto_adapter_tests::workload::{eventually, test_config, within};
use sotto_tokio::{Config, SessionHandle};

const LIMIT: Duration = Duration::from_secs(30);
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// How long a session open or a resume may take while the flood holds its connections: far
/// below the whole-handshake deadline (10 s) the flood's links would hold a slot for without
/// per-source quotas, and below the first-byte deadline (2 s).
const SERVED_WITHIN: Duration = Duration::from_millis(1000);

/// An acceptor with the default admission limits and the default 10 s handshake deadline.
fn server_config() -> Config {
    let mut c = test_config();
    c.protocol.handshake_timeout = Duration::from_secs(10);
    c
}

async fn open_from(tap: &KeyTap, acc: &sotto_tokio::SessionAcceptor) -> (SessionHandle, SessionHandle, Duration) {
    let to = tap.addr;
    let t0 = Instant::now();
    let a =
        sotto_tokio::connect_session(move || tokio::net::TcpStream::connect(to), test_config()).await.expect("connect");
    let b = acc.accept().await.expect("accept");
    (a, b, t0.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_source_beyond_its_quota_do_not_delay_another_source() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let upstream: SocketAddr = l.local_addr().expect("addr");
    let acc = sotto_tokio::serve_sessions_tcp(l, server_config()).expect("config");
    // The other source's clients reach the acceptor through a relay dialing from 127.0.0.2,
    // which can cut their links to make them resume.
    let tap = KeyTap::start_from(upstream, Some(OTHER)).await;
    let (_a0, _b0, baseline) = within(LIMIT, "baseline open", open_from(&tap, &acc)).await;

    // More connections from 127.0.0.1 than its pending quota, none sending a byte.
    let quota = server_config().acceptor.max_pending_per_source;
    let flood = quota + 200;
    let mut idle = Vec::new();
    for _ in 0..flood {
        idle.push(dial_from(upstream, None).await.expect("idle connect"));
    }
    assert!(
        eventually(LIMIT, || acc.stats().links > flood as u64).await,
        "the acceptor took the baseline link and every idle one"
    );
    let ep = acc.stats().endpoint;
    assert!(ep.source_quota_refused >= 200, "the flood holds at most its quota: {ep:?}");
    assert!(ep.pending_links <= quota as u64, "the flood holds at most its quota: {ep:?}");

    // The other source opens sessions and resumes them, at its normal pace.
    let mut sessions = Vec::new();
    for n in 0..4 {
        let (a, b, took) = within(LIMIT, "open during the flood", open_from(&tap, &acc)).await;
        println!("session {n} opened in {took:?} (baseline {baseline:?})");
        assert!(took < SERVED_WITHIN, "session {n} took {took:?} to open during the flood");
        let pairs = within(LIMIT, "open a connection", open_accept(&a, &b, 1)).await;
        let pairs = within(LIMIT, "exchange", exchange_all(pairs, 20)).await;
        sessions.push((a, b, pairs));
    }
    let resumes_before = acc.stats().endpoint.resumes_routed;
    let t0 = Instant::now();
    tap.cut();
    let resumed = eventually(LIMIT, || {
        acc.stats().endpoint.resumes_routed >= resumes_before + 5
            && sessions.iter().all(|(a, _, _)| a.stats().link_established)
    })
    .await;
    let took = t0.elapsed();
    println!("5 sessions resumed in {took:?}");
    assert!(resumed, "every session resumed");
    assert!(took < SERVED_WITHIN, "resumes took {took:?} during the flood");
    for (_, _, pairs) in sessions {
        within(LIMIT, "exchange after the resume", exchange_all(pairs, 20)).await;
    }
    // The flood's own links are closed at the first-byte deadline.
    assert!(
        eventually(LIMIT, || acc.stats().endpoint.first_byte_expired >= 1 && acc.stats().endpoint.pending_links == 0)
            .await,
        "silent links closed at their first-byte deadline: {:?}",
        acc.stats().endpoint
    );
    drop(idle);
}

/// Links over their source's pending quota wait unread for a slot instead of being closed:
/// with the quota held by silent links, sessions dialed from the same source all connect on
/// their first link once the silent ones are closed at the first-byte deadline (no link
/// closed, so no redial: links taken = silent links + sessions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_over_their_source_quota_wait_for_a_slot_instead_of_being_closed() {
    const QUOTA: usize = 4;
    const SESSIONS: usize = 10;
    let mut config = server_config();
    config.acceptor.max_pending_per_source = QUOTA;
    config.acceptor.first_byte_timeout = Duration::from_millis(300);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let upstream: SocketAddr = l.local_addr().expect("addr");
    let acc = sotto_tokio::serve_sessions_tcp(l, config).expect("config");
    let mut silent = Vec::new();
    for _ in 0..QUOTA {
        silent.push(dial_from(upstream, None).await.expect("silent connect"));
    }
    assert!(eventually(LIMIT, || acc.stats().endpoint.pending_links == QUOTA as u64).await, "the quota is held");
    let dials: Vec<_> = (0..SESSIONS).map(|_| tokio::spawn(connect_from(upstream, None))).collect();
    let mut sessions = Vec::new();
    for d in dials {
        sessions.push(within(LIMIT, "a parked session connects", d).await.expect("task"));
    }
    let stats = acc.stats();
    println!("{stats:?}");
    assert!(stats.links_parked >= 1, "some links waited in the lot: {stats:?}");
    assert_eq!(stats.endpoint.source_quota_refused, stats.links_parked, "none was closed: {stats:?}");
    assert_eq!(stats.links, (QUOTA + SESSIONS) as u64, "every session connected on its first link: {stats:?}");
    assert_eq!(stats.endpoint.first_byte_expired, QUOTA as u64);
    drop((silent, sessions));
}

/// A mass disconnect from one address, far beyond its pending quota and the lot's base size
/// (`max_pending_handshakes`): the lot grows by one per detached session, so every session
/// resumes on the first link its client dials (none is closed, so no redial: one new link per
/// session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mass_reconnect_from_one_source_closes_no_link() {
    const N: usize = 60;
    const QUOTA: usize = 2;
    let mut config = server_config();
    config.acceptor.max_pending_handshakes = 4;
    config.acceptor.max_pending_per_source = QUOTA;
    config.acceptor.first_byte_timeout = Duration::from_millis(300);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let upstream: SocketAddr = l.local_addr().expect("addr");
    let acc = sotto_tokio::serve_sessions_tcp(l, config).expect("config");
    let tap = KeyTap::start_from(upstream, Some(OTHER)).await;
    let mut sessions = Vec::new();
    for _ in 0..N {
        let (a, b, _) = within(LIMIT, "open", open_from(&tap, &acc)).await;
        sessions.push((a, b));
    }
    // Silent links from the same address hold its quota, so every resume has to wait.
    let mut silent = Vec::new();
    for _ in 0..QUOTA {
        silent.push(dial_from(upstream, Some(OTHER)).await.expect("silent connect"));
    }
    assert!(eventually(LIMIT, || acc.stats().endpoint.pending_links == QUOTA as u64).await, "the quota is held");
    let before = acc.stats();
    tap.cut();
    let resumed = eventually(LIMIT, || {
        acc.stats().endpoint.resumes_routed >= before.endpoint.resumes_routed + N as u64
            && sessions.iter().all(|(a, _)| a.stats().link_established)
    })
    .await;
    let after = acc.stats();
    println!("{after:?}");
    assert!(resumed, "every session resumed: {after:?}");
    assert!(after.links_parked > before.links_parked, "links waited in the lot: {after:?}");
    assert_eq!(after.links - before.links, N as u64, "one new link per session, none closed: {after:?}");
    drop((sessions, silent));
}

/// Connect a session to `to` from `from` (127.0.0.1 when `None`).
async fn connect_from(to: SocketAddr, from: Option<IpAddr>) -> SessionHandle {
    sotto_tokio::connect_session(move || dial_from(to, from), test_config()).await.expect("connect")
}

/// A session over its source's share of the accept backlog waits (held, its hello read)
/// while another source gets in, and is routed once the application takes its source's
/// sessions: no link closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_holds_at_most_its_share_of_the_accept_backlog() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let upstream: SocketAddr = l.local_addr().expect("addr");
    let mut config = server_config();
    config.acceptor.accept_backlog = 8;
    config.acceptor.accept_backlog_per_source = 2;
    let acc = sotto_tokio::serve_sessions_tcp(l, config).expect("config");
    // Two sessions from 127.0.0.1 the application has not taken yet fill that source's share.
    let mut first = Vec::new();
    for _ in 0..2 {
        first.push(within(LIMIT, "open within the share", connect_from(upstream, None)).await);
    }
    // A third from that source waits, held...
    let third = tokio::spawn(connect_from(upstream, None));
    assert!(eventually(LIMIT, || acc.stats().links_held == 1).await, "held: {:?}", acc.stats());
    // ...while another source still gets in.
    let other = within(LIMIT, "the other source", connect_from(upstream, Some(OTHER))).await;
    assert!(!third.is_finished(), "the third waits while its source's share is taken");
    let accepted: Vec<SessionHandle> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(within(LIMIT, "accept", acc.accept()).await.expect("accept"));
        }
        v
    };
    // Once the application takes them, the source has room again: the third gets in.
    let third = within(LIMIT, "the third once there is room", third).await.expect("task");
    let fourth = within(LIMIT, "accept the third", acc.accept()).await.expect("accept");
    let stats = acc.stats();
    assert_eq!(stats.sessions, 4, "{stats:?}");
    assert_eq!((stats.backlog_full, stats.backlog_source_full), (0, 0), "none closed: {stats:?}");
    assert_eq!(stats.links, 4, "no redial: {stats:?}");
    drop((first, other, accepted, third, fourth));
}

/// A sotto client tells a full acceptor (`ConnectError::Full`, a fresh connect) from an
/// unknown key (its session ends `Rejected`: the acceptor restarted and lost it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_tells_a_full_acceptor_from_an_unknown_key() {
    let mut config = server_config();
    config.acceptor.max_sessions = 1;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let upstream: SocketAddr = l.local_addr().expect("addr");
    let first = sotto_tokio::serve_sessions_tcp(l, config).expect("config");
    let tap = KeyTap::start(upstream).await;
    let (a, b, _) = within(LIMIT, "open", open_from(&tap, &first)).await;
    // The acceptor goes away with the session; a new one listens on the same address.
    drop(first);
    // (The old listener closes once its task has been dropped on the runtime.)
    let mut rebound = None;
    for _ in 0..200 {
        match tokio::net::TcpListener::bind(upstream).await {
            Ok(l) => {
                rebound = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    let l = rebound.expect("rebind");
    let second = sotto_tokio::serve_sessions_tcp(l, config).expect("config");
    // Only now (no old listener left to answer) is the session's link cut and the session
    // dropped: its resume reaches the new acceptor, which never heard of its key.
    tap.cut();
    drop(b);
    assert!(eventually(LIMIT, || a.ended().is_some()).await, "the resume was answered");
    assert_eq!(a.ended(), Some(sotto_tokio::SessionEnd::Rejected), "an unknown key: the session is lost");
    // The new acceptor fills up: the next fresh session is told it is full.
    let c = within(LIMIT, "the first session", connect_from(upstream, None)).await;
    let _held = within(LIMIT, "accept", second.accept()).await.expect("accept");
    let full =
        within(LIMIT, "refused", sotto_tokio::connect_session(move || dial_from(upstream, None), test_config())).await;
    assert!(matches!(full, Err(sotto_tokio::ConnectError::Full)), "told full: {full:?}");
    let ep = second.stats().endpoint;
    assert_eq!((ep.rejected, ep.rejected_full), (1, 1), "{ep:?}");
    drop(c);
}

/// A link that sends nothing is closed at the first-byte deadline and counted, not charged
/// to its source; one that starts at once and then dawdles has the whole handshake deadline.
#[tokio::test]
async fn a_silent_link_is_closed_at_the_first_byte_deadline_and_a_slow_one_is_not() {
    use sotto_proto::wire::{ClientHello, ServerHello, HELLO_LEN, LEN_PREFIX};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let first_byte = Duration::from_millis(300);
    let mut config = server_config();
    config.acceptor.first_byte_timeout = first_byte;
    config.protocol.handshake_timeout = Duration::from_secs(5);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let acc = sotto_tokio::serve_sessions_tcp(l, config).expect("config");

    let t0 = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut hello = (HELLO_LEN as u32).to_le_bytes().to_vec();
    hello.extend_from_slice(&ClientHello { resume_key: None, last_received: None, ext: true, early: false }.encode());
    slow.write_all(&hello[..1]).await.expect("first byte");

    let mut buf = [0u8; 64];
    let n = within(LIMIT, "the silent link closed", silent.read(&mut buf)).await;
    let closed_after = t0.elapsed();
    assert!(matches!(n, Ok(0) | Err(_)), "closed unanswered: {n:?}");
    println!("silent link closed after {closed_after:?}");
    assert!(closed_after >= first_byte, "not before its deadline: {closed_after:?}");
    assert!(closed_after < first_byte * 4, "at its deadline, not the handshake's: {closed_after:?}");
    let ep = acc.stats().endpoint;
    assert_eq!((ep.first_byte_expired, ep.handshakes_expired), (1, 1), "{ep:?}");

    // Past the first-byte deadline, the slow link finishes its hello and is answered.
    tokio::time::sleep(first_byte * 2).await;
    slow.write_all(&hello[1..]).await.expect("rest of the hello");
    let mut reply = [0u8; LEN_PREFIX + HELLO_LEN];
    within(LIMIT, "the ServerHello", slow.read_exact(&mut reply)).await.expect("answered");
    let sh = ServerHello::decode(&reply[LEN_PREFIX..]).expect("a ServerHello");
    assert!(!sh.rejected, "a new session for the slow link");
    assert_eq!(acc.stats().endpoint.first_byte_expired, 1);
}
