//! The handoff's freeze against a driver mid-step (issue 17): the handoff thread may freeze
//! and export a session after its driver's step checked that it was not frozen, while the
//! driver reads its link. What the driver reads then must not be fed to the frozen session:
//! the exported state does not hold it, so the old application would read it and the peer
//! would replay it to the new process too (delivered twice).
//!
//! The server's link is wrapped in a gate that holds the driver inside its read (after the
//! step's check) until a fake receiver has the OFFER (the session is frozen and exported);
//! then the read completes with a message the client sent meanwhile.
//!
//! Also here: what the old process's application is left with once its session moved.
#![cfg(unix)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use sotto_adapter_tests::sessions::{exchange_all, open_accept, session_config};
use sotto_adapter_tests::workload::within;
use sotto_driver::handoff::HandoffConfig;
use sotto_driver::Connection;
use sotto_proto::handoff::{self, Ack, Frame, HEADER_LEN};
use sotto_proto::SessionEnd;
use sotto_tokio::{AcceptHooks, AcceptedLink};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const LIMIT: Duration = Duration::from_secs(20);

/// Holds the first read after it is armed until released.
struct GateCtl {
    armed: AtomicBool,
    /// Reads are pending (nothing from the client is read: its acks neither).
    mute: AtomicBool,
    entered: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
}

