//! Half-close over real sockets, on both runtimes: finishing one side of a connection ends
//! the peer's reads (EOF) while the other direction keeps going, through a proxy killing
//! links; the connection is over once both sides finished. And tokio's own `AsyncRead` /
//! `AsyncWrite` on connections: `tokio::io::copy` from a TCP stream, through a connection,
//! to the end of stream.

use std::time::Duration;

use bytes::Bytes;
use futures::future::join;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::StreamExt;
use sotto_adapter_tests::proxy::Chaos;
use sotto_adapter_tests::sessions::{dial, listen, open_accept, proxy_to, session_config, Rt, Transport};
use sotto_adapter_tests::workload::{seed, within};
use sotto_tokio::ConnError;

const LIMIT: Duration = Duration::from_secs(30);

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// x sends 256 KiB and finishes; y reads exactly that, then an end of stream, while it
/// writes 1 MiB to x the whole time (half of it after x finished); then y finishes and x
/// reads its 1 MiB and an end of stream. Links die under both directions.
async fn half_close_run(initiator: Rt, acceptor: Rt) {
    let seed = seed();
    println!("seed {seed} ({initiator:?} -> {acceptor:?})");
    let (acc, upstream) = listen(acceptor, Transport::Tcp, session_config()).await;
    let proxy = proxy_to(upstream, Chaos { budget: (1, 64 << 10), ..Chaos::kills(seed, 12) });
    let a = dial(initiator, proxy.endpoint.clone(), session_config()).await;
    let b = acc.accept().await.expect("accept");
    let (x, y) = open_accept(&a, &b, 1).await.pop().expect("pair");
    let (mut x_tx, mut x_rx) = x.split();
    let (mut y_tx, mut y_rx) = y.split();
    let short = pattern(256 << 10);
    let long: Vec<u8> = pattern(1 << 20).into_iter().rev().collect();
    let x_side = async {
        x_tx.write_all(&short).await.expect("x writes");
        x_tx.close().await.expect("x finishes (half-close)");
        let err = x_tx.write(b"more").await.expect_err("no writing after finishing");
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err:?}");
        assert!(matches!(err.get_ref().and_then(|e| e.downcast_ref::<ConnError>()), Some(ConnError::Finished)));
        let mut got = Vec::new();
        x_rx.read_to_end(&mut got).await.expect("x reads y's side to its end");
        got
    };
    let y_side = async {
        let reader = async {
            let mut got = Vec::new();
            y_rx.read_to_end(&mut got).await.expect("y reads x's side to its end");
            got
        };
        let writer = async {
            y_tx.write_all(&long[..long.len() / 2]).await.expect("y writes");
        };
        let (got, ()) = join(reader, writer).await;
        // x has finished: y's direction is still open.
        y_tx.write_all(&long[long.len() / 2..]).await.expect("y writes after x finished");
        y_tx.close().await.expect("y finishes");
        got
    };
    let (at_x, at_y) = within(LIMIT, "half-close both ways", join(x_side, y_side)).await;
    assert!(at_y == short, "x -> y: {} bytes, not the {} sent", at_y.len(), short.len());
    assert!(at_x == long, "y -> x: {} bytes, not the {} sent", at_x.len(), long.len());
    assert!(matches!(y_rx.end(), Some(ConnError::PeerFinished)), "{:?}", y_rx.end());
    assert!(matches!(x_rx.end(), Some(ConnError::PeerFinished)), "{:?}", x_rx.end());
    // Both finished: the connection is over at both ends, the session lives on.
    assert_eq!(a.stats().session.connections_open, 0);
    let left = sotto_adapter_tests::workload::eventually(LIMIT, || b.stats().session.connections_open == 0).await;
    assert!(left, "the acceptor still holds the connection");
    assert!(a.ended().is_none() && b.ended().is_none());
    println!("proxy kills: {}", proxy.kills());
}

#[tokio::test]
async fn tokio_half_close_both_ways_through_link_kills() {
    half_close_run(Rt::Tokio, Rt::Tokio).await;
}

#[test]
fn smol_half_close_both_ways_through_link_kills() {
    smol::block_on(half_close_run(Rt::Smol, Rt::Smol));
}

