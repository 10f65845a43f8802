//! Handing a session acceptor's sessions, and its listening socket, to another process over
//! a Unix socket (issue 17; protocol and deploy steps in docs/handoff.md): a restart or
//! upgrade of the server without losing a session.
//!
//! The old process calls [`SessionAcceptor::hand_off`]: it stops listening, passes the
//! listening socket's descriptor (`SCM_RIGHTS`), then offers its sessions one at a time, each
//! frozen while its offer is out (OFFER: its exported state, a one-time token, a correlation
//! id and a deadline). The new process takes the descriptor with [`receive_listener`], serves
//! it, and calls [`SessionAcceptor::receive_handoff`], which imports each session under its
//! own limits, adopts it (its resume keys route there) and answers ACK. On an accepting ACK
//! that echoes the token and the correlation id the old process ends the session there
//! ([`SessionEnd::HandedOff`](sotto_proto::SessionEnd::HandedOff)) and closes its link; the
//! client resumes into the new process (one link change). Anything else (a refusal, a
//! malformed frame, a wrong token or id, no ACK by the deadline, the peer gone) leaves the
//! session with the old process, thawed and served as before; after a protocol failure the
//! rest are not offered.
//!
//! Unix only. Socket work runs on a thread of its own (blocking, with deadlines); adopted
//! sessions' drivers are started on the acceptor's runtime.

mod channel;
mod recv;
mod send;

use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

pub use sotto_proto::handoff::{FrameError, ListenerFamily, Refusal};

use crate::session::SessionAcceptor;

/// Settings of a handoff, on either side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandoffConfig {
    /// Sender: how long it waits for each offer's ACK (the offer's deadline). Default 2 s.
    pub ack_timeout: Duration,
    /// Receiver: how long it waits for the next frame before giving up on a silent sender
    /// (the sessions it adopted so far stay adopted). Default 30 s.
    pub idle_timeout: Duration,
    /// Sender: after the handoff, close the sessions that stayed (GOODBYE with
    /// `close_code`), as a process about to exit does. Default `false`: they keep being
    /// served.
    pub close_kept: bool,
    /// Sender: the GOODBYE code for `close_kept`. Default 0 (normal).
    pub close_code: u32,
}

impl Default for HandoffConfig {
    fn default() -> Self {
        Self {
            ack_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(30),
            close_kept: false,
            close_code: sotto_proto::conduit::goodbye_code::NORMAL,
        }
    }
}

/// Why a handoff (or one session's offer) failed. The session concerned stays where it was.
#[derive(Debug)]
#[non_exhaustive]
pub enum HandoffError {
    /// The socket failed.
    Io(io::Error),
    /// A frame read from the socket is malformed.
    Frame(FrameError),
    /// A well-formed frame that is not the one expected here.
    UnexpectedFrame(&'static str),
    /// An ACK echoing another token than the offer's.
    TokenMismatch,
    /// An ACK echoing another correlation id than the offer's.
    CorrelationMismatch,
    /// The receiver refused the offer.
    Refused {
        /// Its code.
        refusal: Refusal,
        /// Its words.
        reason: String,
    },
    /// No ACK by the offer's deadline.
    AckTimeout,
    /// The peer said nothing for `idle_timeout` (receiver), or sent no LISTENER in time.
    PeerSilent,
    /// The peer closed the socket (or crashed) between frames.
    PeerClosed,
    /// The peer closed the socket (or crashed) within a frame.
    Truncated,
    /// A LISTENER frame came without exactly one descriptor.
    NoDescriptor,
    /// The descriptor passed is not a socket.
    NotASocket,
    /// The descriptor passed is a socket, but not a listening stream socket.
    NotListening,
}

impl fmt::Display for HandoffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "handoff socket: {e}"),
            Self::Frame(e) => write!(f, "handoff frame: {e}"),
            Self::UnexpectedFrame(what) => write!(f, "unexpected handoff frame: {what}"),
            Self::TokenMismatch => f.write_str("the ACK's token is not the offer's"),
            Self::CorrelationMismatch => f.write_str("the ACK's correlation id is not the offer's"),
            Self::Refused { refusal, reason } => write!(f, "offer refused: {refusal} ({reason})"),
            Self::AckTimeout => f.write_str("no ACK by the offer's deadline"),
            Self::PeerSilent => f.write_str("the handoff peer went silent"),
            Self::PeerClosed => f.write_str("the handoff peer closed the socket"),
            Self::Truncated => f.write_str("the handoff peer closed the socket within a frame"),
            Self::NoDescriptor => f.write_str("a LISTENER frame without exactly one descriptor"),
            Self::NotASocket => f.write_str("the descriptor passed is not a socket"),
            Self::NotListening => f.write_str("the descriptor passed is not a listening stream socket"),
        }
    }
}

