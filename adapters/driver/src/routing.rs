//! The listener's side of the one router: how both acceptors (raw stable conduits and
//! session-layer sessions) admit and route links through the core [`Endpoint`](sotto_proto::endpoint::Endpoint):
//! [`Endpoint::accept_link`](sotto_proto::endpoint::Endpoint::accept_link) (refused unread past the pending-handshake cap, a source's
//! pending quota or its failure budget), the ClientHello read under the handshake deadline,
//! then [`Endpoint::route`](sotto_proto::endpoint::Endpoint::route): a new session (created by the acceptor's [`Kind`], owned by its
//! own driver task), a resume (the link goes to that session's mailbox; the session checks
//! the key before the link touches its live one), or REJECTED (written, then the link is
//! closed).
//!
//! A session-layer session is only handed to the application once its session handshake is
//! done: an initiator whose first ServerHello was lost redials as a fresh session, and the
//! first attempt must not become a session the application holds with no peer behind it.
//! The deadline is the endpoint's (the first link's handshake deadline): this task calls
//! [`Endpoint::handle_timeout`](sotto_proto::endpoint::Endpoint::handle_timeout) at [`Endpoint::poll_timeout`](sotto_proto::endpoint::Endpoint::poll_timeout) and ends the sessions the
//! endpoint reports expired, evicted or reclaimed. A raw conduit has no session handshake: it
//! is announced as soon as it is routed.
//!
//! Two lots (`lot`) delay links instead of closing them. A link over its source's pending
//! quota is parked unread until one of that source's pending handshakes finishes (or its
//! deadline passes). A fresh ClientHello over its source's accept-backlog share is held with
//! its pending handshake until the application takes one of that source's sessions (the
//! queue tells this task which source gained room) or one of its unannounced sessions ends;
//! a held link is closed, uncharged, at that handshake's deadline, before the endpoint's own
//! `handle_timeout` would expire the slot and charge its source. The task's one timer is
//! armed for the earliest of the endpoint's deadline and both lots'.
//!
//! Every link comes with its source (a hash of the peer's address, [`source_of`]; 0 when the
//! stream cannot tell): the endpoint keeps its failure budget and pending quota per source.
//! Links with no known source (Unix sockets, streams that are not TCP) all count as the one
//! source 0: they share one failure budget, and the per-source quotas on pending handshakes
//! and the accept backlog do not apply to them (the global caps do). An acceptor serving such
//! streams to many clients should raise `failure_budget` or wrap its streams in
//! [`WithPeer`](crate::WithPeer).

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::task::Context;
use std::time::Instant as StdInstant;

use futures::stream::{Stream, StreamExt};
use sotto_proto::endpoint::{
    EndpointEvent, LinkRefusal, PendingLink as EpPending, RejectReason, ResumeOutcome, Routed,
    SessionHandle as EpHandle,
};
use sotto_proto::wire::{ClientHello, HELLO_LEN};
use sotto_proto::{Instant, ResumeKey};

use crate::config::Config;
use crate::group::{Forwarded, GroupMember};
use crate::keys::random_key_bytes;
use crate::link_hook::{self, AcceptHooks, Arrived, LinkInfo, ResumeBinding};
use crate::listen::{Counts, ListenOf, Routing};
use crate::lot::{park_cap_per_source, Lot};
use crate::pending::Outcome;
use crate::refusal_log::RefusalLog;
use crate::router::{EpInner, EpShared, Reach};
use crate::runtime::PeerAddr;
use crate::runtime::{Io, Runtime, Timer};

/// The source of a link from `addr` for the per-source failure budget: a hash of its IP
/// address (ports are free to change).
#[must_use]
pub fn source_of(addr: &std::net::SocketAddr) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    addr.ip().hash(&mut h);
    h.finish() | 1
}

/// The source of a link whose stream knows its peer (see [`Io::peer_addr`]): the hash of a
/// TCP peer's IP address, 0 for anything else.
pub(crate) fn source_of_peer<S: Io>(io: &S) -> u64 {
    match io.peer_addr() {
        Some(PeerAddr::Tcp(addr)) => source_of(&addr),
        _ => 0,
    }
}

