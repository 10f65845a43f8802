//! Sessions that move between acceptors (issue 17, docs/handoff.md): freezing one of this
//! acceptor's sessions and exporting it with what the driver holds for its application
//! ([`freeze`]), settling the handoff ([`Frozen::complete`], [`Frozen::abort`]), and adopting a
//! session another acceptor exported ([`adopt`]).
//!
//! What moves besides the core's state (the *application section*): every connection's
//! delivered messages not yet taken by its reader, its phase, the peer's metadata, the end
//! of stream or close the peer sent, our own close or Fin, and the peer's Opens not yet
//! accepted. What the application already took (a reader's local queue, a message being
//! processed) stays with the old process's application: the library hands over exactly
//! what it still holds.

use std::collections::VecDeque;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use bytes::Bytes;
use sotto_proto::endpoint::AdoptError;
use sotto_proto::handoff::Refusal;
use sotto_proto::session::{ConnId, Session};
use sotto_proto::state::{ExportError, ImportError};
use sotto_proto::{Instant, SessionEnd};

use super::conn::Connection;
use super::handle::SessionHandle;
use super::home::{Home, OwnHome, Owned};
use super::inbox::Inbox;
use super::state::{ConnSlot, Phase, SessState};
use crate::config::Config;
use crate::router::{EpShared, Member};
use crate::shared::ConduitEvent;

/// Version of the application section's layout.
const APP_VERSION: u8 = 1;
/// Longest first-link address (a socket address's text, a Unix path) in the section.
const MAX_ADDR: usize = 4096;
/// Longest first-link identity in the section.
const MAX_IDENTITY: usize = 64 << 10;

/// What was taken out of a frozen session's application state, to put back if the handoff
/// fails.
struct Taken {
    /// By connection: its queued messages, and the peer's Fin and close.
    conns: Vec<(ConnId, Vec<Bytes>, bool, Option<Bytes>)>,
    incoming: VecDeque<(ConnId, Bytes)>,
}

/// A session frozen for a handoff: nothing changes it until [`complete`](Self::complete) or
/// [`abort`](Self::abort) (dropping it aborts).
pub(crate) struct Frozen {
    home: Option<Arc<OwnHome>>,
    taken: Option<Taken>,
}

/// What [`freeze`] made of a session.
pub(crate) enum Freeze {
    /// Frozen and exported.
    Frozen(Frozen),
    /// Not at rest now (core events not read yet): try again after its driver ran.
    NotNow,
    /// Not to be handed off (ended, closing, in its handshake, commands owed): stays here.
    Skip(&'static str),
}

/// Every live session of the acceptor (not freed).
pub(crate) fn members(ep: &EpShared) -> Vec<Arc<OwnHome>> {
    ep.owners().into_iter().filter_map(|o| o.as_any().downcast::<OwnHome>().ok()).collect()
}

/// Freeze `home`'s session and write its core state to `state` and its application section
/// to `app` (both cleared first).
pub(crate) fn freeze(home: &Arc<OwnHome>, now: Instant, state: &mut Vec<u8>, app: &mut Vec<u8>) -> Freeze {
    state.clear();
    app.clear();
    let mut g = home.lock();
    let Owned { session, state: st, member } = &mut *g;
    if member.is_none() || session.is_ended() {
        return Freeze::Skip("ended");
    }
    if !st.ready || !session.is_ready() {
        return Freeze::Skip("in its session handshake");
    }
    if st.pending_close.is_some() {
        return Freeze::Skip("closing");
    }
    if !st.owed.is_empty() {
        return Freeze::Skip("commands owed to the core");
    }
    session.freeze();
    let exported = session.export(now, state);
    if exported.is_err() {
        // Its driver (or a sender) may have seen it frozen meanwhile: wake them.
        session.thaw();
        st.wake_all();
        st.common.wake_driver();
    }
    match exported {
        Ok(()) => {}
        Err(ExportError::EventsPending) => return Freeze::NotNow,
        Err(_) => return Freeze::Skip("not exportable"),
    }
    let taken = take_app(st);
    write_app(st, &taken, app);
    Freeze::Frozen(Frozen { home: Some(Arc::clone(home)), taken: Some(taken) })
}

impl Frozen {
    /// The receiver took the session: end it here ([`SessionEnd::HandedOff`]) without a
    /// GOODBYE, release its keys, and let its driver exit at once, closing the link (the peer
    /// resumes at the receiver).
    pub(crate) fn complete(mut self, now: Instant) {
        let Some(home) = self.home.take() else { return };
        self.taken = None;
        let mut g = home.lock();
        let Owned { session, state, member } = &mut *g;
        session.conduit_end(now, SessionEnd::HandedOff);
        session.thaw();
        if let Some(m) = member.as_mut() {
            m.give_up(true);
        }
        state.common.push_event(ConduitEvent::Ended(SessionEnd::HandedOff));
        state.common.exit_now = true;
        state.wake_all();
        state.common.wake_driver();
    }

