//! The session handle's control and identity, and connector errors the driver classifies,
//! over real sockets on both runtimes: permanent connector errors end a connect or a redial
//! at once with their cause (transient ones are retried), `SessionHandle` clones, session
//! ids, the peer address, `closed()` with the peer's GOODBYE, `DialFailed` events,
//! `reconnect_now`, and session metadata on connect.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sotto_adapter_tests::proxy::{cuttable_tcp, Endpoint};
use sotto_adapter_tests::sessions::{dial, listen, open_accept, session_config, Rt, Transport};
use sotto_adapter_tests::workload::{sleep, within};
use sotto_driver::{permanent, Config, ConnectError, LinkDownCause, PeerAddr, SessionEvent, SessionHandle};
use sotto_proto::SessionEnd;

const LIMIT: Duration = Duration::from_secs(20);

/// Runs `$body(Rt)` as a tokio test and as a smol test, in a module named `$name`.
macro_rules! on_both {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test]
            async fn tokio() {
                super::$body(super::Rt::Tokio).await;
            }
            #[test]
            fn smol() {
                smol::block_on(super::$body(super::Rt::Smol));
            }
        }
    };
}

/// Where each dial goes: the address to connect to, or the error the connector fails with.
type Plan = Arc<dyn Fn() -> io::Result<SocketAddr> + Send + Sync>;

/// An initiator session on `rt` whose connector follows `plan`, with `metadata` in its Hello.
async fn connect_planned(rt: Rt, plan: Plan, config: Config, metadata: &[u8]) -> Result<SessionHandle, ConnectError> {
    match rt {
        Rt::Tokio => {
            sotto_tokio::connect_session_with(
                move || {
                    let plan = Arc::clone(&plan);
                    async move { tokio::net::TcpStream::connect(plan()?).await }
                },
                config,
                metadata,
            )
            .await
        }
        Rt::Smol => {
            sotto_smol::connect_session_with(
                move || {
                    let plan = Arc::clone(&plan);
                    async move { smol::net::TcpStream::connect(plan()?).await }
                },
                config,
                metadata,
            )
            .await
        }
    }
}

fn tcp(endpoint: Endpoint) -> SocketAddr {
    match endpoint {
        Endpoint::Tcp(a) => a,
        Endpoint::Unix(_) => unreachable!("a TCP listener"),
    }
}

fn bad_certificate() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "invalid peer certificate: UnknownIssuer")
}

/// The next event that `pick` accepts (others are skipped), within [`LIMIT`].
async fn event_where<T>(s: &SessionHandle, mut pick: impl FnMut(&SessionEvent) -> Option<T>) -> T {
    within(LIMIT, "an event", async {
        loop {
            let e = s.next_event().await.expect("the session's events ended first");
            if let Some(t) = pick(&e) {
                return t;
            }
        }
    })
    .await
}

async fn a_permanent_connector_error_ends_connect_at_once_with_its_cause(rt: Rt) {
    let mut cfg = session_config();
    cfg.dial.connect_timeout = Duration::from_secs(10);
    let dials = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&dials);
    let plan: Plan = Arc::new(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        Err(permanent(bad_certificate()))
    });
    let start = Instant::now();
    let err = connect_planned(rt, plan, cfg, b"").await.expect_err("the connector always fails");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(1), "gave up after {took:?}, connect_timeout is 10 s");
    assert_eq!(dials.load(Ordering::SeqCst), 1, "a permanent error is not retried");
    match err {
        ConnectError::Io(e) => {
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert!(e.to_string().contains("UnknownIssuer"), "the cause: {e}");
        }
        other => panic!("expected the connector's error, got {other:?}"),
    }
}
on_both!(
    a_permanent_connector_error_ends_connect_at_once_with_its_cause,
    a_permanent_connector_error_ends_connect_at_once_with_its_cause
);

