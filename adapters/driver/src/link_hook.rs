//! Hooks an acceptor (the session acceptor, or the raw stable-conduit one) runs on its links: a **link hook**, an async per-link transform
//! (a TLS handshake, typically) run on every accepted stream before sotto's own handshake,
//! which may name the peer ([`PeerIdentity`]: a client certificate's fingerprint or
//! subject); and a **resume binding**, which sees the session's first link and a resuming
//! link ([`LinkInfo`]: peer address and identity) and may refuse the resume, so that a
//! stolen resume key alone cannot take a session when client certificates are used.
//! Both are given to the acceptor in [`AcceptHooks`]; the library itself knows nothing of
//! TLS.
//!
//! # Deadlines and accounting
//!
//! A hook runs inside the acceptor's listening task, concurrently for every pending link
//! (each is one more future the task polls; none gets a task of its own), and it counts as
//! part of its link's handshake:
//!
//! - it holds one of the acceptor's pending-handshake slots (`max_pending_handshakes`,
//!   `max_pending_per_source`) from the moment the stream is accepted; a link refused by
//!   those caps or by its source's failure budget is closed without the hook ever being
//!   called;
//! - the **first-byte deadline** (`acceptor.first_byte_timeout`) applies to the raw stream
//!   the hook reads ([`AcceptedLink`] notes its first byte): a peer that sends nothing at
//!   all is closed then, as without a hook;
//! - the **handshake deadline** (`protocol.handshake_timeout`, from the stream's arrival)
//!   bounds the hook and sotto's ClientHello after it together: a hook that stalls is
//!   dropped (its future, with its stream) when it passes;
//! - a hook that fails (returns an error: a bad certificate), stalls past a deadline or
//!   **panics** (caught at each poll, and at the call that makes its future) costs only its
//!   own link: the link is closed, the failure counted
//!   ([`SessionAcceptorStats::link_hook_failures`](crate::SessionAcceptorStats::link_hook_failures),
//!   `link_hook_panics`, or the endpoint's expired handshakes) and charged to the link's
//!   source's failure budget, exactly as a bad or missing ClientHello is. Other links and the
//!   acceptor go on.
//!
//! The peer address the listener saw is kept: the hook can read it
//! ([`AcceptedLink::peer_addr`]), the session reports it
//! ([`SessionHandle::peer_addr`](crate::SessionHandle::peer_addr)) with the identity the
//! hook returned ([`SessionHandle::peer_identity`](crate::SessionHandle::peer_identity)).
//!
//! A resume the binding refuses is answered REJECTED, as an unknown key is (charged to its
//! source, counted in the endpoint's `rejected` and in
//! [`SessionAcceptorStats::resumes_refused_by_binding`](crate::SessionAcceptorStats::resumes_refused_by_binding)),
//! before it reaches the session: the live link, if any, is not touched.

use std::future::Future;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;

use crate::runtime::PeerAddr;

/// Who the peer of a link is, as a link hook established it: the bytes of a client
/// certificate's fingerprint, its subject, a user name. Opaque to sotto; compared as bytes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity(Bytes);

