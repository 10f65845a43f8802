//! What a server's `tracing` logs show, over real sockets on both runtimes, recorded by a
//! test subscriber: every session's task runs in a `sotto_session` span with its id, role,
//! API and peer address; link events are DEBUG inside it, nothing is logged per message; a
//! peer's GOODBYE is INFO with its code and reason, a lost session WARN with its reason; the
//! acceptor logs a full acceptor (WARN), a refused resume and a link refused by a limit
//! (INFO, naming the limit) with the link's peer and source, at most once per source and
//! kind per `refusal_log_interval` (the rest counted in the next line); an acceptor's
//! shutdown ends its sessions at INFO, not as lost sessions.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sotto_adapter_tests::capture::{install, Capture, EventRecord};
use sotto_adapter_tests::proxy::{cuttable_tcp, Endpoint};
use sotto_adapter_tests::sessions::{dial, listen, open_accept, session_config, Rt, Transport};
use sotto_adapter_tests::workload::{eventually, sleep, within};
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
    let hello =
        ClientHello { resume_key: Some(ResumeKey([7; 16])), last_received: None, ext: true, early: false }.encode();
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

/// An acceptor's shutdown ends its sessions because the operator asked: a session detached
/// at the time (no link to say GOODBYE on; session or raw acceptor) or one whose link cannot
/// take the GOODBYE within the bound is not logged as a WARN "session lost" (had the end
/// been a loss, it would be INFO "ended by the acceptor's shutdown"); a live one closes with
/// GOODBYE. Nothing above INFO is logged in the acceptor's sessions' spans.
async fn an_acceptor_shutdown_is_logged_at_info_not_as_lost_sessions(rt: Rt) {
    let capture = install();
    let _turn = capture.exclusive(Level::INFO);
    // The session acceptor: one live session, one detached.
    let (acc, upstream) = listen(rt, Transport::Tcp, session_config()).await;
    let Endpoint::Tcp(addr) = upstream.clone() else { unreachable!("TCP") };
    let live = dial(rt, upstream, session_config()).await;
    let live_b = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    let (detached, proxy) = dial_cuttable(rt, addr, session_config()).await;
    let detached_b = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    let mut spans = vec![span_of(capture, live_b.id().0).0, span_of(capture, detached_b.id().0).0];
    drop(proxy);
    assert!(eventually(LIMIT, || acc.stats().endpoint.sessions_detached == 1).await, "{:?}", acc.stats());
    let report = within(LIMIT, "shutdown", acc.shutdown(0x200, "maintenance", Duration::from_millis(500))).await;
    println!("{rt:?}: {report:?}");
    assert_eq!((report.closed_gracefully, report.ended_without_goodbye), (1, 1), "{report:?}");
    assert!(eventually(LIMIT, || live_b.ended().is_some() && detached_b.ended().is_some()).await, "both ended");
    assert!(eventually(LIMIT, || live.ended().is_some()).await, "the live client saw the GOODBYE");

    // The raw acceptor: one conduit detached when the shutdown begins.
    let (raw, raw_addr) = raw_listen(rt).await;
    let (proxy, paddr) = cuttable_tcp(raw_addr);
    let c = raw_connect(rt, paddr).await;
    let s = within(LIMIT, "accept", raw.accept()).await.expect("accept");
    let raw_span = span_of(capture, s.id().0).0;
    spans.push(raw_span);
    drop(proxy);
    assert!(eventually(LIMIT, || raw.stats().endpoint.sessions_detached == 1).await, "{:?}", raw.stats());
    let report = within(LIMIT, "raw shutdown", raw.shutdown(0x200, "maintenance", Duration::from_millis(300))).await;
    println!("{rt:?}: raw {report:?}, ended {:?}", s.ended());
    assert!(eventually(LIMIT, || s.ended().is_some()).await, "the detached conduit ended");
    assert_eq!(s.ended(), Some(SessionEnd::LocalClose { code: 0x200 }), "closed at once, without a link");
    // A session acceptor whose one link cannot take the GOODBYE (its writes stall): the
    // shutdown ends it at its bound.
    let stall = Arc::new(AtomicBool::new(false));
    let (stalled_acc, addr) = stallable_listen(rt, Arc::clone(&stall)).await;
    let stuck = dial(rt, Endpoint::Tcp(addr), session_config()).await;
    let stuck_b = within(LIMIT, "accept", stalled_acc.accept()).await.expect("accept");
    let stuck_span = span_of(capture, stuck_b.id().0).0;
    spans.push(stuck_span);
    stall.store(true, Ordering::Relaxed);
    let report =
        within(LIMIT, "forced shutdown", stalled_acc.shutdown(0x200, "maintenance", Duration::from_millis(300)));
    let report = report.await;
    println!("{rt:?}: stalled {report:?}, ended {:?}", stuck_b.ended());
    assert_eq!(report.timed_out, 1, "{report:?}");
    let end = stuck_b.ended().expect("ended by the shutdown");
    if end.is_lost() {
        let ended = |capture: &Capture| {
            events_in(capture, stuck_span).into_iter().find(|e| e.message.contains("ended by the acceptor's shutdown"))
        };
        assert!(eventually(LIMIT, || ended(capture).is_some()).await, "{:?}", events_in(capture, stuck_span));
        let e = ended(capture).expect("logged");
        assert_eq!(e.level, Level::INFO, "{e:?}");
        assert_eq!(e.fields.get("end"), Some(&end.to_string()), "{e:?}");
    } else {
        assert_eq!(end, SessionEnd::LocalClose { code: 0x200 }, "its GOODBYE queued, its link abandoned");
    }

    for span in spans {
        let loud: Vec<EventRecord> = events_in(capture, span).into_iter().filter(|e| e.level < Level::INFO).collect();
        assert!(loud.is_empty(), "a shutdown is not a loss: {loud:?}");
    }
    drop((detached, c, stuck));
}

