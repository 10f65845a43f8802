//! What a server's `tracing` logs show, over real sockets on both runtimes, recorded by a
//! test subscriber: every session's task runs in a `sotto_session` span with its id, role,
//! API and peer address; link events are DEBUG inside it, nothing is logged per message; a
//! peer's GOODBYE is INFO with its code and reason, a lost session WARN with its reason; the
//! acceptor logs a full acceptor (WARN), a refused resume and a link refused by a limit
//! (INFO, naming the limit) with the link's peer and source.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use sotto_adapter_tests::capture::{install, Capture, EventRecord};
use sotto_adapter_tests::proxy::{cuttable_tcp, Endpoint};
use sotto_adapter_tests::sessions::{dial, listen, open_accept, session_config, Rt, Transport};
use sotto_adapter_tests::workload::{eventually, within};
use sotto_driver::{Config, ConnectError, SessionHandle};
use sotto_proto::wire::{ClientHello, HELLO_LEN};
use sotto_proto::{ResumeKey, SessionEnd};
use tracing::Level;

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

/// The id of the `sotto_session` span of the session numbered `session`.
fn span_of(capture: &Capture, session: u64) -> (u64, std::collections::BTreeMap<String, String>) {
    let spans = capture.spans_where("sotto_session", "session", &session.to_string());
    assert_eq!(spans.len(), 1, "one span per session: {spans:?}");
    let (id, record) = spans.into_iter().next().expect("one span");
    (id, record.fields)
}

/// The events emitted inside span `span`.
fn events_in(capture: &Capture, span: u64) -> Vec<EventRecord> {
    capture.events().into_iter().filter(|e| e.span == Some(span)).collect()
}

async fn the_session_span_carries_id_role_and_peer_and_nothing_is_logged_per_message(rt: Rt) {
    let capture = install();
    let _turn = capture.exclusive(Level::DEBUG);
    let (acc, upstream) = listen(rt, Transport::Tcp, session_config()).await;
    let a = dial(rt, upstream, session_config()).await;
    let b = within(LIMIT, "accept", acc.accept()).await.expect("accept");

    let (a_span, a_fields) = span_of(capture, a.id().0);
    assert_eq!(a_fields.get("role").map(String::as_str), Some("initiator"), "{a_fields:?}");
    assert_eq!(a_fields.get("api").map(String::as_str), Some("session"), "{a_fields:?}");
    let a_peer = a.peer_addr().expect("a TCP peer").to_string();
    assert_eq!(a_fields.get("peer"), Some(&a_peer), "the initiator's span names the acceptor");
    let (b_span, b_fields) = span_of(capture, b.id().0);
    assert_eq!(b_fields.get("role").map(String::as_str), Some("acceptor"), "{b_fields:?}");
    let b_peer = b.peer_addr().expect("a TCP peer").to_string();
    assert_eq!(b_fields.get("peer"), Some(&b_peer), "the acceptor's span names the initiator");
    assert_ne!(a_peer, b_peer);

    // Link events are DEBUG, inside the session's span, with the link's id.
    let up = |span| events_in(capture, span).into_iter().filter(|e| e.message.contains("link up")).collect::<Vec<_>>();
    assert!(eventually(LIMIT, || !up(a_span).is_empty() && !up(b_span).is_empty()).await, "link up on both sides");
    for e in up(a_span).iter().chain(&up(b_span)) {
        assert_eq!(e.level, Level::DEBUG, "{e:?}");
        assert!(e.fields.contains_key("link"), "{e:?}");
    }

    // 2,000 messages each way: nothing logged in either session's span meanwhile.
    let before = (events_in(capture, a_span).len(), events_in(capture, b_span).len());
    let mut pairs = within(LIMIT, "open", open_accept(&a, &b, 1)).await;
    let (x, y) = pairs.pop().expect("one pair");
    let (mut xt, mut xr) = x.split();
    let (mut yt, mut yr) = y.split();
    within(LIMIT, "exchange", async {
        futures::future::join4(
            async {
                for i in 0..2000u32 {
                    xt.send(Bytes::from(i.to_le_bytes().to_vec())).await.expect("send");
                }
            },
            async {
                for i in 0..2000u32 {
                    assert_eq!(yr.recv().await.expect("recv"), Bytes::from(i.to_le_bytes().to_vec()));
                }
            },
            async {
                for i in 0..2000u32 {
                    yt.send(Bytes::from(i.to_le_bytes().to_vec())).await.expect("send");
                }
            },
            async {
                for i in 0..2000u32 {
                    assert_eq!(xr.recv().await.expect("recv"), Bytes::from(i.to_le_bytes().to_vec()));
                }
            },
        )
        .await;
    })
    .await;
    let after = (events_in(capture, a_span).len(), events_in(capture, b_span).len());
    assert_eq!(after, before, "events during the exchange: {:?}", &events_in(capture, a_span)[before.0..]);

    // A cycled link: down and up again, DEBUG, in the initiator's span.
    let ups = up(a_span).len();
    a.reconnect_now();
    assert!(eventually(LIMIT, || up(a_span).len() > ups).await, "the new link's up");
    let downs: Vec<EventRecord> =
        events_in(capture, a_span).into_iter().filter(|e| e.message.contains("link down")).collect();
    assert!(!downs.is_empty() && downs.iter().all(|e| e.level == Level::DEBUG), "{downs:?}");

    // The acceptor says goodbye: INFO in the initiator's span, with the code and reason.
    let end = within(LIMIT, "close", b.close(0x101, "bye now")).await;
    assert_eq!(end, SessionEnd::LocalClose { code: 0x101 });
    assert_eq!(within(LIMIT, "the peer's end", a.closed()).await, SessionEnd::PeerGoodbye { code: 0x101 });
    let goodbye = |capture: &Capture| {
        events_in(capture, a_span).into_iter().find(|e| e.message.contains("ended by the peer's goodbye"))
    };
    assert!(eventually(LIMIT, || goodbye(capture).is_some()).await, "the goodbye is logged");
    let e = goodbye(capture).expect("logged");
    assert_eq!(e.level, Level::INFO);
    assert_eq!(e.fields.get("code").map(String::as_str), Some("257"));
    assert_eq!(e.fields.get("reason").map(String::as_str), Some("bye now"));
    assert!(
        events_in(capture, a_span)
            .iter()
            .chain(&events_in(capture, b_span))
            .all(|e| e.level > Level::INFO || e.message.contains("goodbye")),
        "nothing else above DEBUG: {:?}",
        events_in(capture, a_span)
    );
}
on_both!(the_session_span_carries_id_role_and_peer_and_nothing_is_logged_per_message);