impl PeerIdentity {
    /// An identity made of `bytes`.
    #[must_use]
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        Self(bytes.into())
    }

    /// The identity's bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for PeerIdentity {
    /// UTF-8 text as a string, anything else as hex.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(s) => write!(f, "PeerIdentity({s:?})"),
            Err(_) => {
                f.write_str("PeerIdentity(")?;
                for b in self.0.iter() {
                    write!(f, "{b:02x}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// What is known of a link's peer: the address the listener saw and the identity a link
/// hook established. Given to a resume binding for the session's first link and for the
/// resuming link.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkInfo {
    /// The peer's address, when the stream told it.
    pub peer_addr: Option<PeerAddr>,
    /// The peer's identity, when a link hook established one.
    pub identity: Option<PeerIdentity>,
}

impl LinkInfo {
    /// A link from `peer_addr`, identified as `identity`.
    #[must_use]
    pub fn new(peer_addr: Option<PeerAddr>, identity: Option<PeerIdentity>) -> Self {
        Self { peer_addr, identity }
    }
}

/// A freshly accepted stream as a link hook gets it: the listener's stream, readable and
/// writable through the same traits (`futures::io`'s; tokio's too, with the driver's `tokio`
/// feature that `sotto-tokio` turns on), which notes when its first byte arrives (for the
/// acceptor's first-byte deadline) and carries the peer address the listener saw.
#[derive(Debug)]
pub struct AcceptedLink<T> {
    io: T,
    peer: Option<PeerAddr>,
    /// Set once a read returned data.
    first_byte: Arc<AtomicBool>,
}

impl<T> AcceptedLink<T> {
    /// The peer address the listener saw, if it told one.
    #[must_use]
    pub fn peer_addr(&self) -> Option<&PeerAddr> {
        self.peer.as_ref()
    }

    /// The accepted stream.
    #[must_use]
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// The accepted stream, mutably (reading through it directly bypasses the first-byte
    /// note: a hook that does so is held to the first-byte deadline until it reads through
    /// the link).
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.io
    }

    fn note(&self, r: &Poll<io::Result<usize>>) {
        if matches!(r, Poll::Ready(Ok(n)) if *n > 0) {
            self.first_byte.store(true, Ordering::Relaxed);
        }
    }
}

impl<T: futures::io::AsyncRead + Unpin> futures::io::AsyncRead for AcceptedLink<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        this.note(&r);
        r
    }
}

impl<T: futures::io::AsyncWrite + Unpin> futures::io::AsyncWrite for AcceptedLink<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
}

#[cfg(feature = "tokio")]
impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for AcceptedLink<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.first_byte.store(true, Ordering::Relaxed);
        }
        r
    }
}

#[cfg(feature = "tokio")]
impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for AcceptedLink<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A boxed future a link hook returns: the transformed stream and the peer's identity, if
/// the hook established one.
pub type LinkHookFuture<T> = Pin<Box<dyn Future<Output = io::Result<(T, Option<PeerIdentity>)>> + Send>>;

type LinkHookFn<X, T> = dyn Fn(AcceptedLink<X>) -> LinkHookFuture<T> + Send + Sync;
type ResumeBindingFn = dyn Fn(&LinkInfo, &LinkInfo) -> bool + Send + Sync;

/// What an acceptor (session or raw) runs on its links: a link hook turning each accepted stream of
/// type `X` into the stream of type `T` sotto runs over (a TLS handshake), and optionally a
/// resume binding. Give it to an adapter's `serve_sessions_tcp_with` (or `raw::serve_tcp_with`).
///
/// # Deadlines and accounting
///
/// The hook runs inside the acceptor's listening task, concurrently for every pending link
/// (one more future the task polls; none gets a task of its own), as part of its link's
/// handshake:
///
/// - the link holds one of the acceptor's pending-handshake slots
///   ([`AcceptorConfig::max_pending_handshakes`](crate::AcceptorConfig::max_pending_handshakes),
///   `max_pending_per_source`) from the moment it is accepted; a link refused by those caps
///   or by its source's failure budget is closed without the hook ever being called;
/// - the first-byte deadline
///   ([`AcceptorConfig::first_byte_timeout`](crate::AcceptorConfig::first_byte_timeout))
///   applies to the raw stream the hook reads (the [`AcceptedLink`] notes its first byte):
///   a peer that sends nothing at all is closed then, as without a hook;
/// - the handshake deadline
///   ([`ProtocolConfig::handshake_timeout`](crate::ProtocolConfig::handshake_timeout), from
///   the stream's arrival) bounds the hook and sotto's ClientHello after it together: a hook
///   still running then is dropped with its stream;
/// - a hook that fails (returns an error: a bad certificate), stalls past a deadline or
///   panics (caught at the call that makes its future and at each poll) costs only its own
///   link: the link is closed, counted
///   ([`SessionAcceptorStats::link_hook_failures`](crate::SessionAcceptorStats::link_hook_failures)
///   and `link_hook_panics`, the same in [`AcceptorStats`](crate::AcceptorStats), or the
///   endpoint's `first_byte_expired` / `handshakes_expired`) and
///   charged to its source's failure budget, as a bad or missing ClientHello is. Other links
///   and the acceptor go on.
///
/// The peer address the listener saw is kept: the hook reads it with
/// [`AcceptedLink::peer_addr`], and each session reports it
/// ([`SessionHandle::peer_addr`](crate::SessionHandle::peer_addr)) with the identity the hook
/// returned ([`SessionHandle::peer_identity`](crate::SessionHandle::peer_identity)).
///
/// A resume the binding refuses is answered REJECTED, as an unknown key is (charged to its
/// source, counted in the endpoint's `rejected` and in
/// [`SessionAcceptorStats::resumes_refused_by_binding`](crate::SessionAcceptorStats::resumes_refused_by_binding)),
/// before it reaches the session: the live link, if any, is not touched.
pub struct AcceptHooks<X, T> {
    link: Arc<LinkHookFn<X, T>>,
    binding: Option<Arc<ResumeBindingFn>>,
}

