//! Zero-downtime restart over real sockets (issue 17): an "old" session acceptor hands every
//! live session, with traffic in flight both ways, and its listening socket to a "new" one
//! over a Unix socket (both in this process); nothing is lost, duplicated or reordered, and
//! each client sees at most one link change. On tokio and on smol.
#![cfg(unix)]

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{join, join_all};
use sotto_adapter_tests::restart::{
    all_received, assert_exactly_once, client_conn, serve_app, Ledger, Progress, Spawn,
};
use sotto_adapter_tests::sessions::session_config;
use sotto_adapter_tests::workload::{eventually, within};
use sotto_driver::handoff::{receive_listener, HandoffConfig, ListenerFamily};
use sotto_driver::{Config, SessionAcceptor, SessionHandle};

const LIMIT: Duration = Duration::from_secs(30);
const CLIENTS: u32 = 6;
const CONNS: u32 = 2;
const MSGS: u64 = 400;

fn config() -> Config {
    let mut c = session_config();
    c.acceptor.max_sessions = 64;
    c
}

/// Which adapter runs the test: how to serve a std listener, dial, spawn.
struct Adapter {
    serve: fn(std::net::TcpListener) -> SessionAcceptor,
    spawn: Spawn,
}

fn tokio_adapter() -> Adapter {
    Adapter {
        serve: |l| {
            l.set_nonblocking(true).expect("nonblocking");
            let l = tokio::net::TcpListener::from_std(l).expect("tokio listener");
            sotto_tokio::serve_sessions_tcp(l, config()).expect("config")
        },
        spawn: |f| drop(tokio::spawn(f)),
    }
}

fn smol_adapter() -> Adapter {
    Adapter {
        serve: |l| {
            let l = smol::net::TcpListener::try_from(l).expect("smol listener");
            sotto_smol::serve_sessions_tcp(l, config()).expect("config")
        },
        spawn: |f| smol::spawn(f).detach(),
    }
}

async fn dial(tokio: bool, addr: std::net::SocketAddr) -> SessionHandle {
    if tokio {
        sotto_tokio::connect_session(move || tokio::net::TcpStream::connect(addr), config()).await.expect("connect")
    } else {
        sotto_smol::connect_session(move || smol::net::TcpStream::connect(addr), config()).await.expect("connect")
    }
}

/// Run `f` on a thread, awaiting its result (the handoff's blocking `receive_listener`).
async fn on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = futures::channel::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.await.expect("thread")
}

async fn restart_under_traffic(tokio: bool, adapter: Adapter) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let passed: OwnedFd = listener.try_clone().expect("dup").into();
    let old = Arc::new((adapter.serve)(listener));
    let (old_ledger, new_ledger) = (Arc::new(Ledger::default()), Arc::new(Ledger::default()));
    let progress = Arc::new(Progress::default());
    (adapter.spawn)(Box::pin(serve_app(
        Arc::clone(&old),
        MSGS,
        Arc::clone(&old_ledger),
        Arc::clone(&progress),
        adapter.spawn,
    )));

    let mut clients = Vec::new();
    let mut conns = Vec::new();
    for c in 0..CLIENTS {
        let s = dial(tokio, addr).await;
        for k in 0..CONNS {
            let tag = c * CONNS + k;
            conns.push((tag, s.open(format!("c{tag}").as_bytes()).await.expect("open")));
        }
        clients.push(s);
    }
    let received = Arc::new(Progress::default());
    let traffic = join_all(conns.into_iter().map(|(tag, c)| client_conn(c, tag, MSGS, Arc::clone(&received))));

    let restart = async {
        // Traffic flows both ways before the restart, and goes on during it.
        assert!(
            eventually(LIMIT, || all_received(&received, CLIENTS * CONNS, 40) && old_ledger.total() >= 40).await,
            "traffic before the restart"
        );
        let (a, b) = UnixStream::pair().expect("socketpair");
        let new_side = async {
            let (got, b) = on_thread(move || {
                let got = receive_listener(&b, LIMIT);
                (got, b)
            })
            .await;
            let (fd, family) = got.expect("the listener's descriptor");
            assert_eq!(family, ListenerFamily::Tcp);
            let new = Arc::new((adapter.serve)(std::net::TcpListener::from(fd)));
            (adapter.spawn)(Box::pin(serve_app(
                Arc::clone(&new),
                MSGS,
                Arc::clone(&new_ledger),
                Arc::clone(&progress),
                adapter.spawn,
            )));
            let report = new.receive_handoff(b, HandoffConfig::default()).await.expect("handoff received");
            (new, report)
        };
        let (sent, (new, got)) =
            join(old.hand_off(a, Some((passed, ListenerFamily::Tcp)), HandoffConfig::default()), new_side).await;
        println!("sender: {sent:?}\nreceiver: {got:?}");
        assert!(sent.listener_sent);
        assert_eq!(sent.handed_off, u64::from(CLIENTS), "every live session handed off: {sent:?}");
        assert_eq!((sent.kept, sent.broken), (0, false));
        assert_eq!((got.adopted, got.refused, got.done), (u64::from(CLIENTS), 0, true));
        assert_eq!(old.stats().endpoint.sessions_released, u64::from(CLIENTS));
        new
    };
    let (_, new) = within(LIMIT, "restart under traffic", join(traffic, restart)).await;
    // A client's send returns once its message is in the replay ring: wait for delivery.
    let all = (CLIENTS * CONNS) as usize * MSGS as usize;
    eventually(LIMIT, || old_ledger.total() + new_ledger.total() >= all).await;
    for tag in 0..CLIENTS * CONNS {
        assert_exactly_once(tag, MSGS, &old_ledger, &new_ledger);
    }
    assert!(new_ledger.total() > 0, "the new application received traffic");
    // A client whose messages were all delivered before its session moved notices the old
    // link's close on its own time: wait for every resume before counting them.
    eventually(LIMIT, || new.stats().endpoint.resumes_routed >= u64::from(CLIENTS)).await;
    for s in &clients {
        let st = s.stats();
        assert!(st.link_downs <= 1, "a client saw {} link changes", st.link_downs);
        assert!(st.link_established, "resumed into the new acceptor");
    }
    assert_eq!(new.stats().endpoint.sessions_adopted, u64::from(CLIENTS));
    assert_eq!(
        new.stats().endpoint.resumes_routed,
        u64::from(CLIENTS),
        "each client resumed into the new acceptor once"
    );
}

