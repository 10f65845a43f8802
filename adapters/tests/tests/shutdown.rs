//! Graceful shutdown of a session acceptor, over real sockets (tokio, loopback TCP): every
//! client sees the acceptor's GOODBYE (its session ends `PeerGoodbye`, with no resume
//! attempt), the report counts what was closed, a detached session ends too, and the
//! shutdown returns within its bound even when one client's link cannot take the GOODBYE.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use sotto_adapter_tests::key_tap::KeyTap;
use sotto_adapter_tests::workload::{eventually, test_config, within};
use sotto_tokio::{SessionEnd, SessionHandle};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const LIMIT: Duration = Duration::from_secs(20);
const CODE: u32 = 0x1234;

/// A server-side stream whose writes can be stalled (as toward a peer that stopped reading
/// with full socket buffers): once `stall` is set, every write is pending forever.
struct Stallable {
    inner: tokio::net::TcpStream,
    stall: Arc<AtomicBool>,
}

impl AsyncRead for Stallable {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stallable {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if self.stall.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.stall.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.stall.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_says_goodbye_to_every_session_and_returns_within_its_bound() {
    const N: usize = 5;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    // One stall flag per accepted stream, in order.
    let stalls: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
    let flags = Arc::clone(&stalls);
    let incoming = futures::stream::poll_fn(move |cx| {
        l.poll_accept(cx).map(|r| {
            Some(r.map(|(s, _)| {
                let _ = s.set_nodelay(true);
                let stall = Arc::new(AtomicBool::new(false));
                flags.lock().expect("flags").push(Arc::clone(&stall));
                Stallable { inner: s, stall }
            }))
        })
    });
    let mut config = test_config();
    // Far longer than the bound: the bound, not the drain timeout, ends the stalled one.
    config.protocol.drain_timeout = Duration::from_secs(10);
    let acc = sotto_tokio::serve_sessions(incoming, config).expect("config");

    let connect = |to: std::net::SocketAddr| async move {
        sotto_tokio::connect_session(move || tokio::net::TcpStream::connect(to), test_config()).await.expect("connect")
    };
    let mut clients: Vec<(SessionHandle, SessionHandle)> = Vec::new();
    for _ in 0..N {
        let a = within(LIMIT, "connect", connect(addr)).await;
        let b = within(LIMIT, "accept", acc.accept()).await.expect("accept");
        clients.push((a, b));
    }
    // One more whose link the acceptor cannot write to any more.
    let stuck = within(LIMIT, "connect", connect(addr)).await;
    let stuck_b = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    // And one detached at the time: its client reached the acceptor through a relay that is
    // then gone for good.
    let tap = KeyTap::start(addr).await;
    let detached = within(LIMIT, "connect", connect(tap.addr)).await;
    let detached_b = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    drop(tap);
    assert!(eventually(LIMIT, || acc.stats().endpoint.sessions_detached == 1).await, "{:?}", acc.stats());
    let stalls: Vec<Arc<AtomicBool>> = stalls.lock().expect("flags").clone();
    stalls[N].store(true, Ordering::Relaxed);
    let resumes_before: Vec<u64> = clients.iter().map(|(a, _)| a.stats().session.conduit.resumes).collect();

    let bound = Duration::from_millis(500);
    let t0 = Instant::now();
    let report = within(LIMIT, "shutdown", acc.shutdown(CODE, "server stopping", bound)).await;
    let took = t0.elapsed();
    println!("shutdown took {took:?}: {report:?}");
    assert!(took < bound + Duration::from_millis(300), "shutdown took {took:?}, bound {bound:?}");
    assert_eq!(report.closed_gracefully, N as u64, "{report:?}");
    assert_eq!(report.timed_out, 1, "the stalled link: {report:?}");
    assert_eq!(report.ended_without_goodbye, 1, "the detached session: {report:?}");

    for (i, (a, b)) in clients.iter().enumerate() {
        assert!(eventually(LIMIT, || a.ended().is_some()).await, "client {i} saw the end");
        assert_eq!(a.ended(), Some(SessionEnd::PeerGoodbye { code: CODE }), "client {i}");
        assert_eq!(a.stats().session.conduit.resumes, resumes_before[i], "client {i} never resumed");
        assert_eq!(b.ended(), Some(SessionEnd::LocalClose { code: CODE }), "server side {i}");
    }
    assert!(stuck_b.ended().is_some() && detached_b.ended().is_some());
    // No more sessions: `accept` fails and the listener is closed.
    assert!(acc.accept().await.is_err(), "accept fails after a shutdown");
    assert!(eventually(LIMIT, || std::net::TcpStream::connect(addr).is_err()).await, "the listener is closed");
    drop((stuck, detached));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_acceptor_shutdown_says_goodbye_to_every_session() {
    const N: usize = 4;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let acc = sotto_tokio::raw::serve_tcp(l, test_config()).expect("config");
    let mut clients = Vec::new();
    for _ in 0..N {
        let a = within(
            LIMIT,
            "connect",
            sotto_tokio::raw::connect(move || tokio::net::TcpStream::connect(addr), test_config()),
        )
        .await
        .expect("connect");
        let b = within(LIMIT, "accept", acc.accept()).await.expect("accept");
        clients.push((a, b));
    }
    let bound = Duration::from_millis(500);
    let t0 = Instant::now();
    let report = within(LIMIT, "shutdown", acc.shutdown(CODE, "server stopping", bound)).await;
    let took = t0.elapsed();
    println!("raw shutdown took {took:?}: {report:?}");
    assert!(took < bound + Duration::from_millis(300), "shutdown took {took:?}, bound {bound:?}");
    assert_eq!((report.closed_gracefully, report.ended_without_goodbye, report.timed_out), (N as u64, 0, 0));
    for (i, (a, _)) in clients.iter().enumerate() {
        assert!(eventually(LIMIT, || a.ended().is_some()).await, "client {i} saw the end");
        assert_eq!(a.ended(), Some(SessionEnd::PeerGoodbye { code: CODE }), "client {i}");
        assert_eq!(a.stats().conduit.resumes, 0, "client {i} never resumed");
    }
    assert!(acc.accept().await.is_err(), "accept fails after a shutdown");
}