/// An initiator whose links go through a proxy until it is dropped; after that every dial
/// fails.
async fn dial_cuttable(
    rt: Rt,
    to: SocketAddr,
    config: Config,
) -> (SessionHandle, sotto_adapter_tests::proxy::ChaosProxy) {
    let (proxy, paddr) = cuttable_tcp(to);
    let a = match rt {
        Rt::Tokio => {
            sotto_tokio::connect_session(move || async move { tokio::net::TcpStream::connect(paddr).await }, config)
                .await
        }
        Rt::Smol => {
            sotto_smol::connect_session(move || async move { smol::net::TcpStream::connect(paddr).await }, config).await
        }
    };
    (a.expect("connect"), proxy)
}

async fn a_lost_session_is_a_warning_in_its_span_with_the_reason(rt: Rt) {
    let capture = install();
    let _turn = capture.exclusive(Level::INFO);
    let (acc, upstream) = listen(rt, Transport::Tcp, session_config()).await;
    let Endpoint::Tcp(addr) = upstream else { unreachable!("TCP") };
    let mut config = session_config();
    config.protocol.recovery_timeout = Duration::from_millis(300);
    let (a, proxy) = dial_cuttable(rt, addr, config).await;
    let _b = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    let (a_span, _) = span_of(capture, a.id().0);
    // The proxy goes and takes the link with it; nothing listens there any more.
    drop(proxy);
    assert_eq!(within(LIMIT, "the loss", a.closed()).await, SessionEnd::RecoveryTimeout);
    let lost = |capture: &Capture| events_in(capture, a_span).into_iter().find(|e| e.message.contains("session lost"));
    assert!(eventually(LIMIT, || lost(capture).is_some()).await, "the loss is logged");
    let e = lost(capture).expect("logged");
    assert_eq!(e.level, Level::WARN);
    assert_eq!(e.fields.get("end"), Some(&SessionEnd::RecoveryTimeout.to_string()), "{e:?}");
    // DEBUG was not asked for: the link events were not recorded.
    assert!(events_in(capture, a_span).iter().all(|e| e.level <= Level::INFO));
}
on_both!(a_lost_session_is_a_warning_in_its_span_with_the_reason);