/// Accepted streams of type `X` with their peers' addresses, as arrivals that run `hooks`'
/// link hook (its stream made the driver's by `to_io`), each with its source (the hash of a
/// TCP peer's IP address, 0 for anything else).
pub(crate) fn hooked_arrivals<X, T, S, St>(
    incoming: St,
    hooks: AcceptHooks<X, T>,
    to_io: fn(T, LinkInfo) -> S,
) -> impl Stream<Item = io::Result<(Arrived<S>, u64)>> + Send + 'static
where
    X: Send + 'static,
    T: Send + 'static,
    S: Send + 'static,
    St: Stream<Item = io::Result<(X, Option<PeerAddr>)>> + Send + 'static,
{
    incoming.map(move |r| {
        r.map(|(x, peer)| {
            let source = match &peer {
                Some(PeerAddr::Tcp(addr)) => source_of(addr),
                _ => 0,
            };
            (link_hook::arrive(&hooks, x, peer, to_io), source)
        })
    })
}

/// What kind of session an acceptor makes of a fresh ClientHello.
pub(crate) trait Kind<R: Runtime, S: Io>: Send + Unpin + 'static {
    /// What `accept` yields.
    type Session: Send + Unpin + 'static;
    /// The acceptor's counters.
    type Stats: Counts;

    /// Create the session the endpoint admitted as `handle`, its first link `io` attached
    /// with `key`, registered with `ep` and driven by its own task. Returns its handle for
    /// the application and whether it is ready to be announced now (otherwise it reports
    /// ready through its endpoint membership); `None` if it could not be created (its slot
    /// is freed).
    #[allow(clippy::too_many_arguments)]
    fn start(
        &self,
        rt: &R,
        config: &Config,
        ep: &Arc<EpShared>,
        now: Instant,
        handle: EpHandle,
        io: S,
        hello: &ClientHello,
        key: ResumeKey,
    ) -> Option<(Self::Session, bool)>;
}

/// Forwarded links a worker of an acceptor group routes per step of its listening task.
const FORWARD_BATCH: usize = 64;
/// Parked links closed at their deadline, and sources whose share has room for a held
/// link, per step of the listening task (the rest on the next step).
const LOT_BATCH: usize = 64;

/// A fresh session's link held for room in its source's accept-backlog share: its pending
/// handshake in the endpoint (kept, with its deadline), the link, its ClientHello.
struct Held<S> {
    p: EpPending,
    io: S,
    hello: [u8; HELLO_LEN],
}

/// An acceptor's routing: through the core endpoint.
pub(crate) struct EpRouting<R: Runtime, K: Kind<R, S>, S: Io> {
    ep: Arc<EpShared>,
    /// Its acceptor group, when it is a worker of one (`group`).
    member: Option<GroupMember<S>>,
    kind: K,
    /// New sessions not reported ready yet, with their sources: not shown to the
    /// application. Dropping one closes it.
    unannounced: HashMap<EpHandle, (K::Session, u64)>,
    /// How many of `unannounced` each source has (sources with none are removed).
    unannounced_by_source: HashMap<u64, usize>,
    /// Fires at the endpoint's [`poll_timeout`](sotto_proto::endpoint::Endpoint::poll_timeout).
    timer: Option<R::Timer>,
    /// The deadline `timer` is armed for.
    armed: Option<StdInstant>,
    /// Checks each resume against the session's first link (see `link_hook`).
    binding: Option<ResumeBinding>,
    /// Links over their source's pending quota, waiting unread for their turn.
    parked: Lot<Arrived<S>>,
    /// Fresh sessions over their source's accept-backlog share, their hello read, waiting
    /// for room in the share.
    held: Lot<Held<S>>,
    /// Sources one of whose unannounced sessions ended: room for a held link.
    to_release: Vec<u64>,
    /// Which per-link refusals to log (rate-limited per source and kind).
    refusals: RefusalLog,
}