impl std::error::Error for HandoffError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Frame(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for HandoffError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<FrameError> for HandoffError {
    fn from(e: FrameError) -> Self {
        Self::Frame(e)
    }
}

/// What [`SessionAcceptor::hand_off`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
#[must_use]
pub struct HandoffReport {
    /// The listening socket's descriptor was sent.
    pub listener_sent: bool,
    /// Sessions offered.
    pub offered: u64,
    /// Sessions the receiver took (ended here with `HandedOff`, their links closed).
    pub handed_off: u64,
    /// Sessions that stayed here: refused, failed, not offered after a failure, or not to be
    /// handed off (in their handshake, closing, ended). Served on, or closed with
    /// `close_kept`.
    pub kept: u64,
    /// Sessions whose offer went out whole but whose outcome is unknown (the socket failed
    /// before the ACK was read, and the REVOKE could not be sent) after the listener was
    /// passed: the receiver may hold them and gets every resume, so they were ended here
    /// (`HandedOff`, links closed) rather than served by two owners. Without a listener
    /// passed such a session stays here (counted in `kept`). `offered` = `handed_off` +
    /// `uncertain` + the offered part of `kept`.
    pub uncertain: u64,
    /// Why offers failed (the first 16).
    pub failures: Vec<HandoffError>,
    /// The protocol failed (socket, frame, token, id, deadline): sessions after it were not
    /// offered.
    pub broken: bool,
    /// From the start to the last ACK.
    pub elapsed: Duration,
    /// The longest any one session stayed frozen (from its export to its ACK).
    pub longest_freeze: Duration,
}

/// What [`SessionAcceptor::receive_handoff`] did.
#[derive(Debug, Default)]
#[non_exhaustive]
#[must_use]
pub struct ReceiveReport {
    /// Sessions adopted (queued for `accept`).
    pub adopted: u64,
    /// Offers refused.
    pub refused: u64,
    /// Adopted sessions the sender revoked afterwards (ended again here).
    pub revoked: u64,
    /// The sender's DONE arrived (else the socket closed or went silent first: see the
    /// error).
    pub done: bool,
}

/// Read the LISTENER frame and its descriptor from the handoff socket (new process, before
/// [`SessionAcceptor::receive_handoff`]), waiting at most `timeout`. The descriptor is checked
/// to be a listening stream socket; make a TCP or Unix listener of it
/// (`std::net::TcpListener::from(fd)`). Blocking (briefly: the sender passes it first).
pub fn receive_listener(channel: &UnixStream, timeout: Duration) -> Result<(OwnedFd, ListenerFamily), HandoffError> {
    let mut ch = channel::Channel::new(channel.try_clone()?, 64)?;
    ch.recv_listener(channel::deadline_in(timeout))
}

impl SessionAcceptor {
    /// Hand every live session, and (if given) the listening socket's descriptor, to the
    /// process at the other end of `channel`, which runs
    /// [`receive_handoff`](Self::receive_handoff). With a listener, first stops listening
    /// (as [`shutdown`](Self::shutdown) does; `accept` fails from now on): pass a duplicate of
    /// the listener's descriptor (`try_clone`) taken before it was given to the acceptor.
    /// Without one it keeps listening (the new process listens on its own, and a session
    /// that stays here still takes its peer's resumes). Then offers each session, one at a time, frozen while its offer is out. Sessions handed
    /// off end here with [`SessionEnd::HandedOff`](sotto_proto::SessionEnd::HandedOff) (their
    /// handles see it; what their readers had already taken is still read). The others stay
    /// and are served on, or closed if `config.close_kept`. New sessions still waiting for
    /// `accept` are offered too; those that stay are closed.
    pub async fn hand_off(
        &self,
        channel: UnixStream,
        listener: Option<(OwnedFd, ListenerFamily)>,
        config: HandoffConfig,
    ) -> HandoffReport {
        // The listener moves: stop taking links from it first (connections wait in its
        // backlog for the new process). Without one, this acceptor keeps listening, and a
        // session that stays keeps taking its peer's resumes here.
        let unaccepted = if listener.is_some() { self.front.queue().stop() } else { Vec::new() };
        let listen_by = self.front.ep().clock.now_std() + Duration::from_secs(1);
        while listener.is_some() && !self.front.queue().stopped() && self.front.ep().clock.now_std() < listen_by {
            (self.front.sleep())(self.front.ep().clock.now_std() + Duration::from_millis(2)).await;
        }
        let ep = std::sync::Arc::clone(self.front.ep());
        let (tx, rx) = futures::channel::oneshot::channel();
        std::thread::Builder::new()
            .name("sotto-handoff-send".into())
            .spawn(move || {
                let _ = tx.send(send::run(&ep, channel, listener, config));
            })
            .map_or_else(
                |e| {
                    let mut r = HandoffReport::default();
                    r.failures.push(HandoffError::Io(e));
                    r.broken = true;
                    futures::future::Either::Left(futures::future::ready(Ok(r)))
                },
                |_| futures::future::Either::Right(rx),
            )
            .await
            .unwrap_or_else(|_| {
                // The thread panicked: each session it held frozen was thawed as it unwound.
                let mut r = HandoffReport::default();
                r.failures.push(HandoffError::Io(io::Error::other("the handoff thread panicked")));
                r.broken = true;
                r
            })
            .finish(unaccepted)
    }

    /// Take the sessions the process at the other end of `channel` hands off
    /// ([`hand_off`](Self::hand_off)), until it says it is done, goes silent for
    /// `config.idle_timeout`, or the socket fails. Each session is imported under this
    /// acceptor's own limits (refused if it exceeds them, or is malformed, or from a newer
    /// format), adopted (its resume keys route here, it waits for its peer's resume) and
    /// queued for [`accept`](Self::accept); its open connections are taken with
    /// [`SessionHandle::adopted_connections`](crate::SessionHandle::adopted_connections).
    /// Read the LISTENER frame first with [`receive_listener`] if the sender passes one.
    pub async fn receive_handoff(
        &self,
        channel: UnixStream,
        config: HandoffConfig,
    ) -> Result<ReceiveReport, HandoffError> {
        let ep = std::sync::Arc::clone(self.front.ep());
        let acceptor_config = self.config;
        let (homes, mut adopted) = futures::channel::mpsc::unbounded();
        let (tx, rx) = futures::channel::oneshot::channel();
        std::thread::Builder::new().name("sotto-handoff-recv".into()).spawn(move || {
            let _ = tx.send(recv::run(&ep, channel, &acceptor_config, config, &homes));
        })?;
        // Adopted sessions get their drivers here, on the acceptor's runtime; the thread
        // ends (and drops its sender) when the handoff does. At most `max_sessions` wait.
        while let Some(home) = futures::StreamExt::next(&mut adopted).await {
            let session = (self.adopt)(home);
            self.front.queue().push(session, 0);
        }
        rx.await.unwrap_or(Err(HandoffError::PeerClosed))
    }
}

impl HandoffReport {
    /// Drop the sessions that were waiting for `accept` (closing those not handed off).
    fn finish(self, unaccepted: Vec<crate::SessionHandle>) -> Self {
        drop(unaccepted);
        self
    }
}
