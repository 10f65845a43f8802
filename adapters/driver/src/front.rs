//! What both acceptors' handles ([`Acceptor`](crate::Acceptor),
//! [`SessionAcceptor`](crate::SessionAcceptor)) are made of: the queue of new sessions the
//! application takes with `accept`, the endpoint they route through, and the listening task,
//! spawned here; and the graceful shutdown of all of it.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::Stream;
use sotto_proto::conduit::ConfigError;
use sotto_proto::endpoint::{Endpoint, EndpointStats, Issuer};

use crate::config::Config;
use crate::group::GroupMember;
use crate::link_hook::{Arrived, ResumeBinding};
use crate::listen::{self, Counts, Queue};
use crate::router::{EpInner, EpShared};
use crate::routing::{EpRouting, Kind};
use crate::runtime::{Io, Runtime, TaskGuard};
use crate::shared::Clock;
use crate::shutdown::{self, ShutdownReport, Sleep};
use crate::summary::AcceptorSummary;

/// An acceptor: sessions of type `T` for the application, counters `C`.
pub(crate) struct Front<T, C> {
    queue: Arc<Queue<T, C>>,
    ep: Arc<EpShared>,
    /// Waits until an instant, on the acceptor's runtime.
    sleep: Sleep,
    _task: TaskGuard,
}

impl<T: Send + 'static, C: Counts> Front<T, C> {
    /// Start serving `incoming` (each item a freshly accepted stream, perhaps with a link
    /// hook to run first, and its source) on `rt`, making sessions of fresh ClientHellos with
    /// `kind`, checking resumes with `binding` if given.
    pub(crate) fn spawn<R, S, K, St>(
        rt: R,
        incoming: St,
        config: Config,
        kind: K,
        binding: Option<ResumeBinding>,
    ) -> Result<Self, ConfigError>
    where
        R: Runtime,
        S: Io,
        K: Kind<R, S, Session = T, Stats = C>,
        T: Unpin,
        St: Stream<Item = io::Result<(Arrived<S>, u64)>> + Send + 'static,
    {
        Self::spawn_with(rt, incoming, config, kind, binding, None)
    }

    /// [`spawn`](Self::spawn) as a worker of an acceptor group: the endpoint mints and reads
    /// `issuer`'s tagged keys, and links for other workers go to them through `member`.
    pub(crate) fn spawn_in_group<R, S, K, St>(
        rt: R,
        incoming: St,
        config: Config,
        kind: K,
        binding: Option<ResumeBinding>,
        (issuer, member): (Issuer, GroupMember<S>),
    ) -> Result<Self, ConfigError>
    where
        R: Runtime,
        S: Io,
        K: Kind<R, S, Session = T, Stats = C>,
        T: Unpin,
        St: Stream<Item = io::Result<(Arrived<S>, u64)>> + Send + 'static,
    {
        Self::spawn_with(rt, incoming, config, kind, binding, Some((issuer, member)))
    }

    fn spawn_with<R, S, K, St>(
        rt: R,
        incoming: St,
        config: Config,
        kind: K,
        binding: Option<ResumeBinding>,
        group: Option<(Issuer, GroupMember<S>)>,
    ) -> Result<Self, ConfigError>
    where
        R: Runtime,
        S: Io,
        K: Kind<R, S, Session = T, Stats = C>,
        T: Unpin,
        St: Stream<Item = io::Result<(Arrived<S>, u64)>> + Send + 'static,
    {
        let mut endpoint = Endpoint::new(config.endpoint_config())?;
        let (issuer, member) = group.unzip();
        endpoint.set_issuer(issuer);
        let ep = Arc::new(EpShared::new(endpoint, Clock::new(&rt)));
        let routing = EpRouting::new(Arc::clone(&ep), kind, binding, member);
        let sleep = shutdown::sleeper(&rt);
        let (queue, task) = listen::spawn(rt, incoming, config, routing);
        Ok(Self { queue, ep, sleep, _task: task })
    }

    /// The next new session. Cancel-safe. Fails once the stream source has ended and every
    /// session was taken.
    pub(crate) async fn accept(&self) -> io::Result<T> {
        self.queue.accept().await
    }

    /// The acceptor's own counters and its endpoint's.
    pub(crate) fn stats(&self) -> (C, EndpointStats) {
        let own = self.queue.lock().stats;
        (own, self.ep.lock().endpoint.stats())
    }

    /// The acceptor-wide summary, from its endpoint's counters `e`, the new sessions it
    /// turned away for a full accept backlog, and what it counts beside the endpoint.
    pub(crate) fn summary(&self, e: &EndpointStats, backlog_full: u64) -> AcceptorSummary {
        self.ep.gauges.summary(e, backlog_full)
    }

    /// See the acceptors' `shutdown`: stop listening, close every session with GOODBYE
    /// within `within`, report what was closed.
    pub(crate) async fn shutdown(&self, code: u32, reason: &str, within: Duration) -> ShutdownReport {
        shutdown::shutdown(&self.queue, &self.ep.clock, &self.sleep, within, |now| self.ep.close_all(now, code, reason))
            .await
    }

    /// The queue of new sessions (a handoff stops it, and queues adopted sessions on it).
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn queue(&self) -> &Arc<Queue<T, C>> {
        &self.queue
    }

    /// The endpoint.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn ep(&self) -> &Arc<EpShared> {
        &self.ep
    }

    /// Waits until an instant, on the acceptor's runtime.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn sleep(&self) -> &Sleep {
        &self.sleep
    }

    /// Lock the endpoint (for tests).
    pub(crate) fn lock_endpoint(&self) -> std::sync::MutexGuard<'_, EpInner> {
        self.ep.lock()
    }
}
