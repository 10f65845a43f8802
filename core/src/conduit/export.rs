//! Export and import of a conduit at rest (docs/state-format.md): the sections `CONDUIT`
//! and `RING`, shared with the session's state.

use alloc::vec::Vec;

use super::{Conduit, ConduitConfig, Event, Reason, Role, MAX_GOODBYE_REASON};
use crate::state::{check_limit, invalid, tag, ExportError, ImportError, Reader, StateKind, Writer, MAX_COUNTER};
use crate::time::{Duration, Instant};
use crate::timer::Timer;
use crate::wire::ResumeKey;

const F_EVER_ATTACHED: u8 = 1 << 0;
const F_PEER_CONFIRMED: u8 = 1 << 1;
const F_WANT_WRITABLE: u8 = 1 << 2;
const F_STARVED_CYCLE: u8 = 1 << 3;
const F_HAS_KEY: u8 = 1 << 4;
const F_HAS_PREVIOUS_KEY: u8 = 1 << 5;
const F_CLOSING: u8 = 1 << 6;
const F_KNOWN: u8 = (1 << 7) - 1;

impl Conduit {
    /// Write this conduit's state at rest to the end of `out`, to be
    /// [`import`](Self::import)ed by another process (or later by this one): keys, role,
    /// sequence and ack positions, the replay ring's unacked items, the close in progress,
    /// and the recovery deadline as a duration from `now`. Call after draining every output
    /// (`poll_transmit`, `poll_event`).
    ///
    /// The link is not exported: the state is this conduit's as if its current link had
    /// just gone down ([`link_down`](Self::link_down)), so the peer resumes to the importer
    /// with the key it holds. `self` is not changed. **After a successful export, give this
    /// conduit no input and no command** until the handoff is settled: if the importer took
    /// the state, drop this conduit and its link (never run both); if it refused, carry on
    /// with this one as if nothing happened (its link, if any, still works). Anything this
    /// conduit did in between (an item delivered or sent, an ack) would be duplicated or
    /// lost by the importer.
    ///
    /// Counters ([`stats`](Self::stats)) are not exported: the importer's start at zero.
    pub fn export(&self, now: Instant, out: &mut Vec<u8>) -> Result<(), ExportError> {
        self.check_exportable()?;
        let (mut w, start) = Writer::begin(out, StateKind::Conduit);
        self.export_sections(now, &mut w);
        w.finish(start);
        Ok(())
    }

    /// Build a conduit from a state written by [`export`](Self::export), under this side's
    /// own `config` (which need not equal the exporter's, but must hold the state: ring
    /// bytes and frames, item sizes, the recovery deadline). The conduit is detached, with
    /// the exported role and positions; `now` is this side's clock, from which the exported
    /// recovery deadline runs again. Attach a link as usual: an initiator calls
    /// [`link_up`](Self::link_up) and resumes; an acceptor waits for the peer's resume.
    ///
    /// Hostile, truncated or newer bytes get an [`ImportError`], never a panic; nothing is
    /// allocated beyond what `config` allows.
    pub fn import(bytes: &[u8], now: Instant, config: ConduitConfig) -> Result<Self, ImportError> {
        let mut r = Reader::open(bytes, StateKind::Conduit)?;
        let c = Self::import_sections(&mut r, now, config)?;
        r.end_of_state()?;
        Ok(c)
    }

    /// Refuse states that cannot be continued, or that still owe the driver events.
    pub(crate) fn check_exportable(&self) -> Result<(), ExportError> {
        if self.ended.is_some() {
            return Err(ExportError::Ended);
        }
        if self.events.iter().any(|e| !matches!(e, Event::DropLink { .. } | Event::Attached { .. })) {
            return Err(ExportError::EventsPending);
        }
        Ok(())
    }

