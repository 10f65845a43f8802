//! A connection as a byte stream (`futures::io::AsyncRead` / `AsyncWrite`): bytes arrive
//! exactly once and in order through links that die, whatever the window and the read
//! sizes; the peer's close is the end of the stream, our own close an error.

use std::time::Duration;

use bytes::Bytes;
use futures::future::join;
use futures::io::{AsyncReadExt, AsyncWriteExt};
use sotto_adapter_tests::proxy::Chaos;
use sotto_adapter_tests::sessions::{dial, listen, open_accept, proxy_to, session_config, Rt, Transport};
use sotto_adapter_tests::workload::{seed, within};
use sotto_tokio::{ConnError, WRITE_CHUNK};

const LIMIT: Duration = Duration::from_secs(30);

/// `len` bytes of a pattern that repeats only every 251 bytes (so a shifted, lost or
/// duplicated chunk shows).
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// 1 MiB each way at once through a proxy that kills the first 20 links, tokio initiator,
/// smol acceptor: `write_all` on each side, `read_exact` on the other; then one side closes
/// (a half-close) and the other reads the end of stream.
#[tokio::test]
async fn bytes_cross_dying_links_exactly_once_both_ways() {
    let seed = seed();
    println!("seed {seed}");
    let (acc, upstream) = listen(Rt::Smol, Transport::Tcp, session_config()).await;
    let proxy = proxy_to(upstream, Chaos { budget: (1, 64 << 10), ..Chaos::kills(seed, 20) });
    let a = dial(Rt::Tokio, proxy.endpoint.clone(), session_config()).await;
    let b = acc.accept().await.expect("accept");
    let (x, y) = open_accept(&a, &b, 1).await.pop().expect("pair");
    let (mut x_tx, mut x_rx) = x.split();
    let (mut y_tx, mut y_rx) = y.split();
    let data = pattern(1 << 20);
    let ab = x_tx.write_all(&data);
    let ba = y_tx.write_all(&data);
    let at_y = async {
        let mut got = vec![0u8; data.len()];
        y_rx.read_exact(&mut got).await.expect("read at y");
        got
    };
    let at_x = async {
        let mut got = vec![0u8; data.len()];
        x_rx.read_exact(&mut got).await.expect("read at x");
        got
    };
    let ((w1, w2), (got_y, got_x)) = within(LIMIT, "1 MiB each way", join(join(ab, ba), join(at_y, at_x))).await;
    w1.expect("write x -> y");
    w2.expect("write y -> x");
    assert!(got_y == data, "x -> y: the bytes differ from those sent");
    assert!(got_x == data, "y -> x: the bytes differ from those sent");
    x_tx.close().await.expect("close");
    let mut rest = Vec::new();
    within(LIMIT, "end of stream", y_rx.read_to_end(&mut rest)).await.expect("a clean end");
    assert!(rest.is_empty(), "{} bytes after the end", rest.len());
    println!("proxy: {:?}", proxy.stats);
}

/// A 1 KiB window: a message carries at most half of it, so writes are cut to 512 bytes
/// (never refused); reads of 7 bytes cross every message boundary; empty messages sent in
/// between carry nothing and are skipped.
#[tokio::test]
async fn small_window_small_reads_and_empty_messages() {
    let mut cfg = session_config();
    cfg.protocol.initial_credit = 1 << 10;
    let (acc, upstream) = listen(Rt::Tokio, Transport::Tcp, cfg).await;
    let a = dial(Rt::Tokio, upstream, cfg).await;
    let b = acc.accept().await.expect("accept");
    let (x, mut y) = open_accept(&a, &b, 1).await.pop().expect("pair");
    let (mut tx, _xr) = x.split();
    let data = pattern(100 << 10);
    let writer = async {
        let n = tx.write(&data).await.expect("write");
        assert_eq!(n, 512, "one message: half the peer's window");
        assert!(n < WRITE_CHUNK);
        let mut at = n;
        while at < data.len() {
            tx.send(Bytes::new()).await.expect("an empty message");
            at += tx.write(&data[at..]).await.expect("write");
        }
        tx.close().await.expect("close");
    };
    let reader = async {
        let mut got = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let n = y.read(&mut buf).await.expect("read");
            if n == 0 {
                break got;
            }
            got.extend_from_slice(&buf[..n]);
        }
    };
    let ((), got) = within(LIMIT, "100 KiB through a 1 KiB window", join(writer, reader)).await;
    assert!(got == data, "{} bytes arrived, not the {} sent in order", got.len(), data.len());
}

/// `close` on the byte stream is a half-close, as on TCP: the peer reads to its end, and we
/// still read what it sends until it closes too; writing after it is an error. Closing the
/// connection itself (both ways) makes reading an error, not an end of stream.
#[tokio::test]
async fn close_is_a_half_close_and_a_full_close_fails_reads() {
    let (acc, upstream) = listen(Rt::Tokio, Transport::Tcp, session_config()).await;
    let a = dial(Rt::Tokio, upstream, session_config()).await;
    let b = acc.accept().await.expect("accept");
    let (mut x, mut y) = open_accept(&a, &b, 1).await.pop().expect("pair");
    x.write_all(b"last").await.expect("write");
    AsyncWriteExt::close(&mut x).await.expect("close");
    let mut got = Vec::new();
    within(LIMIT, "peer reads to the end", y.read_to_end(&mut got)).await.expect("clean end");
    assert_eq!(got, b"last");
    y.write_all(b"reply").await.expect("the peer still writes");
    AsyncWriteExt::close(&mut y).await.expect("close");
    let mut back = Vec::new();
    within(LIMIT, "we still read", x.read_to_end(&mut back)).await.expect("clean end");
    assert_eq!(back, b"reply");
    let err = within(LIMIT, "write after our close", x.write(b"more")).await.expect_err("finished");
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err:?}");

    let (x2, _y2) = open_accept(&a, &b, 1).await.pop().expect("pair");
    let (mut tx, mut rx) = x2.split();
    tx.close_with(b"").await;
    let err = within(LIMIT, "read after our close", rx.read(&mut [0u8; 4])).await.expect_err("closed");
    assert_eq!(err.kind(), std::io::ErrorKind::NotConnected);
    assert!(matches!(err.get_ref().and_then(|e| e.downcast_ref::<ConnError>()), Some(ConnError::Closed)), "{err:?}");
    let err = within(LIMIT, "write after our close", tx.write(b"more")).await.expect_err("closed");
    assert_eq!(err.kind(), std::io::ErrorKind::NotConnected, "{err:?}");
}
