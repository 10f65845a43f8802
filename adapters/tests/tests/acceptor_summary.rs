//! Acceptor-wide stats (`stats().summary`) after a scripted sequence, over real sockets on
//! both runtimes, for the session acceptor and the raw one: sessions live and detached,
//! handshakes pending and completed, refusals by reason, and the bytes the sessions'
//! buffers hold (the sum of the sessions' own `buffer_bytes`). Also the raw conduit's
//! identity and control: id, peer address, `closed()`, the peer's GOODBYE, `reconnect_now`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use sotto_adapter_tests::proxy::{cuttable_tcp, Endpoint};
use sotto_adapter_tests::sessions::{dial, listen, session_config, Rt, Transport};
use sotto_adapter_tests::workload::{eventually, exchange, test_config, within};
use sotto_driver::{
    AcceptorSummary, ConduitEvent, Config, ConnectError, LinkDownCause, PeerAddr, SessionHandle, StableConduit,
};
use sotto_proto::wire::{ClientHello, HELLO_LEN};
use sotto_proto::{ResumeKey, SessionEnd};

const LIMIT: Duration = Duration::from_secs(20);

/// Runs `$body(Rt)` as a tokio test and as a smol test, in a module named `$name`.
macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn tokio() {
                super::$name(super::Rt::Tokio).await;
            }
            #[test]
            fn smol() {
                smol::block_on(super::$name(super::Rt::Smol));
            }
        }
    };
}

/// A plain TCP connection to `addr` that sends `bytes` and reads until the acceptor closes
/// it (on a thread of its own).
async fn poke(addr: SocketAddr, bytes: &'static [u8]) {
    smol::unblock(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(LIMIT)).expect("timeout");
        let _ = s.write_all(bytes);
        let _ = s.read_to_end(&mut Vec::new());
    })
    .await;
}

/// A length-prefixed ClientHello resuming with a key no session holds.
fn unknown_resume() -> &'static [u8] {
    let hello =
        ClientHello { resume_key: Some(ResumeKey([9; 16])), last_received: None, ext: true, early: false }.encode();
    let mut v = (HELLO_LEN as u32).to_le_bytes().to_vec();
    v.extend_from_slice(&hello);
    Vec::leak(v)
}

const GARBAGE: &[u8] = b"\x05\x00\x00\x00hello";

/// Wait until `summary()` satisfies `cond`; panics with the last summary otherwise.
async fn until(what: &str, summary: impl Fn() -> AcceptorSummary, cond: impl Fn(&AcceptorSummary) -> bool) {
    if !eventually(LIMIT, || cond(&summary())).await {
        panic!("{what}: {:?}", summary());
    }
}

fn server_config() -> Config {
    let mut c = session_config();
    c.acceptor.max_sessions = 2;
    c.acceptor.first_byte_timeout = Duration::from_millis(300);
    c.protocol.handshake_timeout = Duration::from_secs(1);
    c
}

async fn connect_to(rt: Rt, addr: SocketAddr) -> Result<SessionHandle, ConnectError> {
    match rt {
        Rt::Tokio => sotto_tokio::connect_session(move || tokio::net::TcpStream::connect(addr), session_config()).await,
        Rt::Smol => sotto_smol::connect_session(move || smol::net::TcpStream::connect(addr), session_config()).await,
    }
}