impl<R: Runtime, K: Kind<R, S>, S: Io> EpRouting<R, K, S> {
    pub(crate) fn new(
        ep: Arc<EpShared>,
        kind: K,
        binding: Option<ResumeBinding>,
        member: Option<GroupMember<S>>,
    ) -> Self {
        Self {
            ep,
            member,
            kind,
            unannounced: HashMap::new(),
            unannounced_by_source: HashMap::new(),
            timer: None,
            armed: None,
            binding,
            parked: Lot::new(),
            held: Lot::new(),
            to_release: Vec::new(),
            refusals: RefusalLog::default(),
        }
    }

    /// A link from `source` (its peer `peer`) was refused for `kind`: log it with `log`
    /// (one of `trace`'s refusal lines), unless a line of this kind from this source was
    /// logged within `acceptor.refusal_log_interval` (then it is counted for the next one).
    fn log_refusal(
        &mut self,
        config: &Config,
        kind: &'static str,
        peer: Option<&PeerAddr>,
        source: u64,
        log: fn(&'static str, Option<&PeerAddr>, u64, u64),
    ) {
        let now = self.ep.clock.now_std();
        if let Some(suppressed) = self.refusals.refused(now, config.acceptor.refusal_log_interval, source, kind) {
            log(kind, peer, source, suppressed);
        }
    }

    /// Whether the resume binding (if any) lets a resume over `io` into the session at
    /// `reach` (whose first link it compares with).
    fn binding_allows(&self, reach: &Reach, io: &S) -> bool {
        let Some(binding) = &self.binding else { return true };
        let first = reach.first_link().unwrap_or_default();
        binding.allows(&first, &LinkInfo::new(io.peer_addr(), io.peer_identity()))
    }
}

/// What the endpoint asked for, done once its lock is released.
enum Todo {
    /// End this session (expired, evicted or reclaimed); drop its handle if unannounced.
    End(EpHandle, Reach),
}

/// Drain the endpoint's events under its lock: the sessions to end afterwards.
fn drain(g: &mut EpInner, todo: &mut Vec<Todo>) {
    while let Some(e) = g.endpoint.poll_event() {
        match e {
            EndpointEvent::SessionHandshakeExpired(h) => {
                tracing::debug!("sotto: session handshake timed out");
                todo.push(Todo::End(h, g.reach(h)));
            }
            EndpointEvent::Evicted(h) | EndpointEvent::Reclaimed(h) => {
                tracing::debug!(?e, "sotto: detached session evicted");
                todo.push(Todo::End(h, g.reach(h)));
            }
            // Each pending link has its own timer in the listener.
            EndpointEvent::HandshakeExpired(_) => {}
        }
    }
}

impl<R: Runtime, K: Kind<R, S>, S: Io> EpRouting<R, K, S> {
    /// Act on what the endpoint asked for, outside its lock.
    fn settle(&mut self, todo: Vec<Todo>, now: Instant) {
        for Todo::End(h, reach) in todo {
            reach.end(now);
            // Dropped outside every lock: dropping a handle locks its session.
            if let Some((session, source)) = self.take_unannounced(h) {
                drop(session);
                self.share_freed(source);
            }
        }
    }

    /// One of `source`'s sessions left its accept-backlog share without being queued (it
    /// ended in its session handshake): a held link of that source may go next.
    fn share_freed(&mut self, source: u64) {
        if self.held.count(source) > 0 {
            self.to_release.push(source);
        }
    }

    /// Remove an unannounced session (and its count against its source).
    fn take_unannounced(&mut self, h: EpHandle) -> Option<(K::Session, u64)> {
        let (session, source) = self.unannounced.remove(&h)?;
        if let Some(n) = self.unannounced_by_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.unannounced_by_source.remove(&source);
            }
        }
        Some((session, source))
    }
}

