//! Session loss over real sockets on both runtimes: the server is killed mid-burst (every
//! link through its proxy cut at once, as a crash would) and restarted (a new acceptor at
//! the same address, which knows nothing of the session: the resume is REJECTED).
//!
//! - What the client gets back ([`SessionHandle::unacknowledged`]) plus what the old
//!   server's application received covers every message sent: the old server's share is a
//!   prefix of each connection's messages (once each, in order), the returned share a
//!   suffix. They may overlap: a message the old server received but had not acknowledged
//!   yet is returned too (at-least-once across a loss); the overlap is printed.
//! - A [`ReconnectingSession`] continues on a new session: our connections opened again,
//!   the returned messages sent again, then new ones; the new server gets every message the
//!   old one did not, in order.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::future::{join, select, Either, FutureExt};
use sotto_adapter_tests::proxy::{cuttable_tcp, Chaos, ChaosProxy, Endpoint};
use sotto_adapter_tests::sessions::{conn_message, dial, listen, open_accept, session_config, Rt, Transport};
use sotto_adapter_tests::workload::{eventually, seed, within};
use sotto_proto::SessionEnd;
use sotto_tokio::{
    Config, ConnError, Connection, ReconnectingSession, RenewError, SessionAcceptor, SessionHandle, Unacknowledged,
};

const LIMIT: Duration = Duration::from_secs(30);
/// Messages per connection.
const N: u64 = 400;
/// Connections.
const K: usize = 2;

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

async fn tcp_listener(rt: Rt) -> (SessionAcceptor, SocketAddr) {
    let (acc, at) = listen(rt, Transport::Tcp, config()).await;
    let Endpoint::Tcp(addr) = at else { unreachable!("a TCP listener") };
    (acc, addr)
}

/// What the old server's application read on each connection.
type Received = RefCell<Vec<Vec<Bytes>>>;

/// Read every connection into `got` until dropped; once `kill_at` messages were read in
/// all, drop `proxy` (the server dies with whatever is in flight).
async fn read_all(ys: &mut [Connection], got: &Received, kill_at: usize, proxy: &RefCell<Option<ChaosProxy>>) {
    let readers = ys.iter_mut().enumerate().map(|(t, y)| async move {
        while let Ok(m) = y.recv().await {
            got.borrow_mut()[t].push(m);
            if got.borrow().iter().map(Vec::len).sum::<usize>() >= kill_at {
                drop(proxy.borrow_mut().take());
            }
        }
    });
    futures::future::join_all(readers).await;
}

/// What a connection still has queued, without waiting.
fn drain_queued(ys: &mut [Connection], got: &Received) {
    for (t, y) in ys.iter_mut().enumerate() {
        while let Some(Ok(m)) = y.recv().now_or_never() {
            got.borrow_mut()[t].push(m);
        }
    }
}

/// The server behind `proxy` is killed mid-burst: `K` connections from `a` (accepted by
/// `b1`), message `i` of each sent in turn, as fast as the replay ring takes them; the
/// moment the old server's application has read a quarter of them, the proxy is dropped
/// (every link cut, with what was in flight). Returns what the old server's application
/// read per connection, and the messages sent in order.
async fn burst_and_kill(
    a: &SessionHandle,
    b1: &SessionHandle,
    proxy: ChaosProxy,
    xs: &mut [Connection],
    ys: &mut [Connection],
) -> (Vec<Vec<Bytes>>, Vec<(usize, Bytes)>) {
    let got: Received = RefCell::new(vec![Vec::new(); K]);
    let proxy = RefCell::new(Some(proxy));
    let mut sent = Vec::new();
    let burst = async {
        for i in 0..N {
            for (t, x) in xs.iter_mut().enumerate() {
                let m = conn_message(t as u32, i);
                x.send(m.clone()).await.expect("into the replay ring");
                sent.push((t, m));
            }
        }
        assert!(eventually(LIMIT, || proxy.borrow().is_none()).await, "the old server read a quarter");
        assert!(eventually(LIMIT, || !b1.stats().link_established).await, "the old server lost its link");
        assert!(eventually(LIMIT, || !a.stats().link_established).await, "the client lost its link");
    };
    {
        let burst = std::pin::pin!(burst);
        let readers = std::pin::pin!(read_all(ys, &got, (N / 4) as usize * K, &proxy));
        match select(burst, readers).await {
            Either::Left(((), _)) => {}
            Either::Right(_) => panic!("the old server's connections ended while detached"),
        }
    }
    drain_queued(ys, &got);
    (got.into_inner(), sent)
}

