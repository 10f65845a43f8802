//! Workloads for the session API: open and accept several connections, exchange numbered
//! messages both ways on each at once, and check exactly-once, in-order delivery per
//! connection.

use std::time::Duration;

use bytes::Bytes;
use futures::future::{join, join4, join_all};
use sotto_driver::{Config, ConnReceiver, ConnSender, Connection, SessionHandle};

/// Message `i` on connection `tag`: the index (u64 LE), the tag (u32 LE), then a pattern;
/// 12 to ~400 bytes.
#[must_use]
pub fn conn_message(tag: u32, i: u64) -> Bytes {
    let len = (i.wrapping_mul(41).wrapping_add(u64::from(tag)) % 400) as usize;
    let mut v = Vec::with_capacity(12 + len);
    v.extend_from_slice(&i.to_le_bytes());
    v.extend_from_slice(&tag.to_le_bytes());
    v.extend((0..len).map(|k| (i as usize + k + tag as usize) as u8));
    Bytes::from(v)
}

/// `a` opens `k` connections (metadata `c<i>`), `b` accepts them (metadata `ok<i>`); the
/// pairs in order.
pub async fn open_accept(a: &SessionHandle, b: &SessionHandle, k: usize) -> Vec<(Connection, Connection)> {
    let opens = async {
        let mut v = Vec::new();
        for i in 0..k {
            let c = a.open(format!("c{i}").as_bytes()).await.expect("open");
            assert_eq!(&c.peer_metadata()[..], format!("ok{i}").as_bytes());
            v.push(c);
        }
        v
    };
    let accepts = async {
        let mut v = Vec::new();
        for i in 0..k {
            let inc = b.accept().await.expect("accept");
            assert_eq!(&inc.metadata()[..], format!("c{i}").as_bytes());
            v.push(inc.accept(format!("ok{i}").as_bytes()).await.expect("answer"));
        }
        v
    };
    let (x, y) = join(opens, accepts).await;
    x.into_iter().zip(y).collect()
}

/// Send messages `0..n` of connection `tag`, through each of the three ways of sending by
/// turns (by `tag`): `send` per message, `send_many` in bursts of up to 7, the `Sink` fed
/// per message and flushed every 50.
pub async fn send_seq(tx: &mut ConnSender, tag: u32, n: u64) {
    use futures::SinkExt;
    match tag % 3 {
        0 => {
            for i in 0..n {
                tx.send(conn_message(tag, i)).await.expect("send accepted");
            }
        }
        1 => {
            let mut i = 0;
            while i < n {
                let burst: Vec<Bytes> = (i..n.min(i + 7)).map(|i| conn_message(tag, i)).collect();
                let sent = tx.send_many(&burst).await.expect("send accepted");
                assert!((1..=burst.len()).contains(&sent), "send_many queued {sent} of {}", burst.len());
                i += sent as u64;
            }
        }
        _ => {
            for i in 0..n {
                tx.feed(conn_message(tag, i)).await.expect("send accepted");
                if i % 50 == 49 {
                    tx.flush().await.expect("flush");
                }
            }
            tx.flush().await.expect("flush");
        }
    }
}

/// Receive `n` messages and check they are `0..n` of connection `tag`, in order.
pub async fn recv_seq(rx: &mut ConnReceiver, tag: u32, n: u64) {
    for i in 0..n {
        let got = rx.recv().await.expect("connection alive");
        assert_eq!(got, conn_message(tag, i), "conn {tag} message {i}: wrong, duplicated or out of order");
    }
}

/// `n` messages each way on every pair at once, checked; the connections are handed back.
pub async fn exchange_all(pairs: Vec<(Connection, Connection)>, n: u64) -> Vec<(Connection, Connection)> {
    let runs = pairs.into_iter().enumerate().map(|(tag, (x, y))| async move {
        let tag = tag as u32;
        let (mut xt, mut xr) = x.split();
        let (mut yt, mut yr) = y.split();
        join4(
            send_seq(&mut xt, tag, n),
            recv_seq(&mut yr, tag, n),
            send_seq(&mut yt, tag, n),
            recv_seq(&mut xr, tag, n),
        )
        .await;
        (xt, xr, yt, yr)
    });
    join_all(runs).await.into_iter().map(|(xt, xr, yt, yr)| (join_halves(xt, xr), join_halves(yt, yr))).collect()
}