async fn session_acceptor_summary_after_a_scripted_sequence(rt: Rt) {
    let (acc, upstream) = listen(rt, Transport::Tcp, server_config()).await;
    let Endpoint::Tcp(addr) = upstream else { unreachable!("TCP") };
    let summary = || acc.stats().summary;
    assert_eq!(summary(), AcceptorSummary::default(), "nothing yet");

    // Two sessions, the second through a proxy that will go.
    let a1 = dial(rt, upstream.clone(), session_config()).await;
    let (proxy, paddr) = cuttable_tcp(addr);
    let a2 = connect_to(rt, paddr).await.expect("connect");
    let b1 = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    let b2 = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    until("two sessions", summary, |s| {
        s.sessions_live == 2 && s.sessions_detached == 0 && s.handshakes_completed == 2 && s.handshakes_pending == 0
    })
    .await;

    // A third: full (max_sessions 2, none detached).
    assert!(matches!(connect_to(rt, addr).await, Err(ConnectError::Full)));
    until("full", summary, |s| s.refused.full == 1).await;
    // Not a ClientHello; a resume nobody holds the key of.
    poke(addr, GARBAGE).await;
    until("a bad hello", summary, |s| s.refused.bad_hello == 1).await;
    poke(addr, unknown_resume()).await;
    until("an unknown key", summary, |s| s.refused.unknown_key == 1).await;

    // A silent link is pending until its first-byte deadline; a slow one until the whole
    // handshake's.
    let silent = TcpStream::connect(addr).expect("connect");
    let mut slow = TcpStream::connect(addr).expect("connect");
    slow.write_all(&[HELLO_LEN as u8]).expect("one byte");
    until("two pending", summary, |s| s.handshakes_pending == 2).await;
    until("the silent one's deadline", summary, |s| s.refused.first_byte_timeout == 1).await;
    until("the slow one's deadline", summary, |s| s.refused.handshake_timeout == 1 && s.handshakes_pending == 0).await;
    drop((silent, slow));

    // The proxy goes: a2's session is detached at the acceptor (a2 redials in vain).
    drop(proxy);
    until("one detached", summary, |s| s.sessions_live == 2 && s.sessions_detached == 1).await;

    // The buffers: the sessions' own figures, summed.
    let total = || b1.stats().buffer_bytes + b2.stats().buffer_bytes;
    assert!(eventually(LIMIT, || summary().buffer_bytes == total()).await, "{:?} vs {}", summary(), total());
    assert!(total() > 0);

    // One session closes: it is neither live nor holding buffers any more.
    let end = within(LIMIT, "close", b1.close(0x100, "done")).await;
    assert_eq!(end, SessionEnd::LocalClose { code: 0x100 });
    until("one live", summary, |s| s.sessions_live == 1 && s.sessions_detached == 1).await;
    assert!(eventually(LIMIT, || summary().buffer_bytes == b2.stats().buffer_bytes).await, "{:?}", summary());

    let s = summary();
    let r = s.refused;
    assert_eq!((r.full, r.bad_hello, r.unknown_key, r.first_byte_timeout, r.handshake_timeout), (1, 1, 1, 1, 1));
    assert_eq!((r.backlog_full, r.rate_limited, r.source_quota, r.pending_full), (0, 0, 0, 0), "{s:?}");
    assert_eq!(s.handshakes_completed, 2, "{s:?}");
    drop((a1, a2, b2));
}
on_both!(session_acceptor_summary_after_a_scripted_sequence);

/// A raw acceptor on `rt` and its address.
async fn raw_listen(rt: Rt, config: Config) -> (sotto_driver::Acceptor, SocketAddr) {
    match rt {
        Rt::Tokio => {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = l.local_addr().expect("addr");
            (sotto_tokio::raw::serve_tcp(l, config).expect("config"), addr)
        }
        Rt::Smol => {
            let l = smol::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = l.local_addr().expect("addr");
            (sotto_smol::raw::serve_tcp(l, config).expect("config"), addr)
        }
    }
}

/// A raw initiator on `rt` dialing `addr`.
async fn raw_connect(rt: Rt, addr: SocketAddr, config: Config) -> StableConduit {
    match rt {
        Rt::Tokio => sotto_tokio::raw::connect(move || tokio::net::TcpStream::connect(addr), config).await,
        Rt::Smol => sotto_smol::raw::connect(move || smol::net::TcpStream::connect(addr), config).await,
    }
    .expect("connect")
}

