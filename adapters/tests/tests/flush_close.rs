//! Waiting for the peer's acknowledgment, over real sockets on both runtimes:
//! `flush_acked` / `SessionHandle::flush` resolve only once the peer's session holds what
//! was sent (also across a link loss), and a session `close` while no link is up waits for
//! the next link, so what was queued during the outage is delivered before the GOODBYE.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::future::{join, FutureExt};
use sotto_adapter_tests::proxy::{cuttable_tcp, Chaos, ChaosProxy, Endpoint};
use sotto_adapter_tests::sessions::{dial, listen, open_accept, session_config, Rt, Transport};
use sotto_adapter_tests::workload::{eventually, seed, sleep, within};
use sotto_proto::SessionEnd;
use sotto_tokio::{Config, SessionEvent};

const LIMIT: Duration = Duration::from_secs(30);

/// Messages above a quarter of `batch_bytes` travel one per conduit item.
fn unbatched(i: u8) -> Bytes {
    Bytes::from(vec![i; 5000])
}

/// Short redial backoff, so a link comes back soon after the proxy does.
fn config() -> Config {
    let mut c = session_config();
    c.dial.backoff_initial = Duration::from_millis(20);
    c.dial.backoff_max = Duration::from_millis(100);
    c
}

/// A fault-free proxy on `listen` again (the address a dropped one had) to `upstream`.
fn restore(listen: SocketAddr, upstream: SocketAddr) -> ChaosProxy {
    ChaosProxy::start(Endpoint::Tcp(listen), Endpoint::Tcp(upstream), Chaos::kills(seed(), 0)).expect("proxy again")
}

/// A session through a cuttable proxy: (initiator, acceptor, proxy, its address, upstream).
async fn cuttable_pair(
    rt: Rt,
) -> (sotto_tokio::SessionHandle, sotto_tokio::SessionHandle, ChaosProxy, SocketAddr, SocketAddr, impl Sized) {
    let (acc, upstream) = listen(rt, Transport::Tcp, config()).await;
    let Endpoint::Tcp(addr) = upstream else { unreachable!("a TCP listener") };
    let (proxy, paddr) = cuttable_tcp(addr);
    let a = dial(rt, Endpoint::Tcp(paddr), config()).await;
    let b = acc.accept().await.expect("accept");
    (a, b, proxy, paddr, addr, acc)
}

/// `flush_acked` returns only once the peer's side holds the data: right after it, the
/// peer's reader has the message without waiting. With the link down it waits, and
/// resolves once a new link carried the replay and its acknowledgment.
async fn flush_acked_run(rt: Rt) {
    let (a, b, proxy, paddr, addr, _acc) = cuttable_pair(rt).await;
    let (mut x, mut y) = open_accept(&a, &b, 1).await.pop().expect("pair");
    for i in 0..20 {
        x.send(unbatched(i)).await.expect("send");
        within(LIMIT, "flush_acked", x.flush_acked()).await.expect("acknowledged");
        let got = y.recv().now_or_never().expect("the peer holds what was acknowledged").expect("message");
        assert_eq!(got, unbatched(i));
    }
    assert_eq!(a.unacked(), 0, "everything acknowledged");
    // The link goes; what is sent now waits in the replay ring, and so does the flush.
    drop(proxy);
    assert!(eventually(LIMIT, || !a.stats().link_established).await, "the link is gone");
    for i in 20..25 {
        x.send(unbatched(i)).await.expect("into the replay ring");
    }
    let flush = a.flush();
    let mut flush = std::pin::pin!(flush);
    assert!(flush.as_mut().now_or_never().is_none(), "no acknowledgment without a link");
    sleep(Duration::from_millis(300)).await;
    assert!(flush.as_mut().now_or_never().is_none(), "no acknowledgment without a link");
    assert!(y.recv().now_or_never().is_none(), "nothing arrived without a link");
    let _proxy = restore(paddr, addr);
    within(LIMIT, "flush across the link loss", flush).await.expect("acknowledged after the resume");
    for i in 20..25 {
        let got = y.recv().now_or_never().expect("the peer holds what was acknowledged").expect("message");
        assert_eq!(got, unbatched(i));
    }
    assert_eq!(a.unacked(), 0);
    // A flush on a session that ended with something unacknowledged is an error.
    let end = within(LIMIT, "close", b.close(5, "done")).await;
    assert_eq!(end, SessionEnd::LocalClose { code: 5 });
    assert!(eventually(LIMIT, || a.ended().is_some()).await, "the peer's GOODBYE ended A");
    assert!(within(LIMIT, "flush after the end", a.flush()).await.is_ok(), "nothing was left unacknowledged");
    assert!(x.send(unbatched(0)).await.is_err(), "the session is over");
}