/// Check the model: per connection the old server read a prefix and the returned messages
/// are a suffix that together cover everything; the returned ones in global order are a
/// suffix of all sent. Returns (sent, old server's, returned) counts.
fn check_coverage(
    lost: &Unacknowledged,
    ids: &[u32],
    old: &[Vec<Bytes>],
    sent: &[(usize, Bytes)],
) -> (usize, usize, usize) {
    let returned: Vec<(usize, Bytes)> = lost
        .messages
        .iter()
        .map(|m| (ids.iter().position(|&id| id == m.conn).expect("one of our connections"), m.payload.clone()))
        .collect();
    assert!(returned.len() <= sent.len());
    assert_eq!(
        returned[..],
        sent[sent.len() - returned.len()..],
        "the returned messages are the unsent suffix, in order"
    );
    for t in 0..K {
        let all: Vec<Bytes> = (0..N).map(|i| conn_message(t as u32, i)).collect();
        let back: Vec<Bytes> = returned.iter().filter(|(c, _)| *c == t).map(|(_, m)| m.clone()).collect();
        assert_eq!(old[t][..], all[..old[t].len()], "conn {t}: the old server read a prefix, once each, in order");
        assert_eq!(back[..], all[all.len() - back.len()..], "conn {t}: the returned ones are a suffix");
        assert!(
            old[t].len() + back.len() >= all.len(),
            "conn {t}: {} read + {} returned < {}",
            old[t].len(),
            back.len(),
            all.len()
        );
    }
    let read: usize = old.iter().map(Vec::len).sum();
    (sent.len(), read, returned.len())
}

async fn restart_run(rt: Rt) {
    let (acc1, addr1) = tcp_listener(rt).await;
    let (proxy, paddr) = cuttable_tcp(addr1);
    let a = dial(rt, Endpoint::Tcp(paddr), config()).await;
    let b1 = acc1.accept().await.expect("accept");
    let (mut xs, mut ys): (Vec<Connection>, Vec<Connection>) = open_accept(&a, &b1, K).await.into_iter().unzip();
    let (old, sent) = burst_and_kill(&a, &b1, proxy, &mut xs, &mut ys).await;
    // The server comes back at the same address, knowing nothing of the session.
    let (acc2, addr2) = tcp_listener(rt).await;
    let _proxy = restore(paddr, addr2);
    let end = within(LIMIT, "the resume is refused", a.closed()).await;
    assert_eq!(end, SessionEnd::Rejected);
    let lost = a.unacknowledged().expect("the session ended");
    assert_eq!(lost.end, SessionEnd::Rejected);
    let ids: Vec<u32> = xs.iter().map(Connection::id).collect();
    assert_eq!(lost.connections.iter().map(|c| c.id).collect::<Vec<_>>(), ids, "our connections, by id");
    for (i, c) in lost.connections.iter().enumerate() {
        assert!(c.ours && !c.unknown_to_peer && !c.finished, "{c:?}");
        assert_eq!(&c.open_metadata[..], format!("c{i}").as_bytes());
    }
    let (n, read, back) = check_coverage(&lost, &ids, &old, &sent);
    println!("{rt:?}: sent {n}, the old server read {read}, {back} returned, {} both (at least once)", read + back - n);
    // The messages are the client's to keep: a second call gives the same.
    assert_eq!(a.unacknowledged().expect("ended").messages, lost.messages);
    drop((acc1, b1, acc2));
}

#[tokio::test]
async fn tokio_a_server_killed_mid_burst_leaves_the_client_every_unacknowledged_message() {
    restart_run(Rt::Tokio).await;
}

#[test]
fn smol_a_server_killed_mid_burst_leaves_the_client_every_unacknowledged_message() {
    smol::block_on(restart_run(Rt::Smol));
}

/// A [`ReconnectingSession`] on `rt` dialing `addr` (`hello` in every session's Hello).
async fn reconnecting(rt: Rt, addr: SocketAddr, hello: &[u8]) -> ReconnectingSession {
    match rt {
        Rt::Tokio => sotto_tokio::connect_reconnecting(move || tokio::net::TcpStream::connect(addr), config(), hello)
            .await
            .expect("connect"),
        Rt::Smol => sotto_smol::connect_reconnecting(move || smol::net::TcpStream::connect(addr), config(), hello)
            .await
            .expect("connect"),
    }
}

