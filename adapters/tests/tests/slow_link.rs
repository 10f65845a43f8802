//! A link slower than the keepalive (tokio, loopback TCP through a throttling proxy): one
//! direction carries 64 bytes every 20 ms (3.2 KB/s), so an 8 KiB item takes about 2.5 s to
//! cross it, while `pong_timeout` is 300 ms. Both sides' keepalives wait behind that item: the
//! receiver's PONG-to-be (its PING is answered behind the item), and the sender's own PING,
//! queued in its socket behind the item. The bytes arriving prove the link alive to the
//! receiver, which sends a standalone ACK once per `ping_interval` meanwhile, proving it alive
//! to the sender: the item is delivered on the first link, with no keepalive drop. (Before,
//! only a whole frame counted: the link was dropped as silent every 400 ms and every resume
//! replayed the same item, which never arrived.)

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use sotto_adapter_tests::workload::{test_config, within};
use sotto_tokio::raw::{connect, serve_tcp};
use tokio::net::{TcpListener, TcpStream};

/// Copy `from` to `to`, `chunk` bytes at a time with `pause` after each (unthrottled without
/// a pause); closes `to`'s write side at the end.
fn pump(mut from: StdStream, mut to: StdStream, chunk: usize, pause: Option<Duration>) {
    let mut buf = vec![0u8; chunk];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
        if let Some(p) = pause {
            thread::sleep(p);
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// A proxy for every connection to `upstream`: client to upstream throttled to `chunk` bytes
/// per `pause`, the other way at full speed.
fn throttling_proxy(upstream: SocketAddr, chunk: usize, pause: Duration) -> SocketAddr {
    let l = StdListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    thread::spawn(move || {
        for client in l.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = StdStream::connect(upstream) else { return };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (c2, s2) = (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
            thread::spawn(move || pump(client, server, chunk, Some(pause)));
            thread::spawn(move || pump(s2, c2, 64 << 10, None));
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_item_crosses_a_link_slower_than_the_keepalive_on_its_first_link() {
    let mut config = test_config();
    config.protocol.ping_interval = Duration::from_millis(100);
    config.protocol.min_ping_interval = Duration::from_millis(10);
    config.protocol.pong_timeout = Duration::from_millis(300);
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let upstream = l.local_addr().expect("addr");
    let acc = serve_tcp(l, config).expect("config");
    let via = throttling_proxy(upstream, 64, Duration::from_millis(20));
    let dial = move || async move {
        let s = TcpStream::connect(via).await?;
        s.set_nodelay(true)?;
        Ok(s)
    };
    let a = within(Duration::from_secs(10), "connect", connect(dial, config)).await.expect("connect");
    let b = within(Duration::from_secs(10), "accept", acc.accept()).await.expect("accept");
    // A first small item gives the receiver a position to report (its sign of life while it
    // waits for the PONG, see `Conduit::handle_progress`).
    a.send(Bytes::from_static(b"first")).await.expect("send");
    let first = within(Duration::from_secs(5), "the first item", b.recv()).await.expect("recv");
    assert_eq!(&first[..], b"first");
    let item: Bytes = (0..8192u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
    a.send(item.clone()).await.expect("send");
    let got = match tokio::time::timeout(Duration::from_secs(20), b.recv()).await {
        Ok(r) => r.expect("recv"),
        Err(_) => panic!("not delivered: initiator {:?}, acceptor {:?}", a.stats(), b.stats()),
    };
    assert_eq!(got, item);
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!(
        (sb.conduit.link_drops.keepalive, sa.conduit.link_drops.keepalive, sa.link_downs, sb.link_downs),
        (0, 0, 0, 0),
        "delivered on the first link: initiator {:?}, acceptor {:?}",
        sa.conduit.link_drops,
        sb.conduit.link_drops
    );
}
