//! Invariants of a [`Net`], checked after every input the harness feeds:
//!
//! - per connection (in the application models, on every delivery): payloads arrive exactly
//!   once, in order, and a peer's Close finds all its payloads delivered (I1); no connection
//!   ever receives more than the window its receiver granted (initial credit + releases);
//! - each model agrees with its session (which connections exist and are open), and the
//!   session holds at most `max_connections`;
//! - credit seen from the sender: bytes sent plus credit held never exceed what the receiver
//!   could have granted (its initial window plus what its application released);
//! - `Ended` is reported at most once per session;
//! - I5: a client has at most one open link and it is its session's current link; an endpoint
//!   session has at most one link routed to it, its current one;
//! - I3/I6: replay rings within their caps, no event lost to overflow;
//! - endpoint bounds: live sessions, pending links and detached sessions within their limits,
//!   and every live session known to the harness.

use sotto_proto::session::Session;

use super::app::App;
use super::link::{ClientEnd, ServerEnd};
use super::{Net, Who};

impl Net {
    /// Check every invariant now; fail the run (with seed and repro) on the first broken one.
    pub fn check_invariants(&mut self) {
        self.checks += 1;
        let full = self.checks % 64 == 0;
        if let Err(msg) = self.check(full) {
            self.fail(&msg);
        }
        self.dirty_clients.iter_mut().for_each(|d| *d = false);
        self.dirty_servers.iter_mut().for_each(|d| *d = false);
    }

    /// Check the clients and endpoint sessions an input touched (everything when `full`).
    fn check(&self, full: bool) -> Result<(), String> {
        for (i, c) in self.clients.iter().enumerate() {
            let paired = c.server.is_some_and(|h| self.dirty_servers[h.index as usize]);
            if !(full || self.dirty_clients[i] || paired) {
                continue;
            }
            c.app.check_against(&c.session).map_err(|e| format!("client {i}: {e}"))?;
            check_session(&c.session).map_err(|e| format!("client {i}: {e}"))?;
            let current = c.session.conduit().current_link();
            let mut bound = 0;
            let mut one = None;
            for (s, l) in self.links.iter().enumerate() {
                if let (false, ClientEnd::Session(j, link)) = (l.is_free(), l.client) {
                    if j == i {
                        bound += 1;
                        one = Some((s, link));
                    }
                }
            }
            let ok = match (c.link, bound, one, current) {
                (None, 0, _, None) => true,
                (Some((slot, link)), 1, Some((s, l)), Some(cur)) => slot == s && link == l && cur == link,
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "I5: client {i}: link {:?}, {bound} open ends (one: {one:?}), current {current:?}",
                    c.link
                ));
            }
            if let (true, Some(h)) = (self.cross_credit_check, self.server_handle(i)) {
                let s = self.endpoint.session(h).expect("live handle");
                let sa = &self.servers[h.index as usize].app;
                check_credit(&c.app, &c.session, sa).map_err(|e| format!("client {i} -> endpoint: {e}"))?;
                check_credit(sa, s, &c.app).map_err(|e| format!("endpoint -> client {i}: {e}"))?;
            }
        }
        let mut live = 0u64;
        let mut detached = 0u64;
        for (idx, slot) in self.servers.iter().enumerate() {
            let Some(h) = slot.handle else { continue };
            let Some(s) = self.endpoint.session(h) else {
                return Err(format!("endpoint slot {idx}: the harness holds {h:?}, the endpoint says stale"));
            };
            live += 1;
            detached += u64::from(s.conduit().detached_since().is_some());
            if !(full || self.dirty_servers[idx]) {
                continue;
            }
            slot.app.check_against(s).map_err(|e| format!("endpoint session {h:?}: {e}"))?;
            check_session(s).map_err(|e| format!("endpoint session {h:?}: {e}"))?;
            let mut routed = 0;
            let mut one = None;
            for l in &self.links {
                if let ServerEnd::Session(x, link) = l.server {
                    if x == h {
                        routed += 1;
                        one = Some(link);
                    }
                }
            }
            let current = s.conduit().current_link();
            if routed > 1 || (routed == 1 && current != one) {
                return Err(format!(
                    "I5: endpoint session {h:?} has {routed} links routed to it (one: {one:?}), current {current:?}"
                ));
            }
        }
        let e = self.endpoint.stats();
        let cfg = self.endpoint.config();
        if e.sessions_live != live || live > u64::from(cfg.max_sessions) {
            return Err(format!("endpoint: {} sessions live, the harness knows {live}: {e:?}", e.sessions_live));
        }
        if e.pending_links > u64::from(cfg.max_pending_handshakes) {
            return Err(format!("H9: {} pending links over the limit: {e:?}", e.pending_links));
        }
        if detached > u64::from(cfg.max_detached_sessions) {
            return Err(format!("L2: {detached} detached sessions over the limit"));
        }
        Ok(())
    }
}