    /// Write the `CONDUIT` and `RING` sections.
    pub(crate) fn export_sections(&self, now: Instant, w: &mut Writer<'_>) {
        let now = now.max(self.clock.get());
        let mut flags = 0;
        for (set, bit) in [
            (self.ever_attached, F_EVER_ATTACHED),
            (self.peer_confirmed, F_PEER_CONFIRMED),
            (self.want_writable, F_WANT_WRITABLE),
            (self.starved_cycle, F_STARVED_CYCLE),
            (self.key.is_some(), F_HAS_KEY),
            (self.previous_key.is_some(), F_HAS_PREVIOUS_KEY),
            (self.closing.is_some(), F_CLOSING),
        ] {
            if set {
                flags |= bit;
            }
        }
        // As after `link_down`: a session that has attached is detached from now at the
        // latest, with its recovery deadline running.
        let (detached_for, recovery_in) = if self.ever_attached {
            let since = self.detached_since.unwrap_or(now);
            let deadline =
                self.timers.get(Timer::Recovery).unwrap_or_else(|| now.saturating_add(self.config.recovery_timeout));
            (now.saturating_duration_since(since), deadline.saturating_duration_since(now))
        } else {
            (Duration::ZERO, Duration::ZERO)
        };
        w.section(tag::CONDUIT, |w| {
            w.u8(match self.role {
                Role::Initiator => 0,
                Role::Acceptor => 1,
            });
            w.u8(flags);
            w.u64(self.sent);
            w.u64(self.acked);
            w.u64(self.tx_high);
            w.u64(self.received);
            w.u64(self.ping_nonce);
            w.bytes(&self.key.unwrap_or(ResumeKey::ZERO).0);
            w.bytes(&self.previous_key.unwrap_or(ResumeKey::ZERO).0);
            w.u64(detached_for.as_nanos());
            w.u64(recovery_in.as_nanos());
            let (code, text) = self.closing.as_ref().map_or((0, ""), |r| (r.code, r.text()));
            w.u32(code);
            w.u8(text.len() as u8);
            w.bytes(text.as_bytes());
        });
        w.section(tag::RING, |w| {
            w.u64(self.acked);
            w.u32((self.sent - self.acked) as u32);
            for seq in self.acked..self.sent {
                let (a, b) = self.ring.get(seq).unwrap_or((&[], &[]));
                w.u32((a.len() + b.len()) as u32);
                w.bytes(a);
                w.bytes(b);
            }
        });
    }

