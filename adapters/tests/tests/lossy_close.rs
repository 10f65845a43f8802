//! A5, the lossy case: a close while no link exists, with no time to wait for one
//! (`close_within(.., Duration::ZERO)` for sessions; the raw conduit's `close`), ends the
//! session at once, without GOODBYE, and `unacked()` reports how many items the peer had
//! not acknowledged (and may never get). With a link, everything acknowledged is 0 unacked
//! before the close. (A session `close` waits for a link within `close_timeout`: see
//! flush_close.rs.)

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use sotto_adapter_tests::proxy::{cuttable_tcp, Endpoint};
use sotto_adapter_tests::sessions::{dial, listen, open_accept, session_config, Rt, Transport};
use sotto_adapter_tests::workload::{eventually, test_config, within};
use sotto_proto::SessionEnd;

const LIMIT: Duration = Duration::from_secs(20);

/// Messages above a quarter of `batch_bytes` (16 KiB by default) travel one per item.
fn unbatched(i: u8) -> Bytes {
    Bytes::from(vec![i; 5000])
}

#[tokio::test]
async fn a5_session_close_without_a_link_reports_what_was_unacked() {
    let (acc, upstream) = listen(Rt::Tokio, Transport::Tcp, session_config()).await;
    let Endpoint::Tcp(addr) = upstream else { unreachable!("a TCP listener") };
    let (proxy, paddr) = cuttable_tcp(addr);
    let a = dial(Rt::Tokio, Endpoint::Tcp(paddr), session_config()).await;
    let b = acc.accept().await.expect("accept");
    let (mut x, mut y) = open_accept(&a, &b, 1).await.pop().expect("pair");
    for i in 0..10 {
        x.send(unbatched(i)).await.expect("send");
    }
    for i in 0..10 {
        assert_eq!(within(LIMIT, "delivery", y.recv()).await.expect("message"), unbatched(i));
    }
    assert!(eventually(LIMIT, || a.unacked() == 0).await, "the peer acknowledges what it got: {}", a.unacked());
    // The far side "crashes": the link goes, and redials find nobody.
    drop(proxy);
    assert!(eventually(LIMIT, || !a.stats().link_established).await, "the link is gone");
    for i in 10..15 {
        x.send(unbatched(i)).await.expect("sent into the replay ring");
    }
    assert_eq!(a.unacked(), 5, "five items wait for a link");
    let end = within(LIMIT, "close without a link", a.close_within(7, "bye", Duration::ZERO)).await;
    assert_eq!(end, SessionEnd::LocalClose { code: 7 });
    assert_eq!(a.unacked(), 5, "what the close may have lost");
    let late = tokio::time::timeout(Duration::from_millis(200), y.recv()).await;
    assert!(late.is_err(), "nothing sent after the cut arrives: {late:?}");
}

#[tokio::test]
async fn a5_raw_close_without_a_link_reports_what_was_unacked() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = l.local_addr().expect("addr");
    let acceptor = sotto_tokio::raw::serve_tcp(l, test_config()).expect("config");
    let (proxy, paddr) = cuttable_tcp(addr);
    let a =
        sotto_tokio::raw::connect(move || tokio::net::TcpStream::connect(paddr), test_config()).await.expect("connect");
    let b = acceptor.accept().await.expect("accept");
    a.send(Bytes::from_static(b"first")).await.expect("send");
    assert_eq!(&within(LIMIT, "delivery", b.recv()).await.expect("item")[..], b"first");
    assert!(eventually(LIMIT, || a.unacked() == 0).await, "acknowledged: {}", a.unacked());
    drop(proxy);
    assert!(eventually(LIMIT, || !a.stats().link_established).await, "the link is gone");
    for i in 0..3u8 {
        a.send(Bytes::from(vec![i; 10])).await.expect("sent into the replay ring");
    }
    assert_eq!(a.unacked(), 3);
    let end = within(LIMIT, "close without a link", a.close(1, "bye")).await;
    assert_eq!(end, SessionEnd::LocalClose { code: 1 });
    assert_eq!(a.unacked(), 3, "what the close may have lost");
}