struct Gated<T> {
    io: T,
    ctl: Arc<GateCtl>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Gated<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.ctl.mute.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        if self.ctl.armed.swap(false, Ordering::SeqCst) {
            // Blocks this runtime worker on purpose: the driver is inside its step, past
            // the frozen check, and the handoff thread freezes the session meanwhile.
            let _ = self.ctl.entered.lock().expect("lock").send(());
            let released = self.ctl.release.lock().expect("lock").recv_timeout(LIMIT);
            assert!(released.is_ok(), "the gate was released (by the fake receiver, after the OFFER)");
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Gated<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

fn read_frame(s: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let mut f = vec![0u8; HEADER_LEN];
    s.read_exact(&mut f)?;
    let len = handoff::body_len(&f, u32::MAX).map_err(std::io::Error::other)?;
    f.resize(HEADER_LEN + len, 0);
    s.read_exact(&mut f[HEADER_LEN..])?;
    Ok(f)
}

/// A session on a tokio acceptor whose links pass through `ctl`'s gate, with one
/// connection that carried traffic both ways: (acceptor, client session, server session,
/// client connection, server connection).
async fn gated_session(
    ctl: &Arc<GateCtl>,
) -> (sotto_driver::SessionAcceptor, sotto_driver::SessionHandle, sotto_driver::SessionHandle, Connection, Connection) {
    let hook_ctl = Arc::clone(ctl);
    let hooks = AcceptHooks::new(move |link: AcceptedLink<tokio::net::TcpStream>| {
        let ctl = Arc::clone(&hook_ctl);
        async move { Ok((Gated { io: link, ctl }, None)) }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let acc = sotto_tokio::serve_sessions_tcp_with(l, session_config(), hooks).expect("config");
    let a = sotto_tokio::connect_session(move || tokio::net::TcpStream::connect(addr), session_config())
        .await
        .expect("connect");
    let b = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    let pairs = within(LIMIT, "open", open_accept(&a, &b, 1)).await;
    let mut pairs = within(LIMIT, "exchange", exchange_all(pairs, 20)).await;
    let (client, server) = pairs.pop().expect("a pair");
    tokio::time::sleep(Duration::from_millis(100)).await;
    (acc, a, b, client, server)
}

/// A fake receiver on a thread that accepts the first offer (after `before_ack`), then reads
/// until the sender is done.
fn accepting_receiver(
    mut theirs: UnixStream,
    before_ack: impl FnOnce() + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let f = read_frame(&mut theirs).expect("offer");
        let Ok(Frame::Offer(o)) = handoff::decode(&f, u32::MAX) else { panic!("an offer first") };
        before_ack();
        let mut out = Vec::new();
        Frame::Ack(Ack { corr: o.corr, token: o.token, refusal: None, reason: "" }).encode(&mut out);
        theirs.write_all(&out).expect("ack");
        let _ = theirs.set_read_timeout(Some(Duration::from_secs(2)));
        while read_frame(&mut theirs).is_ok() {}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_read_while_the_session_is_being_frozen_is_not_fed_to_the_old_process() {
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let ctl = Arc::new(GateCtl {
        armed: AtomicBool::new(false),
        mute: AtomicBool::new(false),
        entered: Mutex::new(entered_tx),
        release: Mutex::new(release_rx),
    });
    let (acc, _a, _b, mut client, mut server) = gated_session(&ctl).await;

    // The server's driver enters its next read and is held there; the client's message
    // reaches the server's socket meanwhile.
    ctl.armed.store(true, Ordering::SeqCst);
    within(LIMIT, "send", client.send(b"late")).await.expect("send");
    let entered = tokio::task::spawn_blocking(move || entered_rx.recv_timeout(LIMIT));
    entered.await.expect("join").expect("the driver reads its link");

    // A fake receiver: once it has the OFFER (the session is frozen and exported), the
    // driver's read completes; then it accepts the offer. While a runtime worker is held,
    // nothing here waits on a tokio timer (one may not fire until the worker is free).
    let (mine, theirs) = UnixStream::pair().expect("socketpair");
    let receiver = accepting_receiver(theirs, move || {
        // The client's message is in the server's socket by now.
        std::thread::sleep(Duration::from_millis(200));
        release_tx.send(()).expect("release");
        std::thread::sleep(Duration::from_millis(300));
    });
    let mut config = HandoffConfig::default();
    config.ack_timeout = Duration::from_secs(5);
    let report = within(LIMIT, "hand off", acc.hand_off(mine, None, config)).await;
    receiver.join().expect("fake receiver");
    assert_eq!((report.offered, report.handed_off), (1, 1), "{report:?}");

    // The session moved: the old application must not read a message its exported state
    // does not hold (the client replays it to whoever adopted the session).
    let got = tokio::time::timeout(Duration::from_secs(1), server.recv()).await;
    assert!(
        !matches!(got, Ok(Ok(_))),
        "the old process delivered a message read after the session was exported: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handed_off_session_leaves_its_old_application_no_messages_to_send_again() {
    let (entered_tx, _entered) = mpsc::channel();
    let (_release, release_rx) = mpsc::channel();
    let ctl = Arc::new(GateCtl {
        armed: AtomicBool::new(false),
        mute: AtomicBool::new(false),
        entered: Mutex::new(entered_tx),
        release: Mutex::new(release_rx),
    });
    let (acc, _a, b, _client, mut server) = gated_session(&ctl).await;
    // The server reads nothing more (no ack from the client): what it sends now stays
    // unacknowledged, in the replay ring that moves with the session.
    ctl.mute.store(true, Ordering::SeqCst);
    for i in 0..3u8 {
        within(LIMIT, "send", server.send([i])).await.expect("send");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // (Small messages sent in a burst may share an item.)
    assert!(b.unacked() > 0, "the messages are unacknowledged");
    let (mine, theirs) = UnixStream::pair().expect("socketpair");
    let receiver = accepting_receiver(theirs, || {});
    let mut config = HandoffConfig::default();
    config.ack_timeout = Duration::from_secs(5);
    let report = within(LIMIT, "hand off", acc.hand_off(mine, None, config)).await;
    receiver.join().expect("fake receiver");
    assert_eq!(report.handed_off, 1, "{report:?}");
    // The new process replays them: the old application must not be told to send them
    // again (they would arrive twice).
    let left = b.unacknowledged().expect("the session ended here");
    assert_eq!(left.end, SessionEnd::HandedOff);
    assert!(left.messages.is_empty(), "messages to send again after a handoff: {:?}", left.messages);
    assert!(left.connections.is_empty(), "connections to open again after a handoff: {:?}", left.connections);
}