impl<R: Runtime, K: Kind<R, S>, S: Io> Routing<R, S> for EpRouting<R, K, S> {
    type Item = (Arrived<S>, u64);
    /// The endpoint's pending link and the link's source.
    type Key = (EpPending, u64);
    type Session = K::Session;
    type Stats = K::Stats;

    fn admit(&mut self, l: &mut ListenOf<R, S, Self>, (io, source): (Arrived<S>, u64)) {
        let now = self.ep.clock.now();
        let (admitted, detached) = {
            let mut g = self.ep.lock();
            (g.endpoint.accept_link(now, source), g.endpoint.stats().sessions_detached)
        };
        let limit = match admitted {
            Ok(p) => return l.read_hello(io, (p, source)),
            Err(LinkRefusal::RateLimited) => {
                self.ep.gauges.rate_limited();
                "failure_budget"
            }
            Err(LinkRefusal::TooManyPendingHandshakes) => {
                self.ep.gauges.pending_full();
                "max_pending_handshakes"
            }
            // Counted by the endpoint; parked unless the lot is full too.
            Err(LinkRefusal::SourcePendingQuota) => {
                let peer = io.peer_addr();
                let cap = lot_cap(&l.config, detached);
                let per_source = park_cap_per_source(cap, l.config.acceptor.max_pending_per_source);
                let deadline = now.saturating_add(l.config.protocol.handshake_timeout.into());
                match self.parked.put(source, deadline, io, cap, per_source) {
                    // Started when one of its source's pending handshakes finishes (`outcome`),
                    // closed at its deadline (`expire_parked`).
                    Ok(()) => return l.queue.lock().stats.link_parked(),
                    Err(_closed) => {
                        let kind = "max_pending_per_source";
                        return self.log_refusal(&l.config, kind, peer.as_ref(), source, crate::trace::link_refused);
                    }
                }
            }
            Err(refusal) => return tracing::debug!(?refusal, "sotto: link refused"),
        };
        self.log_refusal(&l.config, limit, io.peer_addr().as_ref(), source, crate::trace::link_refused);
    }

    fn outcome(&mut self, l: &mut ListenOf<R, S, Self>, (p, source): (EpPending, u64), outcome: Outcome<S>) {
        self.settle_pending(l, p, source, outcome);
        self.unpark(l, source);
    }

    /// Fire the endpoint's deadlines, yield the sessions that reported ready, drop those
    /// that ended or expired first.
    fn poll(&mut self, l: &mut ListenOf<R, S, Self>, cx: &mut Context<'_>) -> bool {
        if (self.parked.len() > 0 || self.held.len() > 0) && l.queue.stopped() {
            // Shutdown: the listener dropped its pending handshakes; close the parked and
            // held links.
            self.parked.clear();
            self.close_held(l);
        }
        let busy = self.release_freed(l);
        self.poll_endpoint(l, cx) | busy
    }
}

/// Links the lot may hold: `max_pending_handshakes`, plus one for each detached session (it
/// let go of its link's socket, and in a reconnect storm its client may be waiting here).
fn lot_cap(config: &Config, detached: u64) -> usize {
    config.acceptor.max_pending_handshakes.saturating_add(usize::try_from(detached).unwrap_or(usize::MAX))
}

impl<R: Runtime, K: Kind<R, S>, S: Io> EpRouting<R, K, S> {
    /// A pending handshake of `source` finished, freeing one of its slots: start the link
    /// parked longest for it, if any.
    fn unpark(&mut self, l: &mut ListenOf<R, S, Self>, source: u64) {
        while self.parked.count(source) > 0 {
            let now = self.ep.clock.now();
            let admitted = {
                let mut g = self.ep.lock();
                if !g.endpoint.source_has_room(source) {
                    // Still at its quota (a slot went to a held link): the next finish retries.
                    return;
                }
                g.endpoint.accept_link(now, source)
            };
            let Some((ticket, io)) = self.parked.take(source) else { return };
            match admitted {
                Ok(p) => return l.read_hello(io, (p, source)),
                Err(LinkRefusal::SourcePendingQuota) => return self.parked.put_back(source, ticket, io),
                // Rate-limited or the whole table is full: closed, as if refused on arrival
                // (and so is the next one, unless it gets in).
                Err(refusal) => tracing::debug!(?refusal, "sotto: parked link refused"),
            }
        }
    }