#[tokio::test]
async fn tokio_initiator_smol_acceptor_half_close() {
    half_close_run(Rt::Tokio, Rt::Smol).await;
}

/// Messages too: after the peer's finish, `recv` says `PeerFinished` and the `Stream` ends;
/// our own sends still work, and the `Sink`'s close is a finish.
async fn message_half_close_run(rt: Rt) {
    let (acc, upstream) = listen(rt, Transport::Tcp, session_config()).await;
    let a = dial(rt, upstream, session_config()).await;
    let b = acc.accept().await.expect("accept");
    let (mut x, mut y) = open_accept(&a, &b, 1).await.pop().expect("pair");
    x.send(b"request").await.expect("send");
    x.finish().await.expect("finish");
    x.finish().await.expect("finishing twice is a no-op");
    assert_eq!(x.send(b"late").await, Err(ConnError::Finished));
    assert_eq!(&within(LIMIT, "request", y.recv()).await.expect("message")[..], b"request");
    assert_eq!(within(LIMIT, "end", y.recv()).await, Err(ConnError::PeerFinished));
    assert!(y.next().await.is_none(), "the Stream has ended");
    y.send(b"response").await.expect("y still sends");
    futures::SinkExt::close(&mut y).await.expect("the Sink's close finishes");
    assert_eq!(&within(LIMIT, "response", x.recv()).await.expect("message")[..], b"response");
    assert_eq!(within(LIMIT, "end", x.recv()).await, Err(ConnError::PeerFinished));
    assert_eq!(y.send(b"late").await, Err(ConnError::Finished));
}

#[tokio::test]
async fn tokio_recv_reports_the_peers_end_of_stream() {
    message_half_close_run(Rt::Tokio).await;
}

#[test]
fn smol_recv_reports_the_peers_end_of_stream() {
    smol::block_on(message_half_close_run(Rt::Smol));
}

/// `tokio::io::copy` with tokio's own traits (no compat): bytes from a TCP stream go into a
/// connection, out of its peer into a `Vec`, and the TCP stream's end becomes the
/// connection's end of stream (`poll_shutdown` is the half-close), through link kills.
#[tokio::test]
async fn tokio_io_copy_through_a_connection() {
    use tokio::io::AsyncWriteExt as _;
    let seed = seed();
    println!("seed {seed}");
    let (acc, upstream) = listen(Rt::Tokio, Transport::Tcp, session_config()).await;
    let proxy = proxy_to(upstream, Chaos { budget: (1, 64 << 10), ..Chaos::kills(seed, 8) });
    let a = dial(Rt::Tokio, proxy.endpoint.clone(), session_config()).await;
    let b = acc.accept().await.expect("accept");
    let (mut x, mut y) = open_accept(&a, &b, 1).await.pop().expect("pair");
    let data = pattern(2 << 20);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let source = {
        let data = data.clone();
        tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            s.write_all(&data).await.expect("tcp write");
            s.shutdown().await.expect("tcp shutdown");
        })
    };
    let (mut tcp, _) = l.accept().await.expect("accept");
    let into = async {
        let n = tokio::io::copy(&mut tcp, &mut x).await.expect("copy into the connection");
        tokio::io::AsyncWriteExt::shutdown(&mut x).await.expect("shutdown: finish");
        n
    };
    let out_of = async {
        let mut got = Vec::new();
        let n = tokio::io::copy(&mut y, &mut got).await.expect("copy out of the connection");
        (n, got)
    };
    let (n_in, (n_out, got)) = within(LIMIT, "copy 2 MiB", join(into, out_of)).await;
    source.await.expect("source task");
    assert_eq!((n_in, n_out), (data.len() as u64, data.len() as u64));
    assert!(got == data, "the bytes differ from those sent");
    // The other direction is open: tokio's read on x sees what y sends, then y's end.
    y.send(Bytes::from_static(b"back")).await.expect("y sends");
    y.finish().await.expect("y finishes");
    let mut back = Vec::new();
    within(LIMIT, "read back", tokio::io::AsyncReadExt::read_to_end(&mut x, &mut back)).await.expect("read");
    assert_eq!(back, b"back");
    println!("proxy kills: {}", proxy.kills());
}