    /// The handoff failed: put back what was taken, thaw the session and wake everyone who
    /// waited on it; it carries on here. With `close`, close it instead (GOODBYE with that
    /// code and reason: the acceptor is shutting down).
    pub(crate) fn abort(mut self, now: Instant, close: Option<(u32, &str)>) {
        let Some(home) = self.home.take() else { return };
        let mut g = home.lock();
        let Owned { session, state, .. } = &mut *g;
        if let Some(taken) = self.taken.take() {
            restore_app(state, taken);
        }
        session.thaw();
        if let Some((code, reason)) = close {
            session.close(now, code, reason);
        }
        state.wake_all();
        state.common.wake_driver();
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Some(home) = self.home.clone() {
            let now = home.clock.now();
            Frozen { home: Some(home), taken: self.taken.take() }.abort(now, None);
            self.home = None;
        }
    }
}

/// Take what the application has not read yet out of `st` (the readers then wait).
fn take_app(st: &mut SessState) -> Taken {
    let mut conns = Vec::with_capacity(st.conns.len());
    for (id, slot) in &mut st.conns {
        let mut queue = std::mem::take(&mut slot.queue);
        let mut messages = Vec::with_capacity(queue.messages());
        while let Some(m) = queue.pop() {
            messages.push(m);
        }
        conns.push((*id, messages, std::mem::take(&mut slot.peer_finished), slot.peer_closed.take()));
    }
    conns.sort_unstable_by_key(|c| c.0);
    Taken { conns, incoming: std::mem::take(&mut st.incoming) }
}

fn restore_app(st: &mut SessState, taken: Taken) {
    for (id, messages, finished, closed) in taken.conns {
        let Some(slot) = st.conns.get_mut(&id) else { continue };
        let mut queue = Inbox::default();
        for m in messages {
            queue.push_one(m);
        }
        slot.queue = queue;
        slot.peer_finished |= finished;
        if slot.peer_closed.is_none() {
            slot.peer_closed = closed;
        }
    }
    let mut incoming = taken.incoming;
    incoming.append(&mut st.incoming);
    st.incoming = incoming;
}

/// The application section (see the module docs; layout in docs/handoff.md).
fn write_app(st: &SessState, taken: &Taken, out: &mut Vec<u8>) {
    fn bytes(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    }
    out.push(APP_VERSION);
    match &st.peer_metadata {
        Some(md) => {
            out.push(1);
            bytes(out, md);
        }
        None => out.push(0),
    }
    // The first link's peer, which a resume binding compares later links with.
    match &st.common.first_link {
        Some(first) => {
            out.push(1);
            match &first.peer_addr {
                None => out.push(0),
                Some(crate::runtime::PeerAddr::Tcp(a)) => {
                    out.push(1);
                    bytes(out, a.to_string().as_bytes());
                }
                Some(crate::runtime::PeerAddr::Unix(None)) => out.push(3),
                Some(crate::runtime::PeerAddr::Unix(Some(p))) => {
                    out.push(2);
                    bytes(out, std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()));
                }
            }
            match &first.identity {
                Some(id) => {
                    out.push(1);
                    bytes(out, id.as_bytes());
                }
                None => out.push(0),
            }
        }
        None => out.push(0),
    }
    out.extend_from_slice(&(taken.incoming.len() as u32).to_le_bytes());
    for (id, md) in &taken.incoming {
        out.extend_from_slice(&id.to_le_bytes());
        bytes(out, md);
    }
    out.extend_from_slice(&(taken.conns.len() as u32).to_le_bytes());
    for (id, messages, finished, closed) in &taken.conns {
        let Some(slot) = st.conns.get(id) else { continue };
        out.extend_from_slice(&id.to_le_bytes());
        match &slot.phase {
            Phase::Opening => out.push(0),
            Phase::Open => out.push(1),
            Phase::Rejected { code, metadata } => {
                out.push(2);
                out.extend_from_slice(&code.to_le_bytes());
                bytes(out, metadata);
            }
        }
        bytes(out, &slot.metadata);
        let flags = u8::from(*finished)
            | u8::from(slot.local_closed) << 1
            | u8::from(slot.local_finished) << 2
            | u8::from(slot.abandoned) << 3
            | u8::from(slot.discard) << 4
            | u8::from(closed.is_some()) << 5;
        out.push(flags);
        if let Some(md) = closed {
            bytes(out, md);
        }
        out.extend_from_slice(&(messages.len() as u32).to_le_bytes());
        for m in messages {
            bytes(out, m);
        }
    }
}