    /// The handshake of pending link `p` from `source` came to `outcome`.
    fn settle_pending(&mut self, l: &mut ListenOf<R, S, Self>, p: EpPending, source: u64, outcome: Outcome<S>) {
        let now = self.ep.clock.now();
        match outcome {
            Outcome::Hello(io, hello) => self.route(l, now, p, source, io, &hello),
            Outcome::Silent => {
                tracing::debug!("sotto: no byte by the first-byte deadline; link closed");
                self.ep.lock().endpoint.pending_silent(now, p);
            }
            Outcome::BadPrefix => {
                // Counted (and charged to the source) by the endpoint as a bad hello.
                let _ = self.ep.lock().endpoint.route(now, p, &[], ResumeKey::ZERO);
            }
            Outcome::Eof => self.ep.lock().endpoint.pending_closed(p),
            Outcome::TimedOut => {
                tracing::debug!("sotto: handshake timed out");
                // Held links first: the endpoint would expire their pending handshakes too.
                self.expire_held(l, now);
                let mut todo = Vec::new();
                {
                    let mut g = self.ep.lock();
                    g.endpoint.handle_timeout(now);
                    g.endpoint.pending_closed(p);
                    drain(&mut g, &mut todo);
                }
                self.settle(todo, now);
            }
            Outcome::HookFailed { panicked } => {
                l.queue.lock().stats.link_hook_failed(panicked);
                self.ep.lock().endpoint.pending_failed(now, p);
            }
            Outcome::Written => {}
        }
    }

    /// Fire the endpoint's deadlines, yield the sessions that reported ready, drop those
    /// that ended or expired first.
    fn poll_endpoint(&mut self, l: &mut ListenOf<R, S, Self>, cx: &mut Context<'_>) -> bool {
        self.ep.register_listener(cx.waker());
        let now = self.ep.clock.now();
        let mut busy = self.take_forwarded(l, now, cx);
        // Held links before the endpoint's deadlines: it would expire their pending
        // handshakes and charge their sources.
        busy |= self.expire_held(l, now);
        busy |= self.expire_parked(l, now);
        let mut todo = Vec::new();
        let (settled, next) = {
            let mut g = self.ep.lock();
            if self.armed.is_some_and(|t| t <= self.ep.clock.now_std()) {
                self.armed = None;
                g.endpoint.handle_timeout(now);
            }
            drain(&mut g, &mut todo);
            let settled = std::mem::take(&mut g.settled);
            (settled, g.endpoint.poll_timeout())
        };
        busy |= !todo.is_empty() || !settled.is_empty();
        self.settle(todo, now);
        // Outside the endpoint lock: dropping a handle takes its session's lock.
        for (h, ready) in settled {
            let Some((session, source)) = self.take_unannounced(h) else { continue };
            if ready {
                l.queue.push(session, source);
            } else {
                drop(session);
                self.share_freed(source);
            }
        }
        // The earliest of the endpoint's deadlines and the lots'.
        let next = [next, self.parked.next_deadline(), self.held.next_deadline()]
            .into_iter()
            .flatten()
            .min()
            .and_then(|t| self.ep.clock.std_time(t));
        let Some(next) = next else {
            self.armed = None;
            return busy;
        };
        let timer = self.timer.get_or_insert_with(|| l.rt.timer());
        if self.armed != Some(next) {
            timer.reset(next);
            self.armed = Some(next);
        }
        if timer.poll_expired(cx).is_ready() {
            // Fire the deadline on the next step.
            busy = true;
        }
        busy
    }
}

