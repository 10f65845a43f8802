//! Client links that a test can cut all at once, inside the client: every session's
//! connector wraps its TCP stream with a switch; killing the switch fails every call on the
//! stream (its driver then drops it, closing the socket, and redials through the same
//! connector, which makes a new switch). A storm is every switch killed at once.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use sotto_tokio::{Config, ConnectError, SessionHandle};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// One link's switch.
#[derive(Debug, Default)]
pub struct Switch {
    dead: AtomicBool,
    waker: AtomicWaker,
}

impl Switch {
    /// Fail the link from now on.
    pub fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
        self.waker.wake();
    }
}

/// A session's current switch (replaced on every redial).
pub type Slot = Arc<Mutex<Arc<Switch>>>;

/// Kill the current link of the session behind `slot`.
pub fn cut(slot: &Slot) {
    slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).kill();
}

/// A TCP stream that fails every call once its [`Switch`] is killed.
#[derive(Debug)]
pub struct Killable {
    inner: TcpStream,
    switch: Arc<Switch>,
}

impl Killable {
    fn dead(&self, cx: &Context<'_>) -> bool {
        self.switch.waker.register(cx.waker());
        self.switch.dead.load(Ordering::SeqCst)
    }
}

fn killed() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "cut by the test")
}

impl AsyncRead for Killable {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.dead(cx) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Killable {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.dead(cx) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.dead(cx) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A tokio session to `addr` whose links can be cut with [`cut`] on the returned slot.
pub async fn connect_killable(addr: SocketAddr, config: Config) -> Result<(SessionHandle, Slot), ConnectError> {
    let slot: Slot = Arc::default();
    let dial = Arc::clone(&slot);
    let s = sotto_tokio::connect_session(
        move || {
            let slot = Arc::clone(&dial);
            async move {
                let inner = TcpStream::connect(addr).await?;
                inner.set_nodelay(true)?;
                let switch = Arc::new(Switch::default());
                *slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::clone(&switch);
                Ok(Killable { inner, switch })
            }
        },
        config,
    )
    .await?;
    Ok((s, slot))
}