#[tokio::test]
async fn tokio_restart_hands_every_live_session_and_the_listener_over_nothing_lost_one_link_change() {
    restart_under_traffic(true, tokio_adapter()).await;
}

#[test]
fn smol_restart_hands_every_live_session_and_the_listener_over_nothing_lost_one_link_change() {
    smol::block_on(restart_under_traffic(false, smol_adapter()));
}

/// What sotto still holds for the application moves with the session: messages delivered to
/// a connection's queue but not yet read, and a peer's Open not yet accepted. The new
/// application reads them, in order, once each.
#[tokio::test]
async fn unread_messages_and_an_unaccepted_open_move_with_the_session_to_the_new_application() {
    let adapter = tokio_adapter();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let passed: OwnedFd = listener.try_clone().expect("dup").into();
    let old = (adapter.serve)(listener);
    // No keepalive within the test's time: the client changes link only because the old
    // process closes it once the session is handed off.
    let mut quiet = config();
    quiet.protocol.ping_interval = Duration::from_secs(60);
    quiet.protocol.pong_timeout = Duration::from_secs(120);
    let client =
        sotto_tokio::connect_session(move || tokio::net::TcpStream::connect(addr), quiet).await.expect("connect");
    let server = old.accept().await.expect("accept");
    let answer = async { server.accept().await.expect("incoming").accept(b"ok").await.expect("answer") };
    let (opened, old_conn) = within(LIMIT, "open c0", join(client.open(b"c0"), answer)).await;
    let mut c0 = opened.expect("open");
    for i in 0..100 {
        c0.send(sotto_adapter_tests::sessions::conn_message(0, i)).await.expect("send");
    }
    // The old application reads nothing: all 100 wait in the session's queue.
    assert!(eventually(LIMIT, || server.stats().queued_messages == 100).await, "delivered, unread");
    // A second connection the old application never accepts.
    let c1 = client.open(b"c1");
    let mut c1 = std::pin::pin!(c1);
    assert!(futures::FutureExt::now_or_never(&mut c1).is_none());
    assert!(eventually(LIMIT, || server.stats().pending_opens == 1).await, "an Open waits for accept");

    let (a, b) = UnixStream::pair().expect("socketpair");
    let new_side = async {
        let (got, b) = on_thread(move || (receive_listener(&b, LIMIT), b)).await;
        let (fd, _) = got.expect("descriptor");
        let new = (adapter.serve)(std::net::TcpListener::from(fd));
        let report = new.receive_handoff(b, HandoffConfig::default()).await.expect("received");
        assert_eq!(report.adopted, 1);
        new
    };
    let (sent, new) = within(
        LIMIT,
        "handoff",
        join(old.hand_off(a, Some((passed, ListenerFamily::Tcp)), HandoffConfig::default()), new_side),
    )
    .await;
    assert_eq!(sent.handed_off, 1, "{sent:?}");
    assert_eq!(
        within(LIMIT, "old session ends", server.closed()).await,
        sotto_proto::SessionEnd::HandedOff,
        "the old handle sees the session handed off"
    );
    drop(old_conn);

    let adopted = within(LIMIT, "accept the adopted session", new.accept()).await.expect("adopted");
    assert!(
        eventually(Duration::from_secs(5), || new.stats().endpoint.resumes_routed == 1).await,
        "the old process closed the link at once and the client resumed into the new one"
    );
    let mut conns = adopted.adopted_connections();
    assert_eq!(conns.len(), 1, "the open connection comes along");
    assert!(adopted.adopted_connections().is_empty(), "once");
    let mut conn = conns.pop().expect("one");
    assert_eq!(&conn.peer_metadata()[..], b"c0");
    for i in 0..100 {
        let m = within(LIMIT, "read a moved message", conn.recv()).await.expect("message");
        assert_eq!(m, sotto_adapter_tests::sessions::conn_message(0, i), "message {i} lost, duplicated or reordered");
    }
    // The unaccepted Open is accepted by the new application; the client's open completes.
    let inc = within(LIMIT, "the moved Open", adopted.accept()).await.expect("incoming");
    assert_eq!(&inc.metadata()[..], b"c1");
    let (answered, opened) = join(inc.accept(b"ok1"), c1).await;
    let (mut s1, mut c1) = (answered.expect("answered"), opened.expect("opened"));
    assert_eq!(&c1.peer_metadata()[..], b"ok1");
    // Both connections carry traffic both ways after the move, over the resumed link.
    c1.send(&b"ping"[..]).await.expect("send");
    assert_eq!(&within(LIMIT, "c1 to server", s1.recv()).await.expect("recv")[..], b"ping");
    conn.send(&b"pong"[..]).await.expect("send");
    assert_eq!(&within(LIMIT, "server to c0", c0.recv()).await.expect("recv")[..], b"pong");
    assert_eq!(client.stats().link_downs, 1, "one link change");
}