impl<R: Runtime, K: Kind<R, S>, S: Io> EpRouting<R, K, S> {
    /// Route the links other workers of the group passed here (a bounded batch; the rest on
    /// the next step), as if this worker had read their hellos. Returns whether it took any.
    fn take_forwarded(&mut self, l: &mut ListenOf<R, S, Self>, now: Instant, cx: &mut Context<'_>) -> bool {
        let mut took = false;
        for _ in 0..FORWARD_BATCH {
            let Some(f) = self.member.as_ref().and_then(|m| m.poll_take(cx)) else { break };
            took = true;
            tracing::debug!("sotto: routing a link another worker passed here");
            let admitted = self.ep.lock().endpoint.accept_link(now, f.source);
            match admitted {
                Ok(p) => self.route(l, now, p, f.source, f.io, &f.hello),
                Err(refusal) => tracing::debug!(?refusal, "sotto: forwarded link refused"),
            }
        }
        took
    }

    fn route(
        &mut self,
        l: &mut ListenOf<R, S, Self>,
        now: Instant,
        p: EpPending,
        source: u64,
        io: S,
        hello: &[u8; HELLO_LEN],
    ) {
        let fresh = sotto_proto::wire::ClientHello::decode(hello).is_ok_and(|h| h.resume_key.is_none());
        if fresh && self.backlog_full(l, source, &io) {
            self.ep.lock().endpoint.pending_closed(p);
            return;
        }
        // Over its source's share, or behind links of its source held already: held.
        let share = l.config.acceptor.accept_backlog_per_source;
        if fresh && source != 0 && (self.held.count(source) > 0 || self.share_used(l, source) >= share) {
            return self.hold(l, p, source, io, hello);
        }
        self.route_admitted(l, now, p, source, io, hello);
    }

    /// Whether the accept backlog is full (sessions still in their handshake count against it
    /// too) for a fresh session from `source` over `io`; then counted and logged, and the
    /// caller closes the link.
    fn backlog_full(&mut self, l: &mut ListenOf<R, S, Self>, source: u64, io: &S) -> bool {
        if !l.queue.full(l.config.acceptor.accept_backlog.saturating_sub(self.unannounced.len())) {
            return false;
        }
        let peer = io.peer_addr();
        self.log_refusal(&l.config, "accept_backlog", peer.as_ref(), source, crate::trace::link_refused);
        true
    }

    /// Sessions of `source` in its accept-backlog share: waiting for `accept`, or still in
    /// their session handshake.
    fn share_used(&self, l: &ListenOf<R, S, Self>, source: u64) -> usize {
        l.queue.ready_from(source) + self.unannounced_by_source.get(&source).copied().unwrap_or(0)
    }

    /// Hold the fresh session of pending link `p` from `source` (its hello read) until its
    /// source's share has room, at most until its handshake deadline; past the bounds
    /// (`accept_backlog_per_source` held from the source, `accept_backlog` in all) close
    /// it, counted in `backlog_source_full`.
    fn hold(&mut self, l: &mut ListenOf<R, S, Self>, p: EpPending, source: u64, io: S, hello: &[u8; HELLO_LEN]) {
        // A stale handle (its handshake expired meanwhile): the link is closed.
        let Some(deadline) = self.ep.lock().endpoint.pending_deadline(p) else { return };
        let a = &l.config.acceptor;
        match self.held.put(
            source,
            deadline,
            Held { p, io, hello: *hello },
            a.accept_backlog,
            a.accept_backlog_per_source,
        ) {
            Ok(()) => {
                let mut q = l.queue.lock();
                q.stats.link_held();
                q.holding.insert(source);
            }
            Err((h, _)) => {
                l.queue.lock().stats.backlog_source_full();
                let (kind, peer) = ("accept_backlog_per_source", h.io.peer_addr());
                self.log_refusal(&l.config, kind, peer.as_ref(), source, crate::trace::link_refused);
                self.ep.lock().endpoint.pending_closed(h.p);
                return;
            }
        }
        // The share may have room already (it was held behind others of its source).
        self.release(l, source);
    }