async fn raw_acceptor_summary_after_a_scripted_sequence(rt: Rt) {
    let mut config = test_config();
    config.acceptor.first_byte_timeout = Duration::from_millis(300);
    let (acc, addr) = raw_listen(rt, config).await;
    let summary = || acc.stats().summary;
    let c1 = raw_connect(rt, addr, test_config()).await;
    let (proxy, paddr) = cuttable_tcp(addr);
    let c2 = raw_connect(rt, paddr, test_config()).await;
    let s1 = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    let s2 = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    until("two sessions", summary, |s| s.sessions_live == 2 && s.sessions_detached == 0 && s.handshakes_completed == 2)
        .await;
    within(LIMIT, "exchange", exchange(&c1, &s1, 200)).await;

    poke(addr, GARBAGE).await;
    until("a bad hello", summary, |s| s.refused.bad_hello == 1).await;
    poke(addr, unknown_resume()).await;
    until("an unknown key", summary, |s| s.refused.unknown_key == 1).await;
    let silent = TcpStream::connect(addr).expect("connect");
    until("one pending", summary, |s| s.handshakes_pending == 1).await;
    until("the silent one's deadline", summary, |s| s.refused.first_byte_timeout == 1 && s.handshakes_pending == 0)
        .await;
    drop(silent);

    drop(proxy);
    until("one detached", summary, |s| s.sessions_live == 2 && s.sessions_detached == 1).await;
    let total = || s1.stats().buffer_bytes + s2.stats().buffer_bytes;
    assert!(eventually(LIMIT, || summary().buffer_bytes == total()).await, "{:?} vs {}", summary(), total());
    assert!(total() > 0);

    drop(s1);
    until("one live", summary, |s| s.sessions_live == 1).await;
    assert!(eventually(LIMIT, || summary().buffer_bytes == s2.stats().buffer_bytes).await, "{:?}", summary());
    let r = summary().refused;
    assert_eq!((r.bad_hello, r.unknown_key, r.first_byte_timeout, r.handshake_timeout), (1, 1, 1, 0), "{r:?}");
    assert_eq!((r.full, r.rate_limited, r.source_quota, r.pending_full, r.backlog_full), (0, 0, 0, 0, 0));
    drop((c1, c2, s2));
}
on_both!(raw_acceptor_summary_after_a_scripted_sequence);

async fn the_raw_conduit_reports_its_id_peer_and_the_peers_goodbye_and_reconnects_now(rt: Rt) {
    let (acc, addr) = raw_listen(rt, test_config()).await;
    let c = raw_connect(rt, addr, test_config()).await;
    let s = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    assert_ne!(c.id(), s.id(), "each session has its own id");
    assert_eq!(c.peer_addr(), Some(PeerAddr::Tcp(addr)), "the initiator's peer is the acceptor");
    match s.peer_addr() {
        Some(PeerAddr::Tcp(p)) => assert!(p.ip().is_loopback() && p != addr, "{p}"),
        other => panic!("the acceptor's peer is the initiator's TCP address: {other:?}"),
    }
    within(LIMIT, "exchange", exchange(&c, &s, 50)).await;
    assert_eq!(c.peer_goodbye(), None);
    assert!(c.last_dial_error().is_none());

    // A cycled link: the session resumes over a new one, with the same id.
    let id = c.id();
    c.reconnect_now();
    let mut events = Vec::new();
    within(LIMIT, "the resume", async {
        while let Some(e) = c.next_event().await {
            let resumed = matches!(e, ConduitEvent::LinkUp { resumed: true, .. });
            events.push(e);
            if resumed {
                break;
            }
        }
    })
    .await;
    assert!(events.contains(&ConduitEvent::LinkDown { cause: LinkDownCause::Reconnect }), "{events:?}");
    within(LIMIT, "exchange after the resume", exchange(&c, &s, 50)).await;
    assert_eq!(c.id(), id);

    let closed = futures::future::join(c.closed(), s.close(0x102, "raw bye"));
    let (end, local) = within(LIMIT, "close", closed).await;
    assert_eq!(local, SessionEnd::LocalClose { code: 0x102 });
    assert_eq!(end, SessionEnd::PeerGoodbye { code: 0x102 });
    let goodbye = c.peer_goodbye().expect("the peer's goodbye");
    assert_eq!((goodbye.code, goodbye.reason.as_str()), (0x102, "raw bye"));
    assert_eq!(within(LIMIT, "closed again", c.closed()).await, end, "closed() resolves at once once ended");
}
on_both!(the_raw_conduit_reports_its_id_peer_and_the_peers_goodbye_and_reconnects_now);