/// Messages the old application had already taken from a connection stay with it (it reads
/// them after the handoff), and the credit they used goes back to the client from the new
/// process: the client's window does not shrink. Here the client fills its whole window
/// before the handoff and the old reader takes all of it into its local queue, so without
/// that credit the client could never send again.
#[tokio::test]
async fn credit_of_messages_the_old_application_took_goes_back_to_the_client_after_the_handoff() {
    const LEN: usize = 1024;
    let adapter = tokio_adapter();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let passed: OwnedFd = listener.try_clone().expect("dup").into();
    let old = (adapter.serve)(listener);
    let window = config().protocol.initial_credit as u64;
    let per_window = window / LEN as u64;
    let total = 3 * per_window;
    let message = |i: u64| {
        let mut m = vec![(i % 251) as u8; LEN];
        m[..8].copy_from_slice(&i.to_le_bytes());
        m
    };
    let index = |m: &[u8]| u64::from_le_bytes(m[..8].try_into().expect("8 bytes"));

    let client = dial(true, addr).await;
    let server = old.accept().await.expect("accept");
    let answer = async { server.accept().await.expect("incoming").accept(b"ok").await.expect("answer") };
    let (opened, old_conn) = within(LIMIT, "open", join(client.open(b"c0"), answer)).await;
    let c0 = opened.expect("open");
    // The client sends three windows' worth, as fast as its credit allows.
    let sender = tokio::spawn(async move {
        let mut c0 = c0;
        for i in 0..total {
            c0.send(message(i)).await.expect("client send");
        }
        c0
    });
    // The old application lets a whole window arrive, then takes it all into its reader's
    // local queue (the first recv takes the queue) and reads just one message: nothing is
    // released, nothing granted.
    assert!(eventually(LIMIT, || server.stats().queued_messages as u64 == per_window).await, "a full window arrived");
    let (_old_tx, mut old_rx) = old_conn.split();
    let first = within(LIMIT, "the first message", old_rx.recv()).await.expect("recv");
    assert_eq!(index(&first), 0);

    let (a, b) = UnixStream::pair().expect("socketpair");
    let new_side = async {
        let (got, b) = on_thread(move || (receive_listener(&b, LIMIT), b)).await;
        let (fd, _) = got.expect("descriptor");
        let new = (adapter.serve)(std::net::TcpListener::from(fd));
        let report = new.receive_handoff(b, HandoffConfig::default()).await.expect("received");
        assert_eq!(report.adopted, 1);
        new
    };
    let (sent, new) = within(
        LIMIT,
        "handoff",
        join(old.hand_off(a, Some((passed, ListenerFamily::Tcp)), HandoffConfig::default()), new_side),
    )
    .await;
    assert_eq!(sent.handed_off, 1, "{sent:?}");
    // The old application reads what it had taken: the rest of the first window.
    let mut got = vec![0];
    loop {
        match within(LIMIT, "the old reader", old_rx.recv()).await {
            Ok(m) => got.push(index(&m)),
            Err(e) => {
                assert_eq!(e, sotto_driver::ConnError::Ended(sotto_proto::SessionEnd::HandedOff));
                break;
            }
        }
    }
    assert_eq!(got, (0..per_window).collect::<Vec<_>>(), "the old application keeps what it took");
    // The new application reads the rest: the client got its credit back.
    let adopted = within(LIMIT, "accept the adopted session", new.accept()).await.expect("adopted");
    let mut conn = adopted.adopted_connections().pop().expect("the connection moves");
    while got.len() < total as usize {
        let m = within(Duration::from_secs(10), "the client's next window (its credit back)", conn.recv())
            .await
            .expect("recv");
        got.push(index(&m));
    }
    assert_eq!(got, (0..total).collect::<Vec<_>>(), "every message once, in order, across the two applications");
    let _c0 = within(LIMIT, "the client's sends", sender).await.expect("sender");
}

