//! Export and import of a session at rest (docs/state-format.md): the conduit's sections,
//! then `SESSION`, `CONNS` and `QUEUES`.

use alloc::vec::Vec;

use super::conn_table::{Conn, ConnState};
use super::{Parity, Phase, Session, SessionConfig, ROOT};
use crate::conduit::{Conduit, Role};
use crate::state::{check_limit, invalid, tag, ExportError, ImportError, Reader, StateKind, Writer};
use crate::time::{Duration, Instant};

/// Bytes of one connection in the `CONNS` section.
const CONN_LEN: usize = 4 + 1 + 1 + 8 * 4;

impl Session {
    /// Freeze the session for a handoff (see [`Conduit::freeze`]): every command that queues
    /// an item (a send, an open, an answer, a close of a connection) fails with
    /// [`CommandError::WouldBlock`](super::CommandError::WouldBlock) and changes nothing
    /// until [`thaw`](Self::thaw). Its owner stops feeding it input meanwhile, exports it,
    /// and either drops it (taken over) or thaws it and wakes the blocked senders.
    pub fn freeze(&mut self) {
        self.conduit.freeze();
    }

    /// Undo [`freeze`](Self::freeze).
    pub fn thaw(&mut self) {
        self.conduit.thaw();
    }

    /// Whether connection `conn` is in the session's table (in any state).
    #[must_use]
    pub fn has_connection(&self, conn: super::ConnId) -> bool {
        self.conns.get(conn).is_some()
    }

    /// Credit of what the peer sent on `conn` that the application has not
    /// [`release`](Self::release)d yet (received, not consumed; 0 for an unknown
    /// connection). An importer calls it on an imported session to give back the credit of
    /// messages the exporting application had taken but not released: they stay with that
    /// application, so nobody here would release them, and the peer's window would shrink
    /// by that much for good.
    #[must_use]
    pub fn unreleased_credit(&self, conn: super::ConnId) -> u64 {
        let initial = u64::from(self.config.initial_credit);
        self.conns.get(conn).map_or(0, |c| initial.saturating_sub(c.recv_window).saturating_sub(c.pending_grant))
    }

    /// Write this session's state at rest to the end of `out`, to be
    /// [`import`](Self::import)ed by another process: the conduit's state (see
    /// [`Conduit::export`]: keys, positions, the replay ring, the recovery deadline as a
    /// duration from `now`), the handshake phase, every connection with its state and credit
    /// both ways, the next connection ids, our hello metadata, owed rejects, grants and
    /// events. Call after draining every output.
    ///
    /// As for a conduit, the link is not exported (the state is the session's as if its link
    /// had just gone down) and `self` is not changed: after a successful export give it no
    /// input and no command until the handoff is settled, then either drop it (the importer
    /// took over; never run both) or carry on with it (the importer refused). Counters are
    /// not exported. A session that is over or failing cannot be exported.
    pub fn export(&self, now: Instant, out: &mut Vec<u8>) -> Result<(), ExportError> {
        self.conduit.check_exportable()?;
        if self.phase == Phase::Failed || self.failure.is_some() {
            return Err(ExportError::Ended);
        }
        let now = now.max(self.conduit.clock.get());
        let (mut w, start) = Writer::begin(out, StateKind::Session);
        self.conduit.export_sections(now, &mut w);
        w.section(tag::SESSION, |w| {
            w.u8(match self.phase {
                Phase::AwaitHelloYourself => 1,
                Phase::AwaitHello => 2,
                Phase::AwaitLetsGo => 3,
                Phase::Ready | Phase::Failed => 4,
            });
            // 0: a version-1 peer, 1: version 2 (batches), 2: version 3 (batches and Fin).
            w.u8(u8::from(self.peer_batches) + u8::from(self.peer_half_close));
            w.bool(self.ready_event);
            w.bool(self.grants_owed);
            w.u64(self.next_local_id);
            w.u32(self.highest_peer_id);
            w.u64(now.saturating_duration_since(self.churn_window_start).as_nanos());
            w.u32(self.churn_count);
            w.u32(self.hello_metadata.len() as u32);
            w.bytes(&self.hello_metadata);
        });
        // By id: the bytes do not depend on where the table keeps each connection.
        let mut conns: Vec<Conn> = self.conns.iter().copied().collect();
        conns.sort_unstable_by_key(|c| c.id);
        w.section(tag::CONNS, |w| {
            w.u32(conns.len() as u32);
            for c in &conns {
                w.u32(c.id);
                w.u8(match c.state {
                    ConnState::OpeningOut => 0,
                    ConnState::PendingIn => 1,
                    ConnState::Open => 2,
                    ConnState::SentFin => 3,
                    ConnState::GotFin => 4,
                });
                w.bool(c.want_writable);
                w.u64(c.send_credit);
                w.u64(c.recv_window);
                w.u64(c.pending_grant);
                w.u64(c.peer_window);
            }
        });
        w.section(tag::QUEUES, |w| {
            w.u32(self.owed_rejects.len() as u32);
            for &(conn, code) in &self.owed_rejects {
                w.u32(conn);
                w.u32(code);
            }
            w.u32(self.writable_len as u32);
            for i in 0..self.writable_len {
                w.u32(self.writable[(self.writable_head + i) % self.writable.len()]);
            }
        });
        w.finish(start);
        Ok(())
    }