async fn an_unmarked_connector_error_is_retried_until_connect_timeout(rt: Rt) {
    let mut cfg = session_config();
    cfg.dial.connect_timeout = Duration::from_millis(400);
    let dials = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&dials);
    let plan: Plan = Arc::new(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        Err(bad_certificate())
    });
    let start = Instant::now();
    let err = connect_planned(rt, plan, cfg, b"").await.expect_err("the connector always fails");
    assert!(start.elapsed() >= Duration::from_millis(400), "retried until the deadline");
    assert!(dials.load(Ordering::SeqCst) > 1, "retried");
    match err {
        ConnectError::TimedOut { last_error: Some(e) } => assert!(e.to_string().contains("UnknownIssuer"), "{e}"),
        other => panic!("expected a timeout with the last error, got {other:?}"),
    }
}
on_both!(
    an_unmarked_connector_error_is_retried_until_connect_timeout,
    an_unmarked_connector_error_is_retried_until_connect_timeout
);

/// A session through a cuttable proxy; once `cut` is set, dials follow `after_cut` (given
/// the acceptor's own address).
async fn session_with_cut(
    rt: Rt,
    cfg: Config,
    after_cut: impl Fn(SocketAddr) -> io::Result<SocketAddr> + Send + Sync + 'static,
) -> Cut {
    let (acc, upstream) = listen(rt, Transport::Tcp, session_config()).await;
    let direct = tcp(upstream);
    let (proxy, paddr) = cuttable_tcp(direct);
    let cut = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&cut);
    let plan: Plan = Arc::new(move || if seen.load(Ordering::SeqCst) { after_cut(direct) } else { Ok(paddr) });
    let a = connect_planned(rt, plan, cfg, b"").await.expect("connect");
    let b = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    Cut { a, b, proxy, cut, _acc: acc }
}

/// A session whose links go through `proxy` until `cut` is set (and the proxy dropped).
struct Cut {
    a: SessionHandle,
    b: SessionHandle,
    proxy: sotto_adapter_tests::proxy::ChaosProxy,
    cut: Arc<AtomicBool>,
    /// Serves the resumes.
    _acc: sotto_driver::SessionAcceptor,
}

async fn a_permanent_error_on_redial_ends_the_session_with_its_cause(rt: Rt) {
    let mut cfg = session_config();
    cfg.protocol.recovery_timeout = Duration::from_secs(60);
    let Cut { a, b: _b, proxy, cut, _acc } = session_with_cut(rt, cfg, |_| Err(permanent(bad_certificate()))).await;
    cut.store(true, Ordering::SeqCst);
    let start = Instant::now();
    drop(proxy);
    let end = within(LIMIT, "the session's end", a.closed()).await;
    assert_eq!(end, SessionEnd::PermanentDialError);
    assert!(start.elapsed() < Duration::from_secs(5), "ended after {:?}, recovery_timeout is 60 s", start.elapsed());
    let cause = a.last_dial_error().expect("the cause is kept");
    assert!(cause.to_string().contains("UnknownIssuer"), "{cause}");
    let failure = event_where(&a, |e| match e {
        SessionEvent::DialFailed(f) => Some(f.clone()),
        _ => None,
    })
    .await;
    assert_eq!(failure.next_in, None, "no dial follows a permanent error");
    assert!(std::sync::Arc::ptr_eq(&failure.error, &cause));
    assert_eq!(event_where(&a, |e| if let SessionEvent::Lost(end) = e { Some(*end) } else { None }).await, end);
}
on_both!(
    a_permanent_error_on_redial_ends_the_session_with_its_cause,
    a_permanent_error_on_redial_ends_the_session_with_its_cause
);

async fn transient_redial_errors_are_retried_and_reported_with_their_delay(rt: Rt) {
    let failures = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&failures);
    let Cut { a, b, proxy, cut, _acc } = session_with_cut(rt, session_config(), move |direct| {
        if counted.fetch_add(1, Ordering::SeqCst) < 3 {
            Err(io::Error::new(io::ErrorKind::ConnectionRefused, "refused by the test"))
        } else {
            Ok(direct)
        }
    })
    .await;
    cut.store(true, Ordering::SeqCst);
    drop(proxy);
    let cfg = session_config();
    // Failed dials nobody has read yet share one event (`DialFailure::failures`).
    let mut reported = 0;
    while reported < 3 {
        let f = event_where(&a, |e| if let SessionEvent::DialFailed(f) = e { Some(f.clone()) } else { None }).await;
        assert_eq!(f.error.kind(), io::ErrorKind::ConnectionRefused);
        assert!(f.error.to_string().contains("refused by the test"), "{}", f.error);
        let next = f.next_in.expect("a transient error is retried");
        assert!(next <= cfg.dial.backoff_max, "{next:?} past backoff_max");
        reported += f.failures;
    }
    assert_eq!(reported, 3, "every failed dial is counted once");
    event_where(&a, |e| matches!(e, SessionEvent::Resumed { .. }).then_some(())).await;
    assert_eq!(a.ended(), None);
    let pairs = within(LIMIT, "open after the resume", open_accept(&a, &b, 1)).await;
    drop(pairs);
}
on_both!(
    transient_redial_errors_are_retried_and_reported_with_their_delay,
    transient_redial_errors_are_retried_and_reported_with_their_delay
);

