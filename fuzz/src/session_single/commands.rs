//! Application commands: each is issued, and its result checked against the errors the
//! model says apply.

use sotto_proto::session::message::data_header_len;
use sotto_proto::session::{message_credit, CommandError, ConnId, Message as SMsg, MIN_MESSAGE_CREDIT, ROOT};

use super::model::{min_credit, MConn, Phase, St};
use super::Driver;

impl Driver {
    pub(super) fn check_command(&self, what: &str, actual: Result<(), CommandError>, applicable: &[CommandError]) {
        match actual {
            Ok(()) => assert!(applicable.is_empty(), "{what} succeeded although {applicable:?} apply"),
            Err(e) => {
                let fits = applicable.iter().any(|a| match (a, e) {
                    (CommandError::TooLarge { .. }, CommandError::TooLarge { .. }) => true,
                    (a, e) => *a == e,
                });
                assert!(fits, "{what} failed with {e:?}, applicable {applicable:?}");
            }
        }
    }

    /// Errors a command queueing an item of `len` bytes may meet in the conduit.
    pub(super) fn conduit_errors(&self, len: usize, errs: &mut Vec<CommandError>) {
        let c = self.s.conduit();
        if self.ended_like() {
            errs.push(CommandError::Ended);
        }
        if len > c.max_item_len() as usize {
            errs.push(CommandError::TooLarge { len: 0, max: 0 });
        }
        if !c.can_send(len) {
            errs.push(CommandError::WouldBlock);
        }
    }

    pub(super) fn cmd_open(&mut self, meta: &[u8]) {
        let mut errs = Vec::new();
        if self.s.is_ended() || self.phase == Phase::Failed {
            errs.push(CommandError::Ended);
        }
        if self.phase != Phase::Ready {
            errs.push(CommandError::NotReady);
        }
        if meta.len() > self.cfg.max_metadata as usize {
            errs.push(CommandError::MetadataTooLarge);
        }
        if self.conns.len() > self.cfg.max_connections as usize {
            errs.push(CommandError::TooManyConnections);
        }
        if self.next_local > u64::from(self.cfg.max_conn_id) {
            errs.push(CommandError::IdsExhausted);
        }
        let id = self.next_local.min(u64::from(u32::MAX)) as u32;
        let len = SMsg::Open { conn: id, credit: self.cfg.initial_credit, metadata: meta }.encoded_len();
        self.conduit_errors(len, &mut errs);
        let r = self.s.open(meta);
        if self.trace {
            eprintln!("  open -> {r:?}");
        }
        self.check_command("open", r.map(|_| ()), &errs);
        if let Ok(got) = r {
            assert_eq!(got, id, "open allocated an unexpected id");
            self.next_local += 2;
            self.conns.insert(id, MConn { state: St::OpeningOut, credit: 0, peer_window: 0, want_writable: false });
            self.ledger(id);
        }
    }

    pub(super) fn answer_errors(&self, conn: ConnId, meta: &[u8], item_len: usize) -> Vec<CommandError> {
        let mut errs = Vec::new();
        if self.s.is_ended() || self.phase == Phase::Failed {
            errs.push(CommandError::Ended);
        }
        if meta.len() > self.cfg.max_metadata as usize {
            errs.push(CommandError::MetadataTooLarge);
        }
        match self.conns.get(&conn) {
            Some(c) if c.state == St::PendingIn => {}
            Some(_) => errs.push(CommandError::NotOpen),
            None => errs.push(CommandError::UnknownConnection),
        }
        self.conduit_errors(item_len, &mut errs);
        errs
    }