/// A session acceptor on `rt` whose links' writes stall once `stall` is set.
async fn stallable_listen(rt: Rt, stall: Arc<AtomicBool>) -> (sotto_driver::SessionAcceptor, SocketAddr) {
    use sotto_adapter_tests::streams::Stallable;
    use sotto_driver::{AcceptHooks, AcceptedLink};
    match rt {
        Rt::Tokio => {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = l.local_addr().expect("addr");
            let hooks = AcceptHooks::new(move |link: AcceptedLink<tokio::net::TcpStream>| {
                let stall = Arc::clone(&stall);
                async move { Ok((Stallable { inner: link, stall }, None)) }
            });
            (sotto_tokio::serve_sessions_tcp_with(l, session_config(), hooks).expect("config"), addr)
        }
        Rt::Smol => {
            let l = smol::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = l.local_addr().expect("addr");
            let hooks = AcceptHooks::new(move |link: AcceptedLink<smol::net::TcpStream>| {
                let stall = Arc::clone(&stall);
                async move { Ok((Stallable { inner: link, stall }, None)) }
            });
            (sotto_smol::serve_sessions_tcp_with(l, session_config(), hooks).expect("config"), addr)
        }
    }
}
on_both!(an_acceptor_shutdown_is_logged_at_info_not_as_lost_sessions);

/// A raw acceptor on `rt` and its address.
async fn raw_listen(rt: Rt) -> (sotto_driver::Acceptor, SocketAddr) {
    let config = sotto_adapter_tests::workload::test_config();
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
async fn raw_connect(rt: Rt, addr: SocketAddr) -> sotto_driver::StableConduit {
    let config = sotto_adapter_tests::workload::test_config();
    match rt {
        Rt::Tokio => sotto_tokio::raw::connect(move || tokio::net::TcpStream::connect(addr), config).await,
        Rt::Smol => sotto_smol::raw::connect(move || smol::net::TcpStream::connect(addr), config).await,
    }
    .expect("connect")
}

/// A flood of links from one source over its failure budget: the acceptor logs the refusal
/// once per `refusal_log_interval`, not once per link, and the next line after the interval
/// reports (`suppressed`) the refusals not logged; every refusal is in the stats.
async fn a_flood_of_refused_links_from_one_source_logs_one_line_per_interval(rt: Rt) {
    const FLOOD: usize = 40;
    let capture = install();
    let _turn = capture.exclusive(Level::INFO);
    let interval = Duration::from_millis(400);
    let mut config = session_config();
    config.acceptor.failure_budget = 1;
    config.acceptor.failure_period = Duration::from_secs(60);
    config.acceptor.refusal_log_interval = interval;
    let (acc, upstream) = listen(rt, Transport::Tcp, config).await;
    let Endpoint::Tcp(addr) = upstream else { unreachable!("TCP") };
    let refused = |capture: &Capture| capture.events_with("link refused by a limit");
    // Bad hellos until the source's budget is spent and a link is refused.
    within(
        LIMIT,
        "the budget spent",
        smol::unblock(move || {
            while acc_refused(capture) == 0 {
                poke(addr, b"not a hello at all, not even close....");
            }
        }),
    )
    .await;
    let started = std::time::Instant::now();
    within(
        LIMIT,
        "the flood",
        smol::unblock(move || {
            for _ in 0..FLOOD {
                poke(addr, b"x");
            }
        }),
    )
    .await;
    let took = started.elapsed();
    let lines = refused(capture);
    println!("{rt:?}: {} lines for {FLOOD} refused links in {took:?}, {:?}", lines.len(), acc.stats().summary);
    let most = (took.as_millis() / interval.as_millis()) as usize + 2;
    assert!(
        !lines.is_empty() && lines.len() <= most,
        "{} lines for {FLOOD} refused links in {took:?} (at most {most}): {lines:?}",
        lines.len()
    );
    // After the interval, the next refusal is logged with the count of those that were not.
    sleep(interval + Duration::from_millis(100)).await;
    within(LIMIT, "one more", smol::unblock(move || poke(addr, b"x"))).await;
    assert!(eventually(LIMIT, || refused(capture).len() == lines.len() + 1).await, "{:?}", refused(capture));
    let lines = refused(capture);
    let last = lines.last().expect("a line");
    let suppressed = |e: &EventRecord| -> u64 { e.fields.get("suppressed").expect("suppressed").parse().expect("n") };
    assert!(suppressed(last) > 0, "the last line counts the refusals not logged: {last:?}");
    let logged_or_counted: u64 = lines.iter().map(|e| 1 + suppressed(e)).sum();
    let stats = acc.stats().summary;
    assert_eq!(logged_or_counted, stats.refused.rate_limited, "every refusal is logged or counted: {stats:?}");
    assert!(stats.refused.rate_limited > FLOOD as u64, "{stats:?}");
    assert!(lines.iter().all(|e| e.fields.get("limit").map(String::as_str) == Some("failure_budget")), "{lines:?}");
}
on_both!(a_flood_of_refused_links_from_one_source_logs_one_line_per_interval);

/// Links refused by a limit so far, as logged.
fn acc_refused(capture: &Capture) -> usize {
    capture.events_with("link refused by a limit").len()
}