/// Why an offered session was not adopted: the refusal to send back, and a reason.
pub(crate) type Refused = (Refusal, String);

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Refused> {
        if self.0.len() < n {
            return Err(bad("application section truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, Refused> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, Refused> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A length-prefixed byte string of at most `max` bytes.
    fn bytes(&mut self, max: usize, what: &str) -> Result<Bytes, Refused> {
        let len = self.u32()? as usize;
        if len > max {
            return Err((Refusal::OverLimit, format!("{what}: {len} bytes, more than {max}")));
        }
        Ok(Bytes::copy_from_slice(self.take(len)?))
    }
}

fn bad(what: &str) -> Refused {
    (Refusal::BadState, what.to_owned())
}

/// Rebuild the application state of `session` from its section, under this side's limits.
/// The driver's state of an imported session, and per connection the credit of the messages
/// that moved with it (delivered here, not read yet).
fn read_app(session: &Session, app: &[u8], config: &Config) -> Result<(SessState, Vec<(ConnId, u64)>), Refused> {
    let sc = session.config();
    let max_md = sc.max_metadata as usize;
    // What the peer may have sent on one connection and we had not read: its window.
    let max_queued = u64::from(sc.initial_credit.max(sc.max_credit)) as usize;
    let mut r = Reader(app);
    let version = r.u8()?;
    if version != APP_VERSION {
        return Err((Refusal::UnsupportedState, format!("application section version {version}")));
    }
    let mut st = SessState::new(config);
    st.ready = true;
    st.peer_metadata = match r.u8()? {
        0 => None,
        1 => Some(r.bytes(max_md, "peer metadata")?),
        _ => return Err(bad("peer metadata flag")),
    };
    st.common.first_link = match r.u8()? {
        0 => None,
        1 => {
            let addr = match r.u8()? {
                0 => None,
                1 => {
                    let s = r.bytes(MAX_ADDR, "first link address")?;
                    let a = std::str::from_utf8(&s).ok().and_then(|s| s.parse().ok());
                    Some(crate::runtime::PeerAddr::Tcp(a.ok_or_else(|| bad("first link address"))?))
                }
                2 => {
                    let p = r.bytes(MAX_ADDR, "first link path")?;
                    let p = std::ffi::OsStr::from_bytes(&p);
                    Some(crate::runtime::PeerAddr::Unix(Some(std::path::PathBuf::from(p))))
                }
                3 => Some(crate::runtime::PeerAddr::Unix(None)),
                _ => return Err(bad("first link address kind")),
            };
            let identity = match r.u8()? {
                0 => None,
                1 => Some(crate::link_hook::PeerIdentity::new(r.bytes(MAX_IDENTITY, "first link identity")?)),
                _ => return Err(bad("first link identity flag")),
            };
            Some(crate::link_hook::LinkInfo::new(addr, identity))
        }
        _ => return Err(bad("first link flag")),
    };
    let incoming = r.u32()? as usize;
    if incoming > sc.max_pending_opens as usize {
        return Err((Refusal::OverLimit, format!("{incoming} pending opens")));
    }
    for _ in 0..incoming {
        let id = r.u32()?;
        if !session.has_connection(id) || session.is_open(id) {
            return Err(bad("a pending open the session does not hold"));
        }
        let md = r.bytes(max_md, "open metadata")?;
        st.incoming.push_back((id, md));
    }
    // Besides the session's connections, the section may hold connections the session is
    // done with whose end the application has not read yet (the peer closed one with
    // messages unread, rejected our Open, ...): at most one per connection the session
    // allows, as a bound.
    let conns = r.u32()? as usize;
    if conns > session.connection_count() + sc.max_connections as usize {
        return Err(bad("more connections than the session holds"));
    }
    let mut last = None;
    let mut queued = Vec::with_capacity(conns);
    for _ in 0..conns {
        let id = r.u32()?;
        if last.is_some_and(|l| id <= l) {
            return Err(bad("connection ids"));
        }
        last = Some(id);
        let held = session.has_connection(id);
        let phase = match r.u8()? {
            0 => Phase::Opening,
            1 => Phase::Open,
            2 => {
                let code = r.u32()?;
                Phase::Rejected { code, metadata: r.bytes(max_md, "reject metadata")? }
            }
            _ => return Err(bad("connection phase")),
        };
        let opening = phase == Phase::Opening;
        let mut slot = ConnSlot::new(phase, r.bytes(max_md, "connection metadata")?);
        let flags = r.u8()?;
        if flags & 0xc0 != 0 {
            return Err(bad("connection flags"));
        }
        slot.peer_finished = flags & 1 != 0;
        slot.local_closed = flags & 2 != 0;
        slot.local_finished = flags & 4 != 0;
        // Nobody here waits for the answer to an Open the old process made: closed once
        // answered.
        slot.abandoned = flags & 8 != 0 || opening;
        slot.discard = flags & 16 != 0;
        if flags & 32 != 0 {
            slot.peer_closed = Some(r.bytes(max_md, "close metadata")?);
        }
        // One the session no longer holds must be over (only its end is left to read).
        let over = matches!(slot.phase, Phase::Rejected { .. })
            || slot.local_closed
            || slot.peer_closed.is_some()
            || (slot.local_finished && slot.peer_finished);
        if !held && !over {
            return Err(bad("connection ids"));
        }
        let count = r.u32()? as usize;
        let mut total = 0usize;
        let mut credit = 0u64;
        for _ in 0..count {
            let m = r.bytes(max_queued - total, "queued messages")?;
            total += m.len();
            credit = credit.saturating_add(session.credit_of(m.len()));
            slot.queue.push_one(m);
            if slot.queue.messages() > max_queued.max(1) {
                return Err((Refusal::OverLimit, "queued messages".to_owned()));
            }
        }
        if slot.queue.entries() >= st.tuning.conn_items {
            slot.full = true;
            st.full_conns += 1;
        }
        if slot.phase == Phase::Open && !slot.abandoned {
            st.adopted.push(id);
        }
        st.conns.insert(id, slot);
        queued.push((id, credit));
    }
    if !r.0.is_empty() {
        return Err(bad("bytes after the application section"));
    }
    Ok((st, queued))
}

/// The refusal an import error calls for.
pub(crate) fn refusal_of(e: &ImportError) -> Refusal {
    match e {
        ImportError::UnsupportedVersion { .. } => Refusal::UnsupportedState,
        ImportError::OverLimit { .. } | ImportError::Config(_) => Refusal::OverLimit,
        _ => Refusal::BadState,
    }
}

/// Import an offered session under `config` and adopt it into `ep`: its keys route here
/// from now on, it waits detached for its peer's resume. Returns its home, for a driver to
/// be started on it.
pub(crate) fn adopt(ep: &Arc<EpShared>, state: &[u8], app: &[u8], config: &Config) -> Result<Home, Refused> {
    let now = ep.clock.now();
    let mut session =
        Session::import(state, now, config.session_config()).map_err(|e| (refusal_of(&e), e.to_string()))?;
    if !session.is_ready() {
        return Err(bad("a session in its handshake"));
    }
    let (st, queued) = read_app(&session, app, config)?;
    // Messages the old application had taken from a connection (its reader's local queue,
    // credit it had not released yet) stay with it: their credit goes back to the peer from
    // here, or its window would shrink by that much with every handoff until it stalls.
    for (id, queued_credit) in queued {
        let held = session.unreleased_credit(id).saturating_sub(queued_credit);
        if held > 0 {
            let _ = session.release(id, usize::try_from(held).unwrap_or(usize::MAX));
        }
    }
    let mut g = ep.lock();
    if g.shutting_down() {
        return Err((Refusal::NotAccepting, "shutting down".to_owned()));
    }
    let handle = g.endpoint.adopt(now, session.conduit()).map_err(|e| {
        let r = match e {
            AdoptError::Full => Refusal::Full,
            AdoptError::KeyInUse => Refusal::KeyInUse,
            AdoptError::NotRoutedHere => Refusal::Issuer,
            _ => Refusal::BadState,
        };
        (r, e.to_string())
    })?;
    drop(g);
    // Its keys route here from now on; nothing resumes it before the sender has our ACK
    // (the peer's link is still with the sender), by which time its owner is registered.
    let member = Member::adopted(ep, handle);
    let home = Home::with_clock(session, st, Some(member), ep.clock.clone());
    ep.register(handle, &home.owner());
    Ok(home)
}

impl SessionHandle {
    /// A session this acceptor adopted from another process (see
    /// [`SessionAcceptor::receive_handoff`](crate::SessionAcceptor::receive_handoff)): its
    /// connections that were open there, each once (later calls return the rest, none).
    /// Messages the old process had received but its application had not read yet come
    /// first. For any other session: empty.
    #[must_use]
    pub fn adopted_connections(&self) -> Vec<Connection> {
        let home = self.home();
        let (ids, release_at) = {
            let mut l = home.lock();
            let (s, st) = l.parts();
            let release_at = (s.config().initial_credit as usize / 4).max(1);
            let ids: Vec<(ConnId, Bytes)> = std::mem::take(&mut st.adopted)
                .into_iter()
                .filter_map(|id| st.conns.get(&id).map(|c| (id, c.metadata.clone())))
                .collect();
            (ids, release_at)
        };
        ids.into_iter().map(|(id, md)| Connection::new(home.clone(), id, md, release_at)).collect()
    }
}

/// Give up a session adopted here that its sender revoked (or whose ACK could not be sent):
/// its keys stop routing here and it ends ([`SessionEnd::Evicted`]); the sender keeps it.
pub(crate) fn revoke(home: &Home) {
    let now = home.clock().now();
    let mut g = home.0.lock();
    let Owned { session, state, member } = &mut *g;
    if let Some(m) = member.as_mut() {
        m.give_up(false);
    }
    if !session.is_ended() {
        session.conduit_end(now, SessionEnd::Evicted);
    }
    state.wake_all();
    state.common.wake_driver();
}

/// Close a session that stays here while its acceptor goes (GOODBYE `code`, `reason`).
pub(crate) fn close(home: &Arc<OwnHome>, code: u32, reason: &str) {
    let now = home.clock.now();
    let mut g = home.lock();
    let Owned { session, state, .. } = &mut *g;
    if !session.is_ended() {
        session.close(now, code, reason);
    }
    state.common.wake_driver();
}