async fn reconnecting_run(rt: Rt) {
    let (acc1, addr1) = tcp_listener(rt).await;
    let (proxy, paddr) = cuttable_tcp(addr1);
    let mut rs = reconnecting(rt, paddr, b"me").await;
    let b1 = acc1.accept().await.expect("accept");
    assert_eq!(b1.peer_metadata().as_deref(), Some(&b"me"[..]));
    let (mut xs, mut ys): (Vec<Connection>, Vec<Connection>) =
        open_accept(rs.session(), &b1, K).await.into_iter().unzip();
    let a = rs.session().clone();
    let (old, sent) = burst_and_kill(&a, &b1, proxy, &mut xs, &mut ys).await;
    let (acc2, addr2) = tcp_listener(rt).await;
    let _proxy = restore(paddr, addr2);
    // The application sees its connections end; the reconnecting session starts anew.
    assert_eq!(within(LIMIT, "the resume is refused", a.closed()).await, SessionEnd::Rejected);
    assert!(matches!(xs[0].send(b"late").await, Err(ConnError::Ended(SessionEnd::Rejected))));
    let accept_reopened = async {
        let b2 = acc2.accept().await.expect("the new session");
        assert_eq!(b2.peer_metadata().as_deref(), Some(&b"me"[..]), "the same hello metadata");
        let mut ys2 = Vec::new();
        for t in 0..K {
            let inc = b2.accept().await.expect("reopened");
            assert_eq!(&inc.metadata()[..], format!("c{t}").as_bytes(), "reopened with its metadata, in order");
            ys2.push(inc.accept(b"again").await.expect("answer"));
        }
        (b2, ys2)
    };
    let renew = async {
        let renewal = rs.renewed().await.expect("a new session");
        let reopened = renewal.reopen().await.expect("reopened");
        (renewal, reopened)
    };
    let ((renewal, reopened), (b2, mut ys2)) = within(LIMIT, "renewal", join(renew, accept_reopened)).await;
    assert_eq!(rs.renewals(), 1);
    assert_eq!(renewal.lost.end, SessionEnd::Rejected);
    let ids: Vec<u32> = xs.iter().map(Connection::id).collect();
    let (n, read, back) = check_coverage(&renewal.lost, &ids, &old, &sent);
    assert_eq!(reopened.len(), K);
    // The application sends the returned messages again, then goes on with new ones.
    let mut resent = [0usize; K];
    for (t, again) in reopened.into_iter().enumerate() {
        assert_eq!(again.old.id, ids[t]);
        resent[t] = again.messages.len();
        let mut conn = again.conn;
        for m in again.messages {
            conn.send(m).await.expect("resend");
        }
        for i in N..N + 20 {
            conn.send(conn_message(t as u32, i)).await.expect("new message");
        }
        xs[t] = conn;
    }
    // The new server gets, per connection, exactly what the old one may have missed, in
    // order, then the new messages: with the old server's share, every message.
    for (t, y) in ys2.iter_mut().enumerate() {
        let from = N as usize - resent[t];
        assert!(from <= old[t].len(), "conn {t}: nothing is missing between the two servers");
        for i in from as u64..N + 20 {
            let got = within(LIMIT, "the new server reads", y.recv()).await.expect("message");
            assert_eq!(got, conn_message(t as u32, i), "conn {t}, message {i}");
        }
    }
    println!("{rt:?}: sent {n}, the old server read {read}, {back} resent on the new session");
    // A graceful close ends it: nothing to renew.
    let end = within(LIMIT, "close", rs.session().close(0, "done")).await;
    assert_eq!(end, SessionEnd::LocalClose { code: 0 });
    assert!(matches!(rs.renewed().await, Err(RenewError::Closed(SessionEnd::LocalClose { code: 0 }))));
    drop((acc1, b1, b2, acc2));
}

#[tokio::test]
async fn tokio_a_reconnecting_session_continues_on_a_new_session_and_the_new_server_gets_every_message() {
    reconnecting_run(Rt::Tokio).await;
}

#[test]
fn smol_a_reconnecting_session_continues_on_a_new_session_and_the_new_server_gets_every_message() {
    smol::block_on(reconnecting_run(Rt::Smol));
}