    /// Build a session from a state written by [`export`](Self::export), under this side's
    /// own `config`, which must hold the state (ring, item sizes, connections, pending opens,
    /// credit windows, metadata, the recovery deadline); `now` is this side's clock. The
    /// session is detached: an initiator calls [`link_up`](Self::link_up) and resumes, an
    /// acceptor waits for the peer's resume. Connections, credit and the handshake phase
    /// carry on from where the exporter left them; events it owed (`Ready`,
    /// `ConnWritable`) are reported by this one.
    ///
    /// Hostile, truncated or newer bytes get an [`ImportError`], never a panic; nothing is
    /// allocated beyond what `config` allows.
    pub fn import(bytes: &[u8], now: Instant, config: SessionConfig) -> Result<Self, ImportError> {
        config.validate()?;
        let mut r = Reader::open(bytes, StateKind::Session)?;
        let conduit = Conduit::import_sections(&mut r, now, config.conduit)?;
        let now = conduit.clock.get();
        let role = conduit.role();
        let parity = match role {
            Role::Initiator => Parity::Odd,
            Role::Acceptor => Parity::Even,
        };

        let mut s = r.section(tag::SESSION)?;
        let phase = match (s.u8()?, role) {
            (1, Role::Initiator) => Phase::AwaitHelloYourself,
            (2, Role::Acceptor) => Phase::AwaitHello,
            (3, Role::Acceptor) => Phase::AwaitLetsGo,
            (4, _) => Phase::Ready,
            _ => return Err(invalid("session phase")),
        };
        // The peer's features (formerly a bool for batches): 0 none, 1 batches, 2 batches and Fin.
        let (peer_batches, peer_half_close) = match s.u8()? {
            0 => (false, false),
            1 => (true, false),
            2 => (true, true),
            _ => return Err(invalid("peer_batches")),
        };
        let ready_event = s.bool("ready_event")?;
        let grants_owed = s.bool("grants_owed")?;
        let next_local_id = s.u64()?;
        let highest_peer_id = s.u32()?;
        let churn_since = Duration::from_nanos(s.u64()?);
        let churn_count = s.u32()?;
        let metadata_len = s.u32()?;
        check_limit("max_metadata", u64::from(metadata_len), u64::from(config.max_metadata))?;
        // The exporter's hello goes in an item of its own.
        check_limit("max_item_len (hello)", u64::from(metadata_len) + 32, u64::from(config.conduit.max_item_len()))?;
        let metadata = s.take(metadata_len as usize)?;
        s.end(tag::SESSION)?;

        let first_id = match parity {
            Parity::Odd => 1,
            Parity::Even => 2,
        };
        if next_local_id < first_id
            || next_local_id > u64::from(u32::MAX) + 2
            || (next_local_id % 2 == 1) != (parity == Parity::Odd)
        {
            return Err(invalid("next connection id"));
        }
        if highest_peer_id != 0 && !parity.other().owns(highest_peer_id) {
            return Err(invalid("highest peer connection id"));
        }
        if ready_event && phase != Phase::Ready {
            return Err(invalid("ready event before the handshake"));
        }
        check_limit("churn_budget", u64::from(churn_count), u64::from(config.churn_budget))?;

        let mut session = Self::new(role, config, metadata)?;
        session.conduit = conduit;
        session.phase = phase;
        session.peer_batches = peer_batches;
        session.peer_half_close = peer_half_close;
        session.ready_event = ready_event;
        session.grants_owed = grants_owed;
        session.next_local_id = next_local_id;
        session.highest_peer_id = highest_peer_id;
        session.churn_window_start = Instant::from_nanos(now.as_nanos().saturating_sub(churn_since.as_nanos()));
        session.churn_count = churn_count;
        session.conns.clear();
        read_conns(&mut r, &mut session)?;
        read_queues(&mut r, &mut session)?;
        r.end_of_state()?;
        Ok(session)
    }