    /// Route `source`'s held links, oldest first, while its share has room; then start its
    /// parked links on the pending slots they gave back.
    fn release(&mut self, l: &mut ListenOf<R, S, Self>, source: u64) {
        let share = l.config.acceptor.accept_backlog_per_source;
        let mut took = false;
        while self.held.count(source) > 0 && self.share_used(l, source) < share {
            let Some((_, h)) = self.held.take(source) else { break };
            took = true;
            let now = self.ep.clock.now();
            if self.backlog_full(l, source, &h.io) {
                self.ep.lock().endpoint.pending_closed(h.p);
                continue;
            }
            self.route_admitted(l, now, h.p, source, h.io, &h.hello);
        }
        if took {
            if self.held.count(source) == 0 {
                l.queue.lock().holding.remove(&source);
            }
            self.unpark(l, source);
        }
    }

    /// Release held links of the sources whose share gained room (a session accepted, or
    /// ended in its session handshake): a bounded batch per step. Returns whether it did.
    fn release_freed(&mut self, l: &mut ListenOf<R, S, Self>) -> bool {
        if self.held.len() == 0 {
            self.to_release.clear();
            return false;
        }
        {
            let mut q = l.queue.lock();
            let freed = &mut q.freed;
            self.to_release.append(freed);
        }
        let mut busy = false;
        for _ in 0..LOT_BATCH {
            let Some(source) = self.to_release.pop() else { break };
            busy = true;
            self.release(l, source);
        }
        busy
    }

    /// Close the held links whose handshake deadline has passed at `now` (at most
    /// `accept_backlog` are held), freeing their pending slots uncharged, and start parked
    /// links of their sources on them. Call before the endpoint's `handle_timeout`. Returns
    /// whether it closed any.
    fn expire_held(&mut self, l: &mut ListenOf<R, S, Self>, now: Instant) -> bool {
        if self.held.next_deadline().is_none_or(|t| t > now) {
            return false;
        }
        let mut closed = Vec::new();
        while let Some(expired) = self.held.pop_expired(now) {
            closed.push(expired);
        }
        {
            let mut g = self.ep.lock();
            for (_, h) in &closed {
                g.endpoint.pending_closed(h.p);
            }
        }
        {
            let mut q = l.queue.lock();
            for (source, _) in &closed {
                q.stats.held_expired();
                if self.held.count(*source) == 0 {
                    q.holding.remove(source);
                }
            }
        }
        tracing::debug!(links = closed.len(), "sotto: held links closed at their handshake deadline");
        for (source, h) in closed {
            // Closed outside every lock.
            drop(h.io);
            self.unpark(l, source);
        }
        true
    }

    /// Close parked links that waited `protocol.handshake_timeout` (a bounded batch per
    /// step). Returns whether it closed any.
    fn expire_parked(&mut self, l: &mut ListenOf<R, S, Self>, now: Instant) -> bool {
        let mut n = 0;
        while n < LOT_BATCH {
            let Some((_, io)) = self.parked.pop_expired(now) else { break };
            drop(io);
            n += 1;
        }
        if n == 0 {
            return false;
        }
        tracing::debug!(links = n, "sotto: parked links closed at their deadline");
        let mut q = l.queue.lock();
        for _ in 0..n {
            q.stats.parked_expired();
        }
        true
    }

    /// Close every held link (shutdown), freeing their pending slots.
    fn close_held(&mut self, l: &mut ListenOf<R, S, Self>) {
        let mut closed = Vec::new();
        while let Some((_, h)) = self.held.pop_any() {
            closed.push(h);
        }
        {
            let mut g = self.ep.lock();
            for h in &closed {
                g.endpoint.pending_closed(h.p);
            }
        }
        l.queue.lock().holding.clear();
        self.to_release.clear();
        drop(closed);
    }