/// Messages a connection's `Sink` staged and never queued come back after the loss, after
/// the replay ring's: once a flush met the end, or the sender was dropped after it. Before
/// that they are the sender's (its flush returns the error).
async fn staged_run(rt: Rt) {
    use futures::SinkExt;
    let (acc1, addr1) = tcp_listener(rt).await;
    let (proxy, paddr) = cuttable_tcp(addr1);
    let a = dial(rt, Endpoint::Tcp(paddr), config()).await;
    let b1 = acc1.accept().await.expect("accept");
    let (xs, _ys): (Vec<Connection>, Vec<Connection>) = open_accept(&a, &b1, 2).await.into_iter().unzip();
    let ids: Vec<u32> = xs.iter().map(Connection::id).collect();
    drop(proxy);
    assert!(eventually(LIMIT, || !a.stats().link_established).await, "the link is gone");
    let mut xs = xs.into_iter();
    let (mut tx0, _rx0) = xs.next().expect("conn 0").split();
    let (mut tx1, _rx1) = xs.next().expect("conn 1").split();
    tx0.send(b"in the ring").await.expect("into the replay ring");
    tx0.feed(Bytes::from_static(b"staged 1")).await.expect("staged");
    tx0.feed(Bytes::from_static(b"staged 2")).await.expect("staged");
    tx1.feed(Bytes::from_static(b"staged, sender dropped")).await.expect("staged");
    let (acc2, addr2) = tcp_listener(rt).await;
    let _proxy = restore(paddr, addr2);
    assert_eq!(within(LIMIT, "the resume is refused", a.closed()).await, SessionEnd::Rejected);
    let listed = |lost: Unacknowledged| lost.messages.into_iter().map(|m| (m.conn, m.payload)).collect::<Vec<_>>();
    assert_eq!(listed(a.unacknowledged().expect("ended")), [(ids[0], Bytes::from_static(b"in the ring"))]);
    assert!(matches!(tx0.flush().await, Err(ConnError::Ended(SessionEnd::Rejected))));
    drop(tx1);
    assert_eq!(
        listed(a.unacknowledged().expect("ended")),
        [
            (ids[0], Bytes::from_static(b"in the ring")),
            (ids[0], Bytes::from_static(b"staged 1")),
            (ids[0], Bytes::from_static(b"staged 2")),
            (ids[1], Bytes::from_static(b"staged, sender dropped")),
        ]
    );
    drop((acc1, b1, acc2));
}

#[tokio::test]
async fn tokio_messages_a_sink_staged_come_back_after_the_loss() {
    staged_run(Rt::Tokio).await;
}

#[test]
fn smol_messages_a_sink_staged_come_back_after_the_loss() {
    smol::block_on(staged_run(Rt::Smol));
}

/// The acceptor's side of a loss, and control messages: the server accepts a connection
/// and sends on it while no link is up, finishes it, and its session is lost (no link
/// within its `recovery_timeout`). It gets back the messages, and the connection: the
/// peer's (not ours to open again), with its Open metadata, unknown to the peer (our Accept
/// never reached it), finished.
async fn acceptor_side_run(rt: Rt) {
    let mut server = config();
    server.protocol.recovery_timeout = Duration::from_millis(500);
    let (acc, at) = listen(rt, Transport::Tcp, server).await;
    let Endpoint::Tcp(addr) = at else { unreachable!("a TCP listener") };
    let (proxy, paddr) = cuttable_tcp(addr);
    let a = dial(rt, Endpoint::Tcp(paddr), config()).await;
    let b = acc.accept().await.expect("accept");
    // The client's Open goes out (its wait for the answer is given up at once).
    assert!(a.open(b"c0").now_or_never().is_none(), "an open waits for the answer");
    let inc = within(LIMIT, "the Open arrives", b.accept()).await.expect("incoming");
    drop(proxy);
    assert!(eventually(LIMIT, || !b.stats().link_established).await, "the link is gone");
    let id = inc.id();
    let mut y = inc.accept(b"ok").await.expect("accepted, in the replay ring");
    y.send(b"s1").await.expect("into the ring");
    y.send(b"s2").await.expect("into the ring");
    y.finish().await.expect("end of stream, into the ring");
    assert_eq!(within(LIMIT, "the recovery timeout", b.closed()).await, SessionEnd::RecoveryTimeout);
    let lost = b.unacknowledged().expect("ended");
    assert_eq!(lost.end, SessionEnd::RecoveryTimeout);
    let listed: Vec<_> = lost.messages.iter().map(|m| (m.conn, m.payload.clone())).collect();
    assert_eq!(listed, [(id, Bytes::from_static(b"s1")), (id, Bytes::from_static(b"s2"))]);
    assert_eq!(lost.connections.len(), 1);
    let c = &lost.connections[0];
    assert_eq!(
        (c.id, c.ours, &c.open_metadata[..], c.unknown_to_peer, c.finished),
        (id, false, &b"c0"[..], true, true)
    );
    drop((a, acc));
}

#[tokio::test]
async fn tokio_a_lost_acceptor_session_returns_its_messages_and_the_peers_connection_unknown_to_the_peer() {
    acceptor_side_run(Rt::Tokio).await;
}

#[test]
fn smol_a_lost_acceptor_session_returns_its_messages_and_the_peers_connection_unknown_to_the_peer() {
    smol::block_on(acceptor_side_run(Rt::Smol));
}
