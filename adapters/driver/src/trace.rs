//! What sotto tells a `tracing` subscriber, in one place.
//!
//! Every session's driver task runs inside a span named `sotto_session` with the fields
//! `session` (the process-wide [`SessionId`] number, as `SessionHandle::id` and
//! `StableConduit::id` report it), `role` (`"initiator"` or `"acceptor"`), `api`
//! (`"session"` or `"conduit"`) and `peer` (the current link's peer address, recorded when a
//! link attaches; empty until one has, or if the stream does not know it). The span is at
//! INFO level, so the events below carry it whenever INFO is enabled; the task enters it on
//! every poll, which costs nothing unless a subscriber enabled it.
//!
//! Levels:
//!
//! - WARN: a session lost (field `end`, the reason), an acceptor full (a new session refused
//!   because `max_sessions` are held, none detached), a peer's session-protocol violation
//!   (`code`, `reason`: data after its end of stream, say), which ends the session;
//! - INFO: a session ended by its acceptor's shutdown without a GOODBYE written (detached at
//!   the time, or out of time: the operator asked for it, so not a loss), a session ended by
//!   the peer's GOODBYE (`code`, `reason`), a resume refused (by the resume binding, by its
//!   session, or for an unknown key, at the acceptor), a link refused by one of the acceptor's
//!   limits (`limit`, `source`, `peer`);
//! - DEBUG: links up and down (`link`, the cause), dials, handshake timeouts, our own close;
//! - nothing per message: the data path never calls into `tracing`.
//!
//! The acceptor's events (refusals, full) come from its listening task, outside any session
//! span: they carry the link's `peer` and `source` themselves. They are rate-limited: one
//! line per source and kind per `acceptor.refusal_log_interval`, the refusals not logged in
//! between counted in the next line's `suppressed` (see `refusal_log`).

use sotto_proto::{LinkId, Role, SessionEnd};
use tracing::Instrument;

use crate::session::SessionId;
use crate::{PeerAddr, Runtime, TaskGuard};

/// Which API a session belongs to (the span's `api` field).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Api {
    /// Session layer (`SessionHandle`).
    Session,
    /// Raw stable conduit (`StableConduit`).
    Conduit,
}

/// The span a session's driver runs in (see the module docs).
pub(crate) fn session_span(id: SessionId, role: Role, api: Api, peer: Option<&PeerAddr>) -> tracing::Span {
    let role = match role {
        Role::Initiator => "initiator",
        Role::Acceptor => "acceptor",
    };
    let api = match api {
        Api::Session => "session",
        Api::Conduit => "conduit",
    };
    let span = tracing::info_span!("sotto_session", session = id.0, role, api, peer = tracing::field::Empty);
    if let Some(peer) = peer {
        span.record("peer", tracing::field::display(peer));
    }
    span
}

/// Spawn a session's driver on `rt`, inside `span`, with panics isolated at the task's
/// boundary (see [`crate::tasks::isolated`]).
pub(crate) fn spawn_in<R, F>(rt: &R, driver: F, span: tracing::Span) -> TaskGuard
where
    R: Runtime,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    rt.spawn(Box::pin(crate::tasks::isolated(driver).instrument(span)))
}

/// A link attached (called from the driver, inside the session's span): record its peer on
/// the span and say so at DEBUG.
pub(crate) fn link_up(link: LinkId, peer: Option<&PeerAddr>, resumed: bool, ext: bool, replaying: u64) {
    if let Some(peer) = peer {
        tracing::Span::current().record("peer", tracing::field::display(peer));
    }
    tracing::debug!(link = link.0, resumed, ext, replaying, "sotto: link up");
}

/// The session ended (called from the driver, inside the session's span); `goodbye` is the
/// peer's GOODBYE, if it sent one; `shut_down` if its acceptor's shutdown ended it (a
/// detached session, or one whose GOODBYE could not be written within the bound: the
/// operator asked for it, so it is INFO, not a loss to warn about).
pub(crate) fn session_ended(end: SessionEnd, goodbye: Option<(u32, &str)>, shut_down: bool) {
    match end {
        SessionEnd::PeerGoodbye { code } => {
            let reason = goodbye.map_or("", |(_, reason)| reason);
            tracing::info!(code, reason, "sotto: session ended by the peer's goodbye");
        }
        SessionEnd::LocalClose { code } => tracing::debug!(code, "sotto: session closed"),
        end if shut_down => tracing::info!(%end, "sotto: session ended by the acceptor's shutdown"),
        end => tracing::warn!(%end, "sotto: session lost"),
    }
}

/// The peer broke a session-protocol rule (called from the driver, inside the session's
/// span): we answered `ProtocolError` and the session ends. At most once per session.
pub(crate) fn session_violation(v: sotto_proto::session::SessionViolation) {
    tracing::warn!(code = v.code(), reason = v.reason(), "sotto: the peer broke the session protocol; session ended");
}

/// A resume refused by the session it named (a retired key, a stale duplicate, an ended
/// session); the link gets REJECTED, the live one is untouched.
pub(crate) fn resume_refused_by_session(peer: Option<&PeerAddr>) {
    tracing::info!(
        peer = peer.map(tracing::field::display),
        "sotto: resume refused by its session, answering REJECTED"
    );
}

/// A resume for a key no live session holds, at the acceptor: answered REJECTED.
/// `suppressed`: refusals of this kind from this source not logged since its last line
/// (the acceptor's per-link lines are rate-limited: `acceptor.refusal_log_interval`).
pub(crate) fn resume_unknown_key(peer: Option<&PeerAddr>, source: u64, suppressed: u64) {
    tracing::info!(
        peer = peer.map(tracing::field::display),
        source,
        suppressed,
        "sotto: resume refused: no session holds its key, answering REJECTED"
    );
}

/// A resume refused by the acceptor's resume binding (the resuming link's peer or identity
/// does not match the session's first link's: a stolen key, say); answered REJECTED, the
/// session's live link untouched (`suppressed` as for [`resume_unknown_key`]).
pub(crate) fn resume_refused_by_binding(peer: Option<&PeerAddr>, source: u64, suppressed: u64) {
    tracing::info!(
        peer = peer.map(tracing::field::display),
        source,
        suppressed,
        "sotto: resume refused by the resume binding, answering REJECTED"
    );
}

/// A link refused by one of the acceptor's limits, named by `limit` (`suppressed` as for
/// [`resume_unknown_key`]).
pub(crate) fn link_refused(limit: &'static str, peer: Option<&PeerAddr>, source: u64, suppressed: u64) {
    tracing::info!(
        limit,
        peer = peer.map(tracing::field::display),
        source,
        suppressed,
        "sotto: link refused by a limit"
    );
}

/// A new session refused because the acceptor holds `max_sessions`, none detached
/// (`suppressed` as for [`resume_unknown_key`]).
pub(crate) fn acceptor_full(peer: Option<&PeerAddr>, source: u64, suppressed: u64) {
    tracing::warn!(
        peer = peer.map(tracing::field::display),
        source,
        suppressed,
        "sotto: acceptor full (max_sessions sessions live, none detached): refusing a new session"
    );
}