    pub(super) fn cmd_accept(&mut self, conn: ConnId, meta: &[u8]) {
        let len = SMsg::Accept { conn, credit: self.cfg.initial_credit, metadata: meta }.encoded_len();
        let errs = self.answer_errors(conn, meta, len);
        let r = self.s.accept(conn, meta);
        self.check_command("accept", r, &errs);
        if r.is_ok() {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.state = St::Open;
            }
            self.pending_in -= 1;
        }
    }

    pub(super) fn cmd_reject(&mut self, conn: ConnId, code: u32, meta: &[u8]) {
        let len = SMsg::Reject { conn, code, metadata: meta }.encoded_len();
        let errs = self.answer_errors(conn, meta, len);
        let r = self.s.reject(self.now, conn, code, meta);
        self.check_command("reject", r, &errs);
        if r.is_ok() {
            self.conns.remove(&conn);
            self.pending_in -= 1;
        }
    }

    pub(super) fn cmd_close_conn(&mut self, conn: ConnId, meta: &[u8]) {
        let mut errs = Vec::new();
        if self.s.is_ended() || self.phase == Phase::Failed {
            errs.push(CommandError::Ended);
        }
        if meta.len() > self.cfg.max_metadata as usize {
            errs.push(CommandError::MetadataTooLarge);
        }
        match self.conns.get(&conn) {
            _ if conn == ROOT => errs.push(CommandError::NotOpen),
            Some(c) if c.state == St::PendingIn => errs.push(CommandError::NotOpen),
            Some(_) => {}
            None => errs.push(CommandError::UnknownConnection),
        }
        self.conduit_errors(SMsg::Close { conn, metadata: meta }.encoded_len(), &mut errs);
        let r = self.s.close_conn(self.now, conn, meta);
        self.check_command("close_conn", r, &errs);
        if r.is_ok() {
            self.conns.remove(&conn);
        }
    }

    pub(super) fn cmd_finish(&mut self, conn: ConnId) {
        let mut errs = Vec::new();
        if self.s.is_ended() || self.phase == Phase::Failed {
            errs.push(CommandError::Ended);
        }
        if self.phase != Phase::Ready {
            errs.push(CommandError::NotReady);
        }
        if !self.peer_half_close() {
            errs.push(CommandError::Unsupported);
        }
        match self.conns.get(&conn) {
            _ if conn == ROOT => errs.push(CommandError::NotOpen),
            Some(c) if !matches!(c.state, St::Open | St::GotFin) => errs.push(CommandError::NotOpen),
            Some(_) => {}
            None => errs.push(CommandError::UnknownConnection),
        }
        self.conduit_errors(SMsg::Fin { conn }.encoded_len(), &mut errs);
        let r = self.s.finish(conn);
        if self.trace {
            eprintln!("  finish {conn} -> {r:?} (applicable {errs:?})");
        }
        self.check_command("finish", r, &errs);
        if r.is_ok() {
            match self.conns.get(&conn).map(|c| c.state) {
                Some(St::GotFin) => {
                    self.conns.remove(&conn);
                }
                Some(_) => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.state = St::SentFin;
                        c.want_writable = false;
                    }
                }
                None => {}
            }
        }
    }

    pub(super) fn cmd_send(&mut self, conn: ConnId, len: usize) {
        let mut errs = Vec::new();
        if self.phase != Phase::Ready {
            errs.push(CommandError::NotReady);
        }
        let max_item = (self.s.conduit().max_item_len() as usize).saturating_sub(data_header_len(conn));
        let mut model_max = None;
        match self.conns.get(&conn) {
            None => errs.push(CommandError::UnknownConnection),
            Some(c) if !matches!(c.state, St::Open | St::GotFin) => errs.push(CommandError::NotOpen),
            Some(c) => {
                let half = c.peer_window.div_ceil(2);
                let max = (half as usize).min(max_item);
                // What the message spends: its length, at least MIN_MESSAGE_CREDIT (version 2).
                let v2 = self.peer_version.is_some_and(|v| v >= 2);
                let cost = message_credit(len as u64, v2);
                model_max = Some(if v2 && half < MIN_MESSAGE_CREDIT { 0 } else { max });
                if len > max || cost > half {
                    errs.push(CommandError::TooLarge { len: 0, max: 0 });
                }
                if cost > min_credit(c.credit, self.cfg.max_credit) {
                    errs.push(CommandError::NoCredit);
                }
            }
        }
        self.conduit_errors(len + data_header_len(conn), &mut errs);
        // A batchable payload joins the open batch item (it needs room for its bytes and a
        // length, no new ring slot) or starts one (a header one length longer than Data's):
        // the ring may or may not have room for it where it would for a plain Data.
        let batchable = self.peer_batches() && self.batch_limit() > 0 && len <= self.batch_limit() / 4;
        if batchable {
            errs.retain(|e| *e != CommandError::WouldBlock);
        }
        let payload: Vec<u8> = (0..len).map(|i| i as u8 ^ conn as u8).collect();
        let r = self.s.send(conn, &payload);
        if self.trace {
            eprintln!("  send {conn} {len} -> {r:?} (applicable {errs:?}, batchable {batchable})");
        }
        if batchable && r == Err(CommandError::WouldBlock) {
            assert!(errs.is_empty(), "send failed with WouldBlock, applicable {errs:?}");
        } else {
            self.check_command("send", r, &errs);
        }
        match r {
            Ok(()) => {
                let cost = message_credit(len as u64, self.peer_batches());
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.credit -= cost;
                }
            }
            Err(CommandError::NoCredit) => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.want_writable = true;
                }
            }
            Err(CommandError::TooLarge { len: l, max }) => {
                if let Some(m) = model_max {
                    if errs.iter().any(|e| matches!(e, CommandError::TooLarge { .. })) && l as usize == len {
                        assert!(
                            max as usize == m || max == self.s.conduit().max_item_len(),
                            "TooLarge max {max} vs {m}"
                        );
                    }
                }
            }
            Err(_) => {}
        }
    }
}