    /// Route pending link `p` from `source` (its ClientHello `hello`, its share checked):
    /// a new session, a resume, a forward to another worker, or REJECTED.
    fn route_admitted(
        &mut self,
        l: &mut ListenOf<R, S, Self>,
        now: Instant,
        p: EpPending,
        source: u64,
        io: S,
        hello: &[u8; HELLO_LEN],
    ) {
        let mut todo = Vec::new();
        let (routed, reach) = {
            let mut g = self.ep.lock();
            let issued = random_key_bytes().map_or(ResumeKey::ZERO, |r| g.endpoint.mint_key(&r));
            let routed = g.endpoint.route(now, p, hello, issued);
            let reach = match &routed {
                Ok(Routed::Resume(r)) => Some(g.reach(r.handle())),
                _ => None,
            };
            drain(&mut g, &mut todo);
            (routed, reach)
        };
        self.settle(todo, now);
        match routed {
            Ok(Routed::New { handle, hello, key }) => {
                let Some((session, ready)) = self.kind.start(&l.rt, &l.config, &self.ep, now, handle, io, &hello, key)
                else {
                    self.ep.lock().endpoint.free(handle);
                    return;
                };
                if ready {
                    // Announced now (a raw conduit): the endpoint stops its unready deadline.
                    let _ = self.ep.lock().endpoint.session_ready(handle);
                    l.queue.push(session, source);
                } else {
                    self.unannounced.insert(handle, (session, source));
                    *self.unannounced_by_source.entry(source).or_insert(0) += 1;
                }
            }
            Ok(Routed::Resume(resume)) => {
                let reach = reach.unwrap_or_else(Reach::none);
                if !self.binding_allows(&reach, &io) {
                    let log: fn(&'static str, Option<&PeerAddr>, u64, u64) =
                        |_, peer, source, suppressed| crate::trace::resume_refused_by_binding(peer, source, suppressed);
                    self.log_refusal(&l.config, "resume_binding", io.peer_addr().as_ref(), source, log);
                    l.queue.lock().stats.resume_refused_by_binding();
                    let reply = self.ep.lock().endpoint.resume_outcome(now, &resume, &ResumeOutcome::Refused);
                    l.reject(io, (p, source), &reply.unwrap_or_else(crate::router::rejected));
                    return;
                }
                if let Err((io, resume)) = reach.deliver(io, resume) {
                    // Its session is gone: refused, like an unknown key.
                    let reply = self.ep.lock().endpoint.resume_outcome(now, &resume, &ResumeOutcome::Refused);
                    let reply = reply.unwrap_or_else(crate::router::rejected);
                    l.reject(io, (p, source), &reply);
                }
            }
            Ok(Routed::Forward { worker, .. }) => {
                // Another worker of the group issued the key: the link and its hello go there.
                tracing::debug!(worker, "sotto: passing a resume to the worker that issued its key");
                let link = Forwarded { io, source, hello: *hello };
                let passed = match self.member.as_ref() {
                    Some(m) => m.forward(worker, link).map_err(drop),
                    None => Err(()),
                };
                if passed.is_err() {
                    tracing::debug!(worker, "sotto: a resume for another worker could not be passed on; link closed");
                }
            }
            Ok(Routed::Reject { reason, reply }) => {
                if reason == RejectReason::IssuerGone {
                    tracing::debug!("sotto: resume of an earlier run's session (the acceptor restarted): lost");
                }
                let peer = io.peer_addr();
                if reason == RejectReason::Full {
                    let log: fn(&'static str, Option<&PeerAddr>, u64, u64) =
                        |_, peer, source, suppressed| crate::trace::acceptor_full(peer, source, suppressed);
                    self.log_refusal(&l.config, "full", peer.as_ref(), source, log);
                } else {
                    let log: fn(&'static str, Option<&PeerAddr>, u64, u64) =
                        |_, peer, source, suppressed| crate::trace::resume_unknown_key(peer, source, suppressed);
                    self.log_refusal(&l.config, "unknown_key", peer.as_ref(), source, log);
                }
                l.reject(io, (p, source), &reply);
            }
            Err(refusal) => tracing::debug!(?refusal, "sotto: bad hello"),
        }
    }
}