fn check_session(s: &Session) -> Result<(), String> {
    let st = s.conduit().stats();
    let cfg = s.conduit().config();
    if st.replay_frames > u64::from(cfg.replay_frames) || st.replay_bytes > u64::from(cfg.replay_bytes) {
        return Err(format!("I3: replay ring over its caps: {st:?}"));
    }
    if st.events_overflowed != 0 {
        return Err(format!("I6: {} events lost to overflow", st.events_overflowed));
    }
    Ok(())
}

/// The sender's bytes sent plus credit held on each connection never exceed what the receiver
/// could have granted: its window plus what its application released.
fn check_credit(sender: &App, s: &Session, receiver: &App) -> Result<(), String> {
    for c in sender.conns() {
        let Some(r) = receiver.conn(c.id) else { continue };
        let granted = receiver.recv_window() + r.released;
        if c.sent_bytes + s.send_credit(c.id) > granted {
            return Err(format!(
                "credit: connection {} sent {} bytes and holds {} credit, but the receiver granted at most {granted}",
                c.id,
                c.sent_bytes,
                s.send_credit(c.id)
            ));
        }
    }
    Ok(())
}

impl Net {
    /// Fail the run with `msg`, the time, the seed and how to reproduce it.
    pub fn fail(&self, msg: &str) -> ! {
        self.fail_fmt(format_args!("{msg}"))
    }

    /// [`fail`](Self::fail) with a formatted message.
    pub fn fail_fmt(&self, msg: core::fmt::Arguments<'_>) -> ! {
        let mut state = String::new();
        for i in 0..self.clients.len() {
            let c = &self.clients[i];
            state.push_str(&format!(
                "\n  client {i}: ended {:?} failure {:?} stats {:?} link {:?} app {:?} server {:?} (last end {:?}, failure {:?})",
                c.session.conduit().ended(),
                c.session.failure(),
                {
                    let s = c.session.stats();
                    (s.opens_received, s.opens_auto_rejected, s.control_ignored, s.data_dropped_closed)
                },
                c.link,
                c.app.counters,
                self.app(Who::Server(i)).map(|a| a.counters),
                self.server_slot(i).and_then(|s| s.last_end),
                self.server_slot(i).and_then(|s| s.last_failure),
            ));
            if let Some(st) = self.server_slot(i).and_then(|s| s.last_stats) {
                state.push_str(&format!(
                    "\n    its endpoint session, when freed: opens received {} auto-rejected {} ignored {} dropped {} open {}",
                    st.opens_received, st.opens_auto_rejected, st.control_ignored, st.data_dropped_closed, st.connections_open
                ));
            }
        }
        panic!(
            "{msg}\n  at t={} ns; seed {}; reproduce: {}\n  endpoint {:?}{state}",
            self.now.as_nanos(),
            self.cfg.seed,
            self.cfg.repro,
            self.endpoint.stats(),
        )
    }
}