    /// Whether connection `id` can exist in state `state` (ours below the next id, the
    /// peer's at or below the highest it opened).
    fn conn_id_fits(&self, id: u32, state: ConnState) -> bool {
        if id == ROOT {
            return state == ConnState::Open;
        }
        if self.parity.owns(id) {
            state != ConnState::PendingIn && u64::from(id) < self.next_local_id
        } else {
            state != ConnState::OpeningOut && id <= self.highest_peer_id
        }
    }
}

/// Read the `CONNS` section into `s`'s empty table.
fn read_conns(r: &mut Reader<'_>, s: &mut Session) -> Result<(), ImportError> {
    let mut sec = r.section(tag::CONNS)?;
    let count = sec.u32()?;
    // Root plus the connections this side allows.
    check_limit("max_connections", u64::from(count.saturating_sub(1)), s.conns.capacity() as u64 - 1)?;
    if sec.remaining() != count as usize * CONN_LEN {
        return Err(if sec.remaining() < count as usize * CONN_LEN {
            ImportError::Truncated
        } else {
            ImportError::TrailingBytes { section: tag::CONNS }
        });
    }
    let initial = u64::from(s.config.initial_credit);
    let max_credit = u64::from(s.config.max_credit);
    let mut previous: Option<u32> = None;
    let mut pending_in = 0u32;
    for i in 0..count {
        let id = sec.u32()?;
        let state = match sec.u8()? {
            0 => ConnState::OpeningOut,
            1 => ConnState::PendingIn,
            2 => ConnState::Open,
            3 if s.peer_half_close => ConnState::SentFin,
            4 if s.peer_half_close => ConnState::GotFin,
            _ => return Err(invalid("connection state")),
        };
        let want_writable = sec.bool("connection want_writable")?;
        let send_credit = sec.u64()?;
        let recv_window = sec.u64()?;
        let pending_grant = sec.u64()?;
        let peer_window = sec.u64()?;
        if (i == 0) != (id == ROOT) || previous.is_some_and(|p| p >= id) {
            return Err(invalid("connection ids (root first, then increasing)"));
        }
        previous = Some(id);
        if !s.conn_id_fits(id, state) || (id != ROOT && s.phase != Phase::Ready) {
            return Err(invalid("connection id"));
        }
        check_limit("initial_credit (receive window)", recv_window.saturating_add(pending_grant), initial)?;
        check_limit("max_credit (peer window)", peer_window, max_credit)?;
        if state == ConnState::PendingIn {
            pending_in += 1;
        }
        let conn = Conn { id, state, send_credit, recv_window, pending_grant, want_writable, peer_window };
        if !s.conns.insert(conn) {
            return Err(invalid("connection table"));
        }
    }
    if count == 0 {
        return Err(invalid("root connection missing"));
    }
    check_limit("max_pending_opens", u64::from(pending_in), u64::from(s.config.max_pending_opens))?;
    s.pending_in = pending_in;
    sec.end(tag::CONNS)
}

/// Read the `QUEUES` section: owed rejects, then owed `ConnWritable`s.
fn read_queues(r: &mut Reader<'_>, s: &mut Session) -> Result<(), ImportError> {
    let mut sec = r.section(tag::QUEUES)?;
    let rejects = sec.u32()?;
    check_limit("max_pending_opens (owed rejects)", u64::from(rejects), u64::from(s.config.max_pending_opens) + 1)?;
    for _ in 0..rejects {
        let conn = sec.u32()?;
        let code = sec.u32()?;
        // A refused Open of the peer's: never in the table.
        if !s.parity.other().owns(conn) || conn > s.highest_peer_id || s.conns.get(conn).is_some() {
            return Err(invalid("owed reject"));
        }
        s.owed_rejects.push((conn, code));
    }
    let writable = sec.u32()?;
    check_limit("max_connections (owed writable)", u64::from(writable), s.conns.capacity() as u64)?;
    for _ in 0..writable {
        let conn = sec.u32()?;
        if s.conns.get(conn).is_none() {
            return Err(invalid("owed writable"));
        }
        s.queue_writable(conn);
    }
    if s.writable_len != writable as usize {
        return Err(invalid("owed writable"));
    }
    sec.end(tag::QUEUES)
}
