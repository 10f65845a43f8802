//! Building blocks of the scenario tests: a fixed small configuration, a connected session
//! pair, and a future that is dropped after a given number of polls (cancellation at each
//! await point).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use sotto_driver::{connect_session, serve_sessions, Config, Connection, SessionAcceptor, SessionHandle};

use crate::executor::SimRuntime;
use crate::net::Net;

/// A fixed configuration for scenarios: 2 KiB connection windows, a 16-frame ring, 200 ms
/// pings with a 500 ms pong timeout, 1 s handshake timeout, 200 ms drain timeout.
#[must_use]
pub fn config() -> Config {
    use std::time::Duration as D;
    let mut c = Config::default();
    c.protocol.max_frame_len = 1024;
    c.protocol.replay_frames = 16;
    c.protocol.replay_bytes = 16 << 10;
    c.protocol.ping_interval = D::from_millis(200);
    c.protocol.pong_timeout = D::from_millis(500);
    c.protocol.min_ping_interval = D::from_millis(50);
    c.protocol.handshake_timeout = D::from_millis(1000);
    c.protocol.recovery_timeout = D::from_secs(30);
    c.dial.connect_timeout = Duration::from_secs(30);
    c.dial.backoff_initial = Duration::from_millis(10);
    c.dial.backoff_max = Duration::from_millis(500);
    c.protocol.drain_timeout = Duration::from_millis(200);
    c.protocol.initial_credit = 2048;
    c.protocol.max_credit = 2048;
    c.acceptor.max_sessions = 4;
    c
}

/// A connected session pair on `net`: (initiator, acceptor, the acceptor's listener handle).
///
/// # Errors
/// What failed.
pub async fn sessions(
    rt: &SimRuntime,
    net: &Net,
    cfg: Config,
) -> Result<(SessionHandle, SessionHandle, SessionAcceptor), String> {
    let acceptor = serve_sessions(rt.clone(), net.session_listener(), cfg).map_err(|e| format!("serve: {e}"))?;
    let dial = net.clone();
    let a = connect_session(rt.clone(), move || dial.dial(), cfg).await.map_err(|e| format!("connect: {e}"))?;
    let b = acceptor.accept().await.map_err(|e| format!("accept: {e}"))?;
    Ok((a, b, acceptor))
}

/// A connection opened by `a` and accepted by `b`: (a's end, b's end).
///
/// # Errors
/// What failed.
pub async fn connection(a: &SessionHandle, b: &SessionHandle) -> Result<(Connection, Connection), String> {
    let open = a.open(b"c");
    let accept = async {
        let inc = b.accept().await.map_err(|e| format!("accept: {e:?}"))?;
        inc.accept(&[]).await.map_err(|e| format!("answer: {e:?}"))
    };
    let (a_end, b_end) = futures::future::join(open, accept).await;
    Ok((a_end.map_err(|e| format!("open: {e:?}"))?, b_end?))
}

/// `future`, dropped after its `polls`-th poll if that left it pending: `Some(output)` if it
/// completed within that many polls, `None` if it was cancelled.
pub fn cancel_after<F: Future>(future: F, polls: usize) -> CancelAfter<F> {
    CancelAfter { future: Some(Box::pin(future)), left: polls, polled: 0 }
}

/// See [`cancel_after`].
pub struct CancelAfter<F> {
    future: Option<Pin<Box<F>>>,
    left: usize,
    polled: usize,
}

impl<F> CancelAfter<F> {
    /// Polls so far.
    #[must_use]
    pub fn polled(&self) -> usize {
        self.polled
    }
}

impl<F: Future> Future for CancelAfter<F> {
    type Output = Option<F::Output>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        let this = self.get_mut();
        let Some(f) = this.future.as_mut() else { return Poll::Ready(None) };
        this.polled += 1;
        if let Poll::Ready(v) = f.as_mut().poll(cx) {
            this.future = None;
            return Poll::Ready(Some(v));
        }
        this.left = this.left.saturating_sub(1);
        if this.left == 0 {
            this.future = None;
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

/// How many polls `future` took to complete when nobody cancelled it, and its output.
pub async fn polls_to_complete<F: Future>(future: F) -> (usize, Option<F::Output>) {
    let mut c = cancel_after(future, usize::MAX);
    let out = std::future::poll_fn(|cx| Pin::new(&mut c).poll(cx)).await;
    (c.polled(), out)
}

/// A context whose waker does nothing: for one poll that must not wait.
#[must_use]
pub fn noop_context() -> Context<'static> {
    Context::from_waker(Waker::noop())
}