async fn session_handle_clones_share_the_session_and_any_clone_closes_it(rt: Rt) {
    let (acc, upstream) = listen(rt, Transport::Tcp, session_config()).await;
    let a = dial(rt, upstream, session_config()).await;
    let b = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    let a2 = a.clone();
    assert_eq!(a2.id(), a.id());
    drop(a);
    // The session lives on in its clone: connections open both ways through it.
    let pairs = within(LIMIT, "open through a clone", open_accept(&a2, &b, 1)).await;
    drop(pairs);
    let a3 = a2.clone();
    let closer = a3.clone();
    let (end, peer_end) =
        within(LIMIT, "close", futures::future::join(closer.close(0x101, "from a clone"), b.closed())).await;
    assert_eq!(end, SessionEnd::LocalClose { code: 0x101 });
    assert_eq!(peer_end, SessionEnd::PeerGoodbye { code: 0x101 });
    assert_eq!(a2.ended(), Some(end), "every clone sees the close");
    assert_eq!(a3.closed().await, end);
}
on_both!(
    session_handle_clones_share_the_session_and_any_clone_closes_it,
    session_handle_clones_share_the_session_and_any_clone_closes_it
);

async fn dropping_the_last_clone_closes_the_session(rt: Rt) {
    let (acc, upstream) = listen(rt, Transport::Tcp, session_config()).await;
    let a = dial(rt, upstream, session_config()).await;
    let b = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    let a2 = a.clone();
    drop(a);
    sleep(Duration::from_millis(200)).await;
    assert_eq!(b.ended(), None, "one clone still holds the session");
    drop(a2);
    let end = within(LIMIT, "the peer's close", b.closed()).await;
    assert!(matches!(end, SessionEnd::PeerGoodbye { .. }), "{end:?}");
    assert_eq!(b.peer_goodbye().map(|g| g.reason), Some("session handle dropped".to_owned()));
}
on_both!(dropping_the_last_clone_closes_the_session, dropping_the_last_clone_closes_the_session);

async fn session_ids_differ_and_stay_the_same_across_resumes(rt: Rt) {
    let Cut { a, b, proxy, cut, _acc } = session_with_cut(rt, session_config(), Ok).await;
    let (id_a, id_b) = (a.id(), b.id());
    assert_ne!(id_a, id_b, "each side numbers its own sessions");
    assert_eq!(id_a.to_string(), format!("session#{}", id_a.0));
    assert!(format!("{a:?}").contains(&format!("{id_a:?}")), "Debug shows the id: {a:?}");
    cut.store(true, Ordering::SeqCst);
    drop(proxy);
    event_where(&a, |e| matches!(e, SessionEvent::Resumed { .. }).then_some(())).await;
    assert_eq!((a.id(), b.id()), (id_a, id_b), "a resume keeps the ids");
    let (acc, upstream) = listen(rt, Transport::Tcp, session_config()).await;
    let c = dial(rt, upstream, session_config()).await;
    let d = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    let ids = [id_a, id_b, c.id(), d.id()];
    for (i, x) in ids.iter().enumerate() {
        assert!(!ids[i + 1..].contains(x), "ids repeat: {ids:?}");
    }
}
on_both!(session_ids_differ_and_stay_the_same_across_resumes, session_ids_differ_and_stay_the_same_across_resumes);