impl<X, T> Clone for AcceptHooks<X, T> {
    fn clone(&self) -> Self {
        Self { link: Arc::clone(&self.link), binding: self.binding.clone() }
    }
}

impl<X, T> std::fmt::Debug for AcceptHooks<X, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcceptHooks").field("resume_binding", &self.binding.is_some()).finish_non_exhaustive()
    }
}

impl<X: Send + 'static, T: Send + 'static> AcceptHooks<X, T> {
    /// Run `hook` on every accepted link before sotto's handshake: it gets the stream and
    /// returns the stream to run the session over (a TLS stream wrapping it) and the peer's
    /// identity, if it established one (a client certificate's fingerprint). An error fails
    /// the link alone (counted and charged to its source).
    #[must_use]
    pub fn new<F, Fut>(hook: F) -> Self
    where
        F: Fn(AcceptedLink<X>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<(T, Option<PeerIdentity>)>> + Send + 'static,
    {
        Self { link: Arc::new(move |link| Box::pin(hook(link)) as LinkHookFuture<T>), binding: None }
    }

    /// Check every resume with `binding(first, resuming)`: `first` is the session's first
    /// link, `resuming` the link presenting the session's resume key; returning `false`
    /// refuses the resume (answered as an unknown key; the session and its live link are
    /// untouched). Compare identities to bind a session to its client certificate:
    /// `|first, resuming| first.identity == resuming.identity`. A binding that panics
    /// refuses the resume.
    #[must_use]
    pub fn bind_resumes<G>(mut self, binding: G) -> Self
    where
        G: Fn(&LinkInfo, &LinkInfo) -> bool + Send + Sync + 'static,
    {
        self.binding = Some(Arc::new(binding));
        self
    }
}

impl<X: Send + 'static> AcceptHooks<X, AcceptedLink<X>> {
    /// No transform: the accepted stream as it is, with no identity. With
    /// [`bind_resumes`](Self::bind_resumes), to bind resumes by peer address alone.
    #[must_use]
    pub fn plain() -> Self {
        Self::new(|link| std::future::ready(Ok((link, None))))
    }
}

/// A resume binding, as the acceptor keeps it.
#[derive(Clone)]
pub(crate) struct ResumeBinding(Arc<ResumeBindingFn>);

impl ResumeBinding {
    /// Whether the binding lets `resuming` take the session first linked by `first`
    /// (`false` if it panics).
    pub(crate) fn allows(&self, first: &LinkInfo, resuming: &LinkInfo) -> bool {
        catch_unwind(AssertUnwindSafe(|| (self.0)(first, resuming))).unwrap_or_else(|_| {
            tracing::debug!("sotto: the resume binding panicked; resume refused");
            false
        })
    }
}

/// A hook's future with its stream turned into the driver's stream type.
pub(crate) type HookedFuture<S> = Pin<Box<dyn Future<Output = io::Result<S>> + Send>>;

/// A link hook made ready to run once its link is admitted.
pub(crate) struct Hook<S> {
    /// Makes the hook's future (calls the application's hook).
    start: Option<Box<dyn FnOnce() -> HookedFuture<S> + Send>>,
    running: Option<HookedFuture<S>>,
    /// The raw stream's first byte arrived.
    first_byte: Arc<AtomicBool>,
    /// The link's peer, for the acceptor's logs.
    peer: Option<PeerAddr>,
}

