//! Application commands on a [`Net`]: open, send, close and catch up on a client's or an
//! endpoint session's connections, or run any command on a session; each is followed by a
//! drain and an invariant check, as a driver would.

use sotto_proto::session::{ConnId, Session};
use sotto_proto::Instant;

use super::app::{App, SendOutcome};
use super::{Net, Who};

impl Net {
    /// Run `f` on `who`'s session and application, then drain and check. `None` if `who` has
    /// no live session.
    pub fn act<R>(&mut self, who: Who, f: impl FnOnce(&mut Session, &mut App, Instant) -> R) -> Option<R> {
        let now = self.now;
        self.stats.inputs += 1;
        let r = match who {
            Who::Client(i) => {
                let c = &mut self.clients[i];
                let r = f(&mut c.session, &mut c.app, now);
                self.drain_client(i);
                r
            }
            Who::Server(i) => {
                let h = self.server_handle(i)?;
                let s = self.endpoint.session_mut(h)?;
                let r = f(s, &mut self.servers[h.index as usize].app, now);
                self.drain_server(h);
                r
            }
        };
        self.check_invariants();
        Some(r)
    }

    /// `who`'s application opens a connection (drained and checked).
    pub fn open_from(&mut self, who: Who) -> Option<ConnId> {
        match self.act(who, |s, app, _| app.open(s)) {
            Some(Ok(id)) => id,
            Some(Err(e)) => self.fail_fmt(format_args!("{who:?}: {e}")),
            None => None,
        }
    }

    /// Client `i`'s application opens a connection.
    pub fn open(&mut self, i: usize) -> Option<ConnId> {
        self.open_from(Who::Client(i))
    }

    /// `who`'s application sends up to `n` payloads on `conn` (stopping at the first refusal).
    /// Returns how many were accepted.
    pub fn send(&mut self, who: Who, conn: ConnId, n: usize) -> usize {
        let mut sent = 0;
        for _ in 0..n {
            match self.act(who, |s, app, _| app.send(s, conn)) {
                Some(Ok(SendOutcome::Sent)) => sent += 1,
                Some(Ok(_)) | None => break,
                Some(Err(e)) => self.fail_fmt(format_args!("{who:?}: {e}")),
            }
        }
        sent
    }

    /// `who`'s application closes `conn`. Returns whether the session took the command.
    pub fn close(&mut self, who: Who, conn: ConnId) -> bool {
        match self.act(who, |s, app, now| app.close(s, now, conn)) {
            Some(Ok(done)) => done,
            Some(Err(e)) => self.fail_fmt(format_args!("{who:?}: {e}")),
            None => false,
        }
    }

    /// `who`'s application answers pending Opens and releases what it holds (all of it when
    /// `all`, else per its policy).
    pub fn service(&mut self, who: Who, all: bool) {
        self.act(who, |s, app, now| app.service(s, now, all));
    }

    /// Every live application catches up: pending Opens answered, everything held released.
    pub fn service_all(&mut self) {
        for i in 0..self.clients.len() {
            self.service(Who::Client(i), true);
        }
        for idx in 0..self.servers.len() {
            let Some(h) = self.servers[idx].handle else { continue };
            let now = self.now;
            if let Some(s) = self.endpoint.session_mut(h) {
                self.servers[idx].app.service(s, now, true);
                self.drain_server(h);
                self.check_invariants();
            }
        }
    }

    /// Client `i` abandons its session (its link is reset; the endpoint's session stays,
    /// detached) and starts a fresh one, which dials at once.
    pub fn restart_client(&mut self, i: usize) {
        if let Some((slot, _)) = self.clients[i].link {
            self.reset_link(slot);
        }
        self.clients[i].restart();
        self.check_invariants();
    }
}