async fn peer_addr_reports_the_tcp_peer(rt: Rt) {
    let (acc, upstream) = listen(rt, Transport::Tcp, session_config()).await;
    let server = tcp(upstream.clone());
    let a = dial(rt, upstream, session_config()).await;
    let b = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    assert_eq!(a.peer_addr(), Some(PeerAddr::Tcp(server)), "the initiator sees the acceptor's address");
    match b.peer_addr() {
        Some(PeerAddr::Tcp(client)) => {
            assert!(client.ip().is_loopback());
            assert_ne!(client.port(), server.port(), "the client's own port, not the listener's");
        }
        other => panic!("the acceptor should see a TCP peer, got {other:?}"),
    }
}
on_both!(peer_addr_reports_the_tcp_peer, peer_addr_reports_the_tcp_peer);

async fn peer_addr_reports_the_unix_socket_path(rt: Rt) {
    let (acc, upstream) = listen(rt, Transport::Unix, session_config()).await;
    let Endpoint::Unix(path) = upstream.clone() else { unreachable!("a Unix listener") };
    let a = dial(rt, upstream, session_config()).await;
    let b = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    assert_eq!(a.peer_addr(), Some(PeerAddr::Unix(Some(path))));
    assert_eq!(b.peer_addr(), Some(PeerAddr::Unix(None)), "the connecting socket is unnamed");
}
on_both!(peer_addr_reports_the_unix_socket_path, peer_addr_reports_the_unix_socket_path);

async fn closed_resolves_on_the_peers_goodbye_with_its_code_and_reason(rt: Rt) {
    let (acc, upstream) = listen(rt, Transport::Tcp, session_config()).await;
    let a = dial(rt, upstream, session_config()).await;
    let b = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    assert_eq!(a.peer_goodbye(), None);
    let waiting = a.closed();
    let (end, _) = within(LIMIT, "closed", futures::future::join(waiting, b.close(0x2a0, "server restarting"))).await;
    assert_eq!(end, SessionEnd::PeerGoodbye { code: 0x2a0 });
    let goodbye = a.peer_goodbye().expect("the peer's GOODBYE");
    assert_eq!((goodbye.code, goodbye.reason.as_str()), (0x2a0, "server restarting"));
    assert_eq!(goodbye.to_string(), "GOODBYE 672: server restarting");
    assert_eq!(a.closed().await, end, "resolves at once once ended");
}
on_both!(
    closed_resolves_on_the_peers_goodbye_with_its_code_and_reason,
    closed_resolves_on_the_peers_goodbye_with_its_code_and_reason
);

async fn reconnect_now_cuts_a_long_backoff_wait_short(rt: Rt) {
    let mut cfg = session_config();
    cfg.dial.backoff_initial = Duration::from_secs(20);
    cfg.dial.backoff_max = Duration::from_secs(20);
    let up = Arc::new(AtomicBool::new(false));
    let network = Arc::clone(&up);
    let Cut { a, b: _b, proxy, cut, _acc } = session_with_cut(rt, cfg, move |direct| {
        if network.load(Ordering::SeqCst) {
            Ok(direct)
        } else {
            Err(io::Error::new(io::ErrorKind::NetworkUnreachable, "network down"))
        }
    })
    .await;
    cut.store(true, Ordering::SeqCst);
    drop(proxy);
    // Full jitter: wait for a failure whose backoff is long enough to measure against.
    let wait = within(Duration::from_secs(60), "a long backoff", async {
        loop {
            let f = event_where(&a, |e| if let SessionEvent::DialFailed(f) = e { Some(f.clone()) } else { None }).await;
            if let Some(next) = f.next_in.filter(|d| *d >= Duration::from_secs(2)) {
                return next;
            }
        }
    })
    .await;
    up.store(true, Ordering::SeqCst);
    let start = Instant::now();
    a.reconnect_now();
    event_where(&a, |e| matches!(e, SessionEvent::Resumed { .. }).then_some(())).await;
    let took = start.elapsed();
    println!("backoff {wait:?}, resumed {took:?} after reconnect_now");
    assert!(took < Duration::from_secs(1), "resumed {took:?} after reconnect_now, the backoff was {wait:?}");
}
on_both!(reconnect_now_cuts_a_long_backoff_wait_short, reconnect_now_cuts_a_long_backoff_wait_short);