#[tokio::test]
async fn tokio_flush_acked_waits_for_the_peer_and_crosses_a_link_loss() {
    flush_acked_run(Rt::Tokio).await;
}

#[test]
fn smol_flush_acked_waits_for_the_peer_and_crosses_a_link_loss() {
    smol::block_on(flush_acked_run(Rt::Smol));
}

/// The far side is unreachable; messages are sent into the replay ring; `close` is called
/// while no link is up. Today's close ended the session at once without GOODBYE and the
/// messages were lost; now it waits for the next link: the peer gets every message, then
/// the GOODBYE, and nothing is left unacknowledged.
async fn close_during_outage_run(rt: Rt) {
    let (a, b, proxy, paddr, addr, _acc) = cuttable_pair(rt).await;
    let (mut x, mut y) = open_accept(&a, &b, 1).await.pop().expect("pair");
    x.send(unbatched(0)).await.expect("send");
    assert_eq!(within(LIMIT, "delivery", y.recv()).await.expect("message"), unbatched(0));
    assert!(eventually(LIMIT, || a.unacked() == 0).await, "acknowledged: {}", a.unacked());
    drop(proxy);
    assert!(eventually(LIMIT, || !a.stats().link_established).await, "the link is gone");
    for i in 1..6 {
        x.send(unbatched(i)).await.expect("into the replay ring");
    }
    assert_eq!(a.unacked(), 5, "five items wait for a link");
    let close = a.close(7, "bye");
    let mut close = std::pin::pin!(close);
    assert!(close.as_mut().now_or_never().is_none(), "the close waits for a link");
    sleep(Duration::from_millis(300)).await;
    assert!(close.as_mut().now_or_never().is_none(), "the close waits for a link");
    assert_eq!(a.ended(), None, "the session lives on until a link carries its GOODBYE");
    let _proxy = restore(paddr, addr);
    let reader = async {
        for i in 1..6 {
            assert_eq!(y.recv().await.expect("queued during the outage"), unbatched(i));
        }
    };
    let (end, ()) = within(LIMIT, "close after the resume", join(close, reader)).await;
    assert_eq!(end, SessionEnd::LocalClose { code: 7 });
    assert_eq!(a.unacked(), 0, "the peer acknowledged everything before the GOODBYE");
    let mut closed = None;
    while let Some(e) = within(LIMIT, "events", b.next_event()).await {
        closed = Some(e);
    }
    assert!(matches!(closed, Some(SessionEvent::Closed(SessionEnd::PeerGoodbye { code: 7, .. }))), "{closed:?}");
}

#[tokio::test]
async fn tokio_close_during_an_outage_delivers_what_was_queued() {
    close_during_outage_run(Rt::Tokio).await;
}

#[test]
fn smol_close_during_an_outage_delivers_what_was_queued() {
    smol::block_on(close_during_outage_run(Rt::Smol));
}

/// `close_within` with a bound that passes while no link is up ends the session without
/// GOODBYE, and says what may be lost.
async fn close_within_bound_run(rt: Rt) {
    let (a, _b, proxy, _paddr, _addr, _acc) = cuttable_pair(rt).await;
    let (mut x, _y) = open_accept(&a, &_b, 1).await.pop().expect("pair");
    drop(proxy);
    assert!(eventually(LIMIT, || !a.stats().link_established).await, "the link is gone");
    for i in 0..3 {
        x.send(unbatched(i)).await.expect("into the replay ring");
    }
    let started = std::time::Instant::now();
    let end = within(LIMIT, "bounded close", a.close_within(3, "bye", Duration::from_millis(400))).await;
    assert_eq!(end, SessionEnd::LocalClose { code: 3 });
    assert!(started.elapsed() >= Duration::from_millis(400), "it waited for the bound: {:?}", started.elapsed());
    assert_eq!(a.unacked(), 3, "what the close may have lost");
}

#[tokio::test]
async fn tokio_close_within_a_bound_that_passes_without_a_link_reports_the_loss() {
    close_within_bound_run(Rt::Tokio).await;
}

#[test]
fn smol_close_within_a_bound_that_passes_without_a_link_reports_the_loss() {
    smol::block_on(close_within_bound_run(Rt::Smol));
}
