//! An acceptor made of several workers sharing one port (or one listener), each its own
//! session acceptor with its own core endpoint and task, whose resumes reach the worker that
//! holds the session.
//!
//! Every worker's endpoint mints issuer-tagged keys ([`Issuer`]): the key a session issues
//! names its worker and the group's run (epoch), readable only with the group's secret. A
//! link whose ClientHello presents another worker's key is passed to that worker, the
//! stream and the hello already read from it together (the hello is read exactly, so there
//! are no further bytes in hand), through a bounded mailbox; that worker routes it through
//! its own endpoint as if it had accepted it. A key of an earlier run of the group (it
//! restarted, and the session with it) is answered REJECTED at once and not charged to the
//! source, so clients behind one address all learn their loss at once after a restart.
//!
//! Links reach the workers however the application likes: N listeners bound with
//! `SO_REUSEPORT` (the kernel spreads connections), one listener fanned out, or any mix.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Context;

use futures::task::AtomicWaker;
use sotto_proto::conduit::ConfigError;
use sotto_proto::endpoint::{Issuer, IssuerError, IssuerIdentity};
use sotto_proto::wire::HELLO_LEN;

use crate::runtime::Io;

/// Links one worker's mailbox holds at once; past it a forwarded link is closed (its client
/// redials and lands again). A storm of resumes spread evenly over N workers puts about
/// `(N - 1) / N²` of them in each mailbox, drained as fast as the worker routes.
pub const FORWARD_QUEUE: usize = 4096;

/// A link passed from the worker that read its hello to the worker that issued its key.
pub(crate) struct Forwarded<S> {
    pub(crate) io: S,
    pub(crate) source: u64,
    pub(crate) hello: [u8; HELLO_LEN],
}

/// One worker's mailbox of forwarded links.
struct Inbox<S> {
    queue: Mutex<Mailbox<S>>,
    waker: AtomicWaker,
}

/// What an inbox's lock guards.
struct Mailbox<S> {
    links: VecDeque<Forwarded<S>>,
    /// The worker served and stopped (its acceptor was dropped): links for it are closed.
    closed: bool,
}

impl<S> Inbox<S> {
    fn lock(&self) -> MutexGuard<'_, Mailbox<S>> {
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct GroupInner<S> {
    issuer: Issuer,
    inboxes: Vec<Inbox<S>>,
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

/// An acceptor group: N workers whose resumes reach the worker that holds their session
/// (see the module docs). Cheap to clone; every worker holds one.
///
/// ```
/// use futures::stream::Stream;
/// use sotto_driver::{AcceptorGroup, Config, Io, Runtime, SessionAcceptor};
///
/// // One worker per listener (e.g. listeners bound to one port with SO_REUSEPORT; the
/// // adapters' `serve_group_tcp` does this for a TCP listener).
/// fn serve_all<R: Runtime, S: Io, St>(rt: R, listeners: Vec<St>) -> Result<Vec<SessionAcceptor>, Box<dyn std::error::Error>>
/// where
///     St: Stream<Item = std::io::Result<(S, u64)>> + Send + 'static,
/// {
///     // The secret outlives restarts (keep it like a TLS ticket key); the epoch is new each run.
///     let group = AcceptorGroup::<S>::new(load_secret(), listeners.len() as u16)?;
///     let mut workers = Vec::new();
///     for (w, incoming) in listeners.into_iter().enumerate() {
///         workers.push(group.serve(rt.clone(), w as u16, incoming, Config::default())?);
///     }
///     Ok(workers)
/// }
/// # fn load_secret() -> [u8; 16] { [7; 16] }
/// ```
pub struct AcceptorGroup<S> {
    inner: Arc<GroupInner<S>>,
}

impl<S> Clone for AcceptorGroup<S> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

impl<S> std::fmt::Debug for AcceptorGroup<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcceptorGroup")
            .field("issuer", &self.inner.issuer)
            .field("forwarded", &self.inner.forwarded.load(Ordering::Relaxed))
            .field("forwards_dropped", &self.inner.dropped.load(Ordering::Relaxed))
            .finish()
    }
}