async fn reconnect_now_cycles_a_live_link_and_the_session_resumes(rt: Rt) {
    let (acc, upstream) = listen(rt, Transport::Tcp, session_config()).await;
    let a = dial(rt, upstream, session_config()).await;
    let b = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    a.reconnect_now();
    let cause = event_where(&a, |e| if let SessionEvent::LinkDown { cause } = e { Some(*cause) } else { None }).await;
    assert_eq!(cause, LinkDownCause::Reconnect);
    event_where(&a, |e| matches!(e, SessionEvent::Resumed { .. }).then_some(())).await;
    assert_eq!(a.stats().session.conduit.resumes, 1);
    let pairs = within(LIMIT, "open after the cycle", open_accept(&a, &b, 1)).await;
    drop(pairs);
}
on_both!(
    reconnect_now_cycles_a_live_link_and_the_session_resumes,
    reconnect_now_cycles_a_live_link_and_the_session_resumes
);

async fn metadata_on_connect_reaches_the_acceptor(rt: Rt) {
    let (acc, upstream) = listen(rt, Transport::Tcp, session_config()).await;
    let addr = tcp(upstream);
    let a =
        connect_planned(rt, Arc::new(move || Ok(addr)), session_config(), b"user=alice;v=3").await.expect("connect");
    let b = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    assert_eq!(b.peer_metadata().as_deref(), Some(&b"user=alice;v=3"[..]));
    assert_eq!(a.peer_metadata().as_deref(), Some(&b""[..]), "the acceptor's hello carries none");
    let too_large = vec![0u8; session_config().protocol.max_metadata as usize + 1];
    let err = connect_planned(rt, Arc::new(move || Ok(addr)), session_config(), &too_large).await;
    assert!(matches!(err, Err(ConnectError::Config(_))), "{err:?}");
}
on_both!(metadata_on_connect_reaches_the_acceptor, metadata_on_connect_reaches_the_acceptor);

async fn failed_dials_nobody_reads_share_one_event_and_push_nothing_out(rt: Rt) {
    let mut cfg = session_config();
    cfg.dial.backoff_initial = Duration::from_millis(1);
    cfg.dial.backoff_max = Duration::from_millis(2);
    let open = Arc::new(AtomicBool::new(false));
    let opened = Arc::clone(&open);
    let Cut { a, b: _b, proxy, cut, _acc } = session_with_cut(rt, cfg, move |direct| {
        if opened.load(Ordering::SeqCst) {
            Ok(direct)
        } else {
            Err(io::Error::new(io::ErrorKind::ConnectionRefused, "refused by the test"))
        }
    })
    .await;
    // Nobody reads the events during the outage: far more dials fail than the queue holds (64).
    cut.store(true, Ordering::SeqCst);
    drop(proxy);
    within(LIMIT, "200 failed dials", async {
        while a.stats().dial_failures < 200 {
            sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    open.store(true, Ordering::SeqCst);
    let mut events = Vec::new();
    within(LIMIT, "the resume", async {
        loop {
            let e = a.next_event().await.expect("the session lives");
            let resumed = matches!(e, SessionEvent::Resumed { .. });
            events.push(e);
            if resumed {
                break;
            }
        }
    })
    .await;
    let stats = a.stats();
    assert_eq!(stats.events_dropped, 0, "no event was pushed out: {events:?}");
    assert!(matches!(events.first(), Some(SessionEvent::LinkUp { .. })), "the first link's event is kept: {events:?}");
    assert!(matches!(events.get(1), Some(SessionEvent::LinkDown { .. })), "the loss is kept: {events:?}");
    let failed: Vec<u64> = events
        .iter()
        .filter_map(|e| if let SessionEvent::DialFailed(f) = e { Some(f.failures) } else { None })
        .collect();
    assert!(failed.len() < 10, "{} DialFailed events for one outage", failed.len());
    assert_eq!(failed.iter().sum::<u64>(), stats.dial_failures, "every failed dial is counted in an event");
}
on_both!(
    failed_dials_nobody_reads_share_one_event_and_push_nothing_out,
    failed_dials_nobody_reads_share_one_event_and_push_nothing_out
);