    /// Read the `CONDUIT` and `RING` sections into a new conduit under `config`.
    pub(crate) fn import_sections(
        r: &mut Reader<'_>,
        now: Instant,
        config: ConduitConfig,
    ) -> Result<Self, ImportError> {
        config.validate()?;
        let mut s = r.section(tag::CONDUIT)?;
        let role = match s.u8()? {
            0 => Role::Initiator,
            1 => Role::Acceptor,
            _ => return Err(invalid("role")),
        };
        let flags = s.u8()?;
        if flags & !F_KNOWN != 0 {
            return Err(invalid("conduit flags"));
        }
        let has = |bit: u8| flags & bit != 0;
        let sent = s.u64()?;
        let acked = s.u64()?;
        let tx_high = s.u64()?;
        let received = s.u64()?;
        let ping_nonce = s.u64()?;
        let key = ResumeKey(s.array16()?);
        let previous_key = ResumeKey(s.array16()?);
        let detached_for = Duration::from_nanos(s.u64()?);
        let recovery_in = Duration::from_nanos(s.u64()?);
        let closing_code = s.u32()?;
        let closing_len = s.u8()? as usize;
        let closing_text = s.take(closing_len)?;
        s.end(tag::CONDUIT)?;

        if sent > MAX_COUNTER || received > MAX_COUNTER {
            return Err(invalid("sequence position"));
        }
        if acked > sent || tx_high > sent {
            return Err(invalid("acked or transmitted beyond sent"));
        }
        let ever_attached = has(F_EVER_ATTACHED);
        // A key is adopted (initiator) or issued (acceptor) exactly when a link attaches, and
        // never the zero key.
        if has(F_HAS_KEY) != ever_attached || has(F_HAS_KEY) == key.is_zero() {
            return Err(invalid("resume key"));
        }
        let acceptor_only = has(F_HAS_PREVIOUS_KEY) || has(F_PEER_CONFIRMED);
        if (acceptor_only && role != Role::Acceptor) || (has(F_HAS_PREVIOUS_KEY) && !ever_attached) {
            return Err(invalid("previous key"));
        }
        if has(F_HAS_PREVIOUS_KEY) == previous_key.is_zero() {
            return Err(invalid("previous key"));
        }
        if !ever_attached && (detached_for != Duration::ZERO || recovery_in != Duration::ZERO) {
            return Err(invalid("recovery deadline before any attach"));
        }
        check_limit("recovery_timeout", recovery_in.as_nanos(), config.recovery_timeout.as_nanos())?;
        let closing = if has(F_CLOSING) {
            let text = core::str::from_utf8(closing_text).map_err(|_| invalid("closing reason"))?;
            check_limit("goodbye reason", text.len() as u64, MAX_GOODBYE_REASON as u64)?;
            let reason = Reason::fitting(closing_code, text, config.max_frame_len);
            check_limit("max_frame_len (goodbye)", text.len() as u64, reason.len as u64)?;
            Some(reason)
        } else {
            if closing_code != 0 || closing_len != 0 {
                return Err(invalid("closing reason"));
            }
            None
        };

        let mut c = Self::new(role, config)?;
        let now = c.clock.observe(now);
        read_ring(r, &mut c, acked, sent)?;
        c.sent = sent;
        c.acked = acked;
        c.tx_cursor = acked;
        c.tx_high = tx_high;
        c.received = received;
        c.ack_sent = received;
        c.ping_nonce = ping_nonce;
        c.ever_attached = ever_attached;
        c.peer_confirmed = has(F_PEER_CONFIRMED);
        c.want_writable = has(F_WANT_WRITABLE);
        c.starved_cycle = has(F_STARVED_CYCLE);
        c.key = has(F_HAS_KEY).then_some(key);
        c.previous_key = has(F_HAS_PREVIOUS_KEY).then_some(previous_key);
        c.closing = closing;
        if ever_attached {
            c.detached_since = Some(Instant::from_nanos(now.as_nanos().saturating_sub(detached_for.as_nanos())));
            c.timers.set(Timer::Recovery, now.saturating_add(recovery_in));
        }
        Ok(c)
    }
}

/// Read the `RING` section into `c`'s empty ring: the items `acked..sent`.
fn read_ring(r: &mut Reader<'_>, c: &mut Conduit, acked: u64, sent: u64) -> Result<(), ImportError> {
    let mut s = r.section(tag::RING)?;
    if s.u64()? != acked {
        return Err(invalid("ring first seq"));
    }
    let count = s.u32()?;
    if u64::from(count) != sent - acked {
        return Err(invalid("ring item count"));
    }
    check_limit("replay_frames", u64::from(count), u64::from(c.config.replay_frames))?;
    // Number the first item `acked`: trimming an empty ring moves its start.
    c.ring.trim_to(acked);
    let max_item = u64::from(c.config.max_item_len());
    let mut bytes = 0u64;
    for _ in 0..count {
        let len = s.u32()?;
        check_limit("max_item_len", u64::from(len), max_item)?;
        bytes += u64::from(len);
        check_limit("replay_bytes", bytes, u64::from(c.config.replay_bytes))?;
        let item = s.take(len as usize)?;
        if c.ring.push(&[item]).is_err() {
            return Err(ImportError::OverLimit {
                limit: "replay ring",
                value: bytes,
                max: u64::from(c.config.replay_bytes),
            });
        }
    }
    s.end(tag::RING)
}
