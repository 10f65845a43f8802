//! Graceful shutdown of an acceptor, shared by the raw and the session acceptor: stop
//! listening, close every session with GOODBYE, wait for their drivers within a bound, end
//! the rest, and report what was closed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use sotto_proto::Instant;

use crate::listen::{Counts, Queue};
use crate::router::Closing;
use crate::runtime::{Runtime, Timer};
use crate::shared::Clock;

/// How often a shutdown looks at the sessions it is closing.
const POLL: Duration = Duration::from_millis(5);

/// What an acceptor's `shutdown` closed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "facet", derive(facet::Facet))]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Sessions closed over their link with GOODBYE: their drivers wrote it and closed the
    /// link within the bound (or the link was lost meanwhile). Their peers see the session
    /// end with `PeerGoodbye`.
    pub closed_gracefully: u64,
    /// Sessions that ended at once without a GOODBYE: detached at the time (no link to say it
    /// on), or over a link without sotto's extensions (a vox peer).
    pub ended_without_goodbye: u64,
    /// Sessions whose GOODBYE was not written within the bound (a peer that does not read,
    /// say): ended, their links closed unflushed.
    pub timed_out: u64,
    /// New sessions waiting for `accept` when the shutdown began (closed with the rest, and
    /// counted there too).
    pub unaccepted: u64,
}

/// A future that waits until an instant, on the acceptor's runtime.
pub(crate) type Sleep = Arc<dyn Fn(StdInstant) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// [`Sleep`] on `rt`.
pub(crate) fn sleeper<R: Runtime>(rt: &R) -> Sleep {
    let rt = rt.clone();
    Arc::new(move |at| {
        let mut timer = rt.timer();
        timer.reset(at);
        Box::pin(std::future::poll_fn(move |cx| timer.poll_expired(cx)))
    })
}

/// Shut an acceptor down within `within`: stop its listening task (waiting for it at most a
/// quarter of the bound), close every session with `close_all` (given the core's now; it
/// returns the sessions closing over a link and how many ended at once), wait for those
/// until the bound, and end the rest.
pub(crate) async fn shutdown<T, C: Counts>(
    queue: &Queue<T, C>,
    clock: &Clock,
    sleep: &Sleep,
    within: Duration,
    close_all: impl FnOnce(Instant) -> (Vec<Closing>, usize),
) -> ShutdownReport {
    let deadline = clock.now_std() + within;
    let mut report = ShutdownReport::default();
    let unaccepted = queue.stop();
    report.unaccepted = unaccepted.len() as u64;
    let listen_by = clock.now_std() + within / 4;
    while !queue.stopped() && clock.now_std() < listen_by {
        sleep(clock.now_std() + POLL).await;
    }
    let (mut closing, without) = close_all(clock.now());
    report.ended_without_goodbye = without as u64;
    // Dropped outside every lock: dropping a handle locks its session.
    drop(unaccepted);
    loop {
        let before = closing.len();
        closing.retain(|c| !c.done());
        report.closed_gracefully += (before - closing.len()) as u64;
        let now = clock.now_std();
        if closing.is_empty() || now >= deadline {
            break;
        }
        sleep((now + POLL).min(deadline)).await;
    }
    for c in &closing {
        c.force();
    }
    report.timed_out = closing.len() as u64;
    tracing::debug!(?report, "sotto: acceptor shut down");
    report
}