fn join_halves(tx: ConnSender, rx: ConnReceiver) -> Connection {
    Connection::reunite(tx, rx).expect("halves of one connection")
}

/// The adapters' test configuration with a small acceptor (few session slots).
#[must_use]
pub fn session_config() -> Config {
    let mut c = crate::workload::test_config();
    c.acceptor.max_sessions = 4;
    c.acceptor.failure_budget = 1000;
    c.protocol.drain_timeout = Duration::from_millis(500);
    c
}

/// Which adapter runs a side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rt {
    /// sotto-tokio (the caller runs a tokio runtime).
    Tokio,
    /// sotto-smol (smol's global executor).
    Smol,
}

impl Rt {
    /// Run `f` to completion on this runtime: tokio on a two-worker multi-thread runtime,
    /// smol on its global executor.
    pub fn block_on(self, f: impl std::future::Future<Output = ()>) {
        match self {
            Rt::Tokio => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(f),
            Rt::Smol => smol::block_on(f),
        }
    }
}

/// Which transport carries the links.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Loopback TCP.
    Tcp,
    /// A Unix socket.
    Unix,
}

/// A session acceptor on `rt` over `transport`, and where it listens.
pub async fn listen(
    rt: Rt,
    transport: Transport,
    config: Config,
) -> (sotto_driver::SessionAcceptor, crate::proxy::Endpoint) {
    use crate::proxy::Endpoint;
    match (rt, transport) {
        (Rt::Tokio, Transport::Tcp) => {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = l.local_addr().expect("addr");
            (sotto_tokio::serve_sessions_tcp(l, config).expect("config"), Endpoint::Tcp(addr))
        }
        (Rt::Tokio, Transport::Unix) => {
            let path = crate::workload::unix_path("sess-tokio");
            let l = tokio::net::UnixListener::bind(&path).expect("bind");
            (sotto_tokio::serve_sessions_unix(l, config).expect("config"), Endpoint::Unix(path))
        }
        (Rt::Smol, Transport::Tcp) => {
            let l = smol::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = l.local_addr().expect("addr");
            (sotto_smol::serve_sessions_tcp(l, config).expect("config"), Endpoint::Tcp(addr))
        }
        (Rt::Smol, Transport::Unix) => {
            let path = crate::workload::unix_path("sess-smol");
            let l = smol::net::unix::UnixListener::bind(&path).expect("bind");
            (sotto_smol::serve_sessions_unix(l, config).expect("config"), Endpoint::Unix(path))
        }
    }
}

/// An initiator session on `rt` dialing `to`.
pub async fn dial(rt: Rt, to: crate::proxy::Endpoint, config: Config) -> SessionHandle {
    use crate::proxy::Endpoint;
    match (rt, to) {
        (Rt::Tokio, Endpoint::Tcp(addr)) => sotto_tokio::connect_session(
            move || async move {
                let s = tokio::net::TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                Ok(s)
            },
            config,
        )
        .await
        .expect("connect"),
        (Rt::Tokio, Endpoint::Unix(path)) => {
            sotto_tokio::connect_session(move || tokio::net::UnixStream::connect(path.clone()), config)
                .await
                .expect("connect")
        }
        (Rt::Smol, Endpoint::Tcp(addr)) => sotto_smol::connect_session(
            move || async move {
                let s = smol::net::TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                Ok(s)
            },
            config,
        )
        .await
        .expect("connect"),
        (Rt::Smol, Endpoint::Unix(path)) => {
            sotto_smol::connect_session(move || smol::net::unix::UnixStream::connect(path.clone()), config)
                .await
                .expect("connect")
        }
    }
}

/// A proxy listening like `upstream` (TCP or a fresh Unix path).
pub fn proxy_to(upstream: crate::proxy::Endpoint, chaos: crate::proxy::Chaos) -> crate::proxy::ChaosProxy {
    use crate::proxy::{ChaosProxy, Endpoint};
    let listen = match upstream {
        Endpoint::Tcp(_) => Endpoint::Tcp("127.0.0.1:0".parse().expect("addr")),
        Endpoint::Unix(_) => Endpoint::Unix(crate::workload::unix_path("sess-proxy")),
    };
    ChaosProxy::start(listen, upstream, chaos).expect("proxy")
}