/// A connection the peer closed while the old application had not read its messages: the
/// session no longer holds it, its end and messages wait for the reader. It moves with the
/// session (it used to be refused as "more connections than the session holds", and the
/// session stayed behind): the new application reads the messages, then the close.
#[tokio::test]
async fn a_connection_the_peer_closed_with_messages_unread_moves_with_the_session() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let old = sotto_tokio::serve_sessions_tcp(l, config()).expect("config");
    let l2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let new = sotto_tokio::serve_sessions_tcp(l2, config()).expect("config");
    let client =
        sotto_tokio::connect_session(move || tokio::net::TcpStream::connect(addr), config()).await.expect("connect");
    let server = old.accept().await.expect("accept");
    let answer = async { server.accept().await.expect("incoming").accept(b"ok").await.expect("answer") };
    let (opened, old_conn) = within(LIMIT, "open", join(client.open(b"c0"), answer)).await;
    let mut c0 = opened.expect("open");
    for i in 0..10 {
        c0.send(sotto_adapter_tests::sessions::conn_message(0, i)).await.expect("send");
    }
    c0.close(b"bye").await;
    assert!(eventually(LIMIT, || server.stats().queued_messages == 10).await, "delivered, unread");
    assert!(eventually(LIMIT, || server.stats().session.connections_open == 0).await, "closed by the peer");
    let (a, b) = UnixStream::pair().expect("socketpair");
    let (sent, got) = within(
        LIMIT,
        "handoff",
        join(old.hand_off(a, None, HandoffConfig::default()), new.receive_handoff(b, HandoffConfig::default())),
    )
    .await;
    assert_eq!(sent.handed_off, 1, "{sent:?}");
    assert_eq!(got.expect("received").adopted, 1);
    drop(old_conn);
    let adopted = within(LIMIT, "accept the adopted session", new.accept()).await.expect("adopted");
    let mut conns = adopted.adopted_connections();
    assert_eq!(conns.len(), 1, "the closed connection comes along, its messages unread");
    let mut conn = conns.pop().expect("one");
    for i in 0..10 {
        let m = within(LIMIT, "read a moved message", conn.recv()).await.expect("message");
        assert_eq!(m, sotto_adapter_tests::sessions::conn_message(0, i), "message {i} lost, duplicated or reordered");
    }
    assert!(within(LIMIT, "the close", conn.recv()).await.is_err(), "then the peer's close");
}

/// `Duration::MAX` as "no limit" on either side: the deadlines saturate (they used to
/// overflow the clock and panic the handoff's thread, so nothing was handed off).
#[tokio::test]
async fn timeouts_of_duration_max_mean_no_limit_not_a_panic() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let old = sotto_tokio::serve_sessions_tcp(l, config()).expect("config");
    let l2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let new = sotto_tokio::serve_sessions_tcp(l2, config()).expect("config");
    let _client =
        sotto_tokio::connect_session(move || tokio::net::TcpStream::connect(addr), config()).await.expect("connect");
    let _server = old.accept().await.expect("accept");
    let mut forever = HandoffConfig::default();
    forever.ack_timeout = Duration::MAX;
    forever.idle_timeout = Duration::MAX;
    let (a, b) = UnixStream::pair().expect("socketpair");
    let (sent, got) =
        within(LIMIT, "handoff", join(old.hand_off(a, None, forever), new.receive_handoff(b, forever))).await;
    assert_eq!(sent.handed_off, 1, "{sent:?}");
    assert_eq!(got.expect("received").adopted, 1);
    // And the listener's wait.
    let (a, b) = UnixStream::pair().expect("socketpair");
    drop(a);
    let got = on_thread(move || receive_listener(&b, Duration::MAX).map(|_| ())).await;
    assert!(matches!(got, Err(sotto_driver::handoff::HandoffError::PeerClosed)), "{got:?}");
}