/// Why an acceptor group was not made.
#[derive(Debug)]
#[non_exhaustive]
pub enum GroupError {
    /// The identity is unusable (no workers, a worker index not below the count).
    Issuer(IssuerError),
    /// The configuration cannot work.
    Config(ConfigError),
    /// The operating system gave no randomness for the epoch.
    NoRandomness,
}

impl std::fmt::Display for GroupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Issuer(e) => write!(f, "bad acceptor group identity: {e}"),
            Self::Config(e) => write!(f, "bad configuration: {e}"),
            Self::NoRandomness => f.write_str("no randomness from the operating system for the epoch"),
        }
    }
}

impl std::error::Error for GroupError {}

impl From<GroupError> for io::Error {
    fn from(e: GroupError) -> Self {
        io::Error::other(e)
    }
}

impl<S: Io> AcceptorGroup<S> {
    /// A new run of the group keyed by `secret`, with `workers` workers and a random epoch
    /// (so keys of every earlier run are answered "issuer gone"). Keep `secret` across
    /// restarts (a file, a secret store): an acceptor started with a new secret cannot tell
    /// an earlier run's keys from guesses. One worker is a plain acceptor that knows its
    /// restarts.
    pub fn new(secret: [u8; 16], workers: u16) -> Result<Self, GroupError> {
        let mut epoch = [0u8; 4];
        getrandom::fill(&mut epoch).map_err(|_| GroupError::NoRandomness)?;
        let issuer = Issuer::new(secret, u32::from_le_bytes(epoch), 0, workers).map_err(GroupError::Issuer)?;
        Ok(Self::with_issuer(issuer))
    }

    /// A group with the identity `issuer` (any worker of it; its worker count, epoch and
    /// adopted epochs are the group's): for a chosen epoch, or a successor process built with
    /// [`Issuer::successor`] from a predecessor's [`identity`](Self::identity), which then
    /// routes the keys of the sessions it takes over.
    #[must_use]
    pub fn with_issuer(issuer: Issuer) -> Self {
        let inboxes = (0..issuer.workers())
            .map(|_| Inbox {
                queue: Mutex::new(Mailbox { links: VecDeque::new(), closed: false }),
                waker: AtomicWaker::new(),
            })
            .collect();
        Self {
            inner: Arc::new(GroupInner { issuer, inboxes, forwarded: AtomicU64::new(0), dropped: AtomicU64::new(0) }),
        }
    }

    /// The group's identity (secret and epochs served) to hand to a successor process over
    /// a trusted channel; see [`Issuer::successor`].
    #[must_use]
    pub fn identity(&self) -> IssuerIdentity {
        self.inner.issuer.identity()
    }

    /// This run's epoch.
    #[must_use]
    pub fn epoch(&self) -> u32 {
        self.inner.issuer.epoch()
    }

    /// Workers in the group.
    #[must_use]
    pub fn workers(&self) -> u16 {
        self.inner.issuer.workers()
    }

    /// Links passed from one worker to another so far.
    #[must_use]
    pub fn forwarded(&self) -> u64 {
        self.inner.forwarded.load(Ordering::Relaxed)
    }

    /// Forwarded links closed because the issuing worker's mailbox was full
    /// ([`FORWARD_QUEUE`]) or the worker stopped serving; their clients redial.
    #[must_use]
    pub fn forwards_dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Worker `worker`'s identity and its link to the group, for the worker's routing;
    /// reopens its mailbox (a worker served again after it stopped takes links again).
    pub(crate) fn join(&self, worker: u16) -> Result<(Issuer, GroupMember<S>), GroupError> {
        let issuer = self.inner.issuer.for_worker(worker).map_err(GroupError::Issuer)?;
        self.inner.inboxes[usize::from(worker)].lock().closed = false;
        Ok((issuer, GroupMember { group: self.clone(), worker }))
    }
}