/// A plain TCP connection to `addr` that sends `bytes` and waits for the acceptor's answer
/// (or the close); returns what came back.
fn poke(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(LIMIT)).expect("timeout");
    let _ = s.write_all(bytes);
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

/// A length-prefixed ClientHello resuming with a key no session holds.
fn unknown_resume() -> Vec<u8> {
    let hello = ClientHello { resume_key: Some(ResumeKey([7; 16])), last_received: None, ext: true }.encode();
    let mut v = (HELLO_LEN as u32).to_le_bytes().to_vec();
    v.extend_from_slice(&hello);
    v
}

async fn the_acceptor_logs_full_refused_resumes_and_limits_with_peer_and_source(rt: Rt) {
    let capture = install();
    let _turn = capture.exclusive(Level::INFO);
    let mut config = session_config();
    config.acceptor.max_sessions = 1;
    config.acceptor.failure_budget = 1;
    config.acceptor.failure_period = Duration::from_secs(60);
    let (acc, upstream) = listen(rt, Transport::Tcp, config).await;
    let Endpoint::Tcp(addr) = upstream else { unreachable!("TCP") };
    let _a = dial(rt, upstream.clone(), session_config()).await;
    let _b = within(LIMIT, "accept", acc.accept()).await.expect("accept");

    // A second session: the acceptor is full.
    let second = match rt {
        Rt::Tokio => sotto_tokio::connect_session(move || tokio::net::TcpStream::connect(addr), session_config()).await,
        Rt::Smol => sotto_smol::connect_session(move || smol::net::TcpStream::connect(addr), session_config()).await,
    };
    assert!(matches!(second, Err(ConnectError::Full)), "{second:?}");
    let full = capture.events_with("acceptor full");
    assert_eq!(full.len(), 1, "{full:?}");
    assert_eq!(full[0].level, Level::WARN);
    assert!(full[0].fields.get("peer").is_some_and(|p| p.starts_with("127.0.0.1:")), "{:?}", full[0]);
    let source = full[0].fields.get("source").cloned().expect("the source");
    assert_ne!(source, "0", "a TCP link's source is its IP's hash");

    // A resume with a key nobody holds: INFO, answered REJECTED (and charged to the source).
    let (reply, refused) = within(
        LIMIT,
        "the refused resume",
        smol::unblock(move || (poke(addr, &unknown_resume()), capture.events_with("no session holds its key"))),
    )
    .await;
    assert_eq!(reply.len(), 4 + HELLO_LEN, "a REJECTED ServerHello");
    assert!(eventually(LIMIT, || capture.events_with("no session holds its key").len() == 1).await, "{refused:?}");
    let e = &capture.events_with("no session holds its key")[0];
    assert_eq!(e.level, Level::INFO);
    assert_eq!(e.fields.get("source"), Some(&source));
    assert!(e.fields.get("peer").is_some_and(|p| p.starts_with("127.0.0.1:")), "{e:?}");

    // Over its failure budget, the source's next links are refused unread: INFO, naming it.
    let refused = |capture: &Capture| capture.events_with("link refused by a limit");
    let probe = move || {
        for _ in 0..5 {
            poke(addr, b"not a hello at all, not even close....");
            if !refused(capture).is_empty() {
                break;
            }
        }
    };
    within(LIMIT, "a refused link", smol::unblock(probe)).await;
    assert!(eventually(LIMIT, || !refused(capture).is_empty()).await, "a link refused by the failure budget");
    let e = &refused(capture)[0];
    assert_eq!(e.level, Level::INFO);
    assert_eq!(e.fields.get("limit").map(String::as_str), Some("failure_budget"), "{e:?}");
    assert_eq!(e.fields.get("source"), Some(&source));
    let stats = acc.stats().summary;
    assert_eq!(stats.refused.full, 1, "{stats:?}");
    assert_eq!(stats.refused.unknown_key, 1, "{stats:?}");
    assert!(stats.refused.rate_limited >= 1, "{stats:?}");
}
on_both!(the_acceptor_logs_full_refused_resumes_and_limits_with_peer_and_source);