/// How a hook's poll came out.
pub(crate) enum HookPoll<S> {
    /// It returned the stream to read sotto's ClientHello from.
    Done(S),
    /// It returned an error.
    Failed,
    /// It panicked.
    Panicked,
}

impl<S: Send + 'static> Hook<S> {
    /// Whether the raw stream's first byte has arrived.
    pub(crate) fn first_byte_seen(&self) -> bool {
        self.first_byte.load(Ordering::Relaxed)
    }

    /// Poll the hook (making its future on the first poll); a panic in the hook fails it.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<HookPoll<S>> {
        let polled = catch_unwind(AssertUnwindSafe(|| {
            if let Some(start) = self.start.take() {
                self.running = Some(start());
            }
            match self.running.as_mut() {
                Some(f) => f.as_mut().poll(cx),
                None => Poll::Ready(Err(io::Error::other("link hook polled after it finished"))),
            }
        }));
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(r)) => {
                self.running = None;
                Poll::Ready(match r {
                    Ok(s) => HookPoll::Done(s),
                    Err(e) => {
                        tracing::debug!(error = %e, "sotto: link hook failed; link closed");
                        HookPoll::Failed
                    }
                })
            }
            Err(_) => {
                let running = self.running.take();
                let _ = catch_unwind(AssertUnwindSafe(move || drop(running)));
                tracing::debug!("sotto: link hook panicked; link closed");
                Poll::Ready(HookPoll::Panicked)
            }
        }
    }
}

impl<S> Drop for Hook<S> {
    /// The hook's future is the application's: a panic in dropping it stays here.
    fn drop(&mut self) {
        let (start, running) = (self.start.take(), self.running.take());
        let _ = catch_unwind(AssertUnwindSafe(move || drop((start, running))));
    }
}

/// A stream arriving at an acceptor: ready for sotto's handshake, or to go through a link
/// hook first.
pub(crate) enum Arrived<S> {
    /// Read the ClientHello from it.
    Ready(S),
    /// Run the hook, then read the ClientHello from what it returns.
    Hook(Hook<S>),
}

impl<S: crate::runtime::Io> Arrived<S> {
    /// The link's peer, if known (for the acceptor's logs).
    pub(crate) fn peer_addr(&self) -> Option<PeerAddr> {
        match self {
            Self::Ready(io) => io.peer_addr(),
            Self::Hook(h) => h.peer.clone(),
        }
    }
}

impl<S> From<S> for Arrived<S> {
    fn from(io: S) -> Self {
        Self::Ready(io)
    }
}

/// Turn `x` (from a peer at `peer`) into an arrival that runs `hooks`' link hook, its result
/// made the driver's stream by `to_io` (which also gets the link's address and identity).
pub(crate) fn arrive<X, T, S>(
    hooks: &AcceptHooks<X, T>,
    x: X,
    peer: Option<PeerAddr>,
    to_io: fn(T, LinkInfo) -> S,
) -> Arrived<S>
where
    X: Send + 'static,
    T: Send + 'static,
    S: Send + 'static,
{
    let first_byte = Arc::new(AtomicBool::new(false));
    let link = AcceptedLink { io: x, peer: peer.clone(), first_byte: Arc::clone(&first_byte) };
    let logged = peer.clone();
    let hook = Arc::clone(&hooks.link);
    let start = move || -> HookedFuture<S> {
        let fut = hook(link);
        Box::pin(async move {
            let (t, identity) = fut.await?;
            Ok(to_io(t, LinkInfo { peer_addr: peer, identity }))
        })
    };
    Arrived::Hook(Hook { start: Some(Box::new(start)), running: None, first_byte, peer: logged })
}

/// The resume binding of `hooks`, if any.
pub(crate) fn binding_of<X, T>(hooks: &AcceptHooks<X, T>) -> Option<ResumeBinding> {
    hooks.binding.clone().map(ResumeBinding)
}