/// A worker's link to its group, held by its routing.
pub(crate) struct GroupMember<S> {
    group: AcceptorGroup<S>,
    worker: u16,
}

impl<S: Io> GroupMember<S> {
    /// Pass `link` to worker `to`. Returns it if that worker's mailbox is full (close it).
    pub(crate) fn forward(&self, to: u16, link: Forwarded<S>) -> Result<(), Forwarded<S>> {
        let inner = &self.group.inner;
        let Some(inbox) = inner.inboxes.get(usize::from(to)).filter(|_| to != self.worker) else {
            inner.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(link);
        };
        {
            let mut q = inbox.lock();
            if q.closed || q.links.len() >= FORWARD_QUEUE {
                drop(q);
                inner.dropped.fetch_add(1, Ordering::Relaxed);
                return Err(link);
            }
            q.links.push_back(link);
        }
        inner.forwarded.fetch_add(1, Ordering::Relaxed);
        inbox.waker.wake();
        Ok(())
    }

    /// The next link passed to this worker, or register `cx` to be woken when one comes.
    pub(crate) fn poll_take(&self, cx: &Context<'_>) -> Option<Forwarded<S>> {
        let inbox = &self.group.inner.inboxes[usize::from(self.worker)];
        inbox.waker.register(cx.waker());
        inbox.lock().links.pop_front()
    }
}

impl<S> Drop for GroupMember<S> {
    /// The worker stopped serving: close the links waiting for it (their clients redial and
    /// land on a worker that serves) and refuse further ones.
    fn drop(&mut self) {
        let waiting = {
            let mut q = self.group.inner.inboxes[usize::from(self.worker)].lock();
            q.closed = true;
            std::mem::take(&mut q.links)
        };
        self.group.inner.dropped.fetch_add(waiting.len() as u64, Ordering::Relaxed);
        // Closed outside the lock.
        drop(waiting);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::FuturesIo;

    type Mem = FuturesIo<futures::io::Cursor<Vec<u8>>>;

    fn link() -> Forwarded<Mem> {
        Forwarded { io: FuturesIo(futures::io::Cursor::new(Vec::new())), source: 7, hello: [0; HELLO_LEN] }
    }

    #[test]
    fn a_mailbox_is_bounded_first_in_first_out_and_closed_when_its_worker_stops() {
        let group = AcceptorGroup::<Mem>::new([1; 16], 2).expect("group");
        let (w0, w1) =
            (GroupMember { group: group.clone(), worker: 0 }, GroupMember { group: group.clone(), worker: 1 });
        for i in 0..FORWARD_QUEUE {
            let mut l = link();
            l.source = i as u64;
            assert!(w0.forward(1, l).is_ok());
        }
        assert!(w0.forward(1, link()).is_err(), "past FORWARD_QUEUE the link is handed back to be closed");
        assert!(w0.forward(5, link()).is_err(), "no such worker");
        assert!(w1.forward(1, link()).is_err(), "never to itself");
        assert_eq!((group.forwarded(), group.forwards_dropped()), (FORWARD_QUEUE as u64, 3));
        let waker = futures::task::noop_waker();
        let cx = Context::from_waker(&waker);
        assert_eq!(w1.poll_take(&cx).map(|l| l.source), Some(0), "first in, first out");
        assert!(w0.poll_take(&cx).is_none());
        // Worker 1 stops: what waited for it is closed, and links for it are refused.
        drop(w1);
        assert_eq!(group.forwards_dropped(), 3 + FORWARD_QUEUE as u64 - 1);
        assert!(w0.forward(1, link()).is_err(), "worker 1 no longer serves");
    }

    #[test]
    fn a_worker_index_beyond_the_group_is_refused() {
        assert!(matches!(AcceptorGroup::<Mem>::new([1; 16], 0), Err(GroupError::Issuer(IssuerError::BadWorker))));
    }
}
