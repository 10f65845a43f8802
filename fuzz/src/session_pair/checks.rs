//! The checks: every end drained and checked after each step, and at the end, after
//! the faults stop, the heal-and-settle checks (everything sent was delivered, nobody stalls).

use sotto_proto::conduit::LinkDropReason;
use sotto_proto::endpoint::{EndpointEvent, HostedEvent, SessionHandle};
use sotto_proto::session::{CommandError, ConnId, Session, SessionEvent, ROOT};
use sotto_proto::{Event, LinkId, SessionEnd};

use super::{server_ref, SLink, Server, Sim};

impl Sim {
    pub(super) fn drain(&mut self) {
        for _ in 0..512 {
            let mut moved = false;
            for p in 0..self.pairs.len() {
                moved |= self.drain_end(p, false, None);
            }
            let handles: Vec<Option<SessionHandle>> = match &self.server {
                Server::Single(_) => vec![None],
                Server::Endpoint(ep) => ep.handles().map(Some).collect(),
            };
            for h in handles {
                let owner = self.pairs.iter().position(|pr| !self.config.endpoint || pr.handle == h);
                moved |= self.drain_end(owner.unwrap_or(usize::MAX), true, h);
            }
            moved |= self.drain_endpoint();
            moved |= self.answer_opens();
            if !moved {
                self.check();
                return;
            }
        }
        panic!("outputs never run dry");
    }

    pub(super) fn drain_endpoint(&mut self) -> bool {
        let Server::Endpoint(ep) = &mut self.server else { return false };
        let mut events = Vec::new();
        while let Some(e) = ep.poll_event() {
            events.push(e);
        }
        let moved = !events.is_empty();
        for e in events {
            if self.trace {
                eprintln!("  [{:?}] endpoint {e:?}", self.now);
            }
            match e {
                HostedEvent::Endpoint(EndpointEvent::HandshakeExpired(pl)) => {
                    let serial =
                        self.pairs.iter().flat_map(|pr| &pr.links).find(|l| l.pending == Some(pl)).map(|l| l.serial);
                    let (p, i) =
                        serial.and_then(|s| self.find(s)).expect("expired a pending link the driver does not hold");
                    // The endpoint freed the slot already: the driver just closes the link.
                    self.pairs[p].links[i].pending = None;
                    self.close_end(self.pairs[p].links[i].serial, true);
                }
                HostedEvent::Endpoint(EndpointEvent::Evicted(h) | EndpointEvent::Reclaimed(h)) => {
                    for pr in &mut self.pairs {
                        if pr.handle == Some(h) {
                            pr.lost = true;
                        }
                    }
                }
                HostedEvent::SessionReady(h) => {
                    let ready = server_ref(&self.server, Some(h)).is_some_and(Session::is_ready);
                    assert!(ready, "SessionReady({h:?}) for a session not live and ready");
                }
                HostedEvent::Endpoint(EndpointEvent::SessionHandshakeExpired(h)) => {
                    // Not ready by its first link's deadline: already ended and freed by the
                    // endpoint. Its pairing lost its session; close its links.
                    assert!(server_ref(&self.server, Some(h)).is_none(), "expired session {h:?} not freed");
                    self.forget_freed(h);
                }
            }
        }
        moved
    }

    /// Drain one session: the initiator of pairing `p`, or (`server`) the acceptor session
    /// `h` (`None`: the standalone one), which belongs to pairing `p` unless it is an orphan
    /// (`p` out of range: a session created for a fresh dial whose initiator dialed fresh
    /// again).
    pub(super) fn drain_end(&mut self, p: usize, server: bool, h: Option<SessionHandle>) -> bool {
        let mut moved = false;
        let now = self.now;
        let mut n = 0usize;
        let holds = |l: &SLink, id: LinkId| if server { l.b == Some(id) && l.handle == h } else { l.a == Some(id) };
        let owned = p < self.pairs.len();
        loop {
            let mut buf = std::mem::take(&mut self.buf);
            let t = self.end_session(p, server, h).and_then(|s| s.poll_transmit(now, &mut buf));
            let Some(t) = t else {
                self.buf = buf;
                break;
            };
            moved = true;
            n += 1;
            assert!(n < 100_000, "poll_transmit does not run dry");
            let link = self
                .pairs
                .iter_mut()
                .enumerate()
                .filter(|(q, _)| server || *q == p)
                .flat_map(|(_, pr)| &mut pr.links)
                .find(|l| holds(l, t.link));
            let link = link.expect("transmit for a link the driver closed");
            if self.trace {
                eprintln!("  {p}{} -> {:02x?}", if server { 'S' } else { 'C' }, &buf[..t.len.min(24)]);
            }
            let pipe = if server { &mut link.to_a } else { &mut link.to_b };
            pipe.write(&buf[..t.len]);
            self.buf = buf;
        }
        let mut ended = false;
        while let Some(e) = self.end_session(p, server, h).and_then(Session::poll_event) {
            moved = true;
            if self.trace {
                eprintln!("  [{:?}] {p}{} {h:?} event {e:?}", self.now, if server { 'S' } else { 'C' });
            }
            match e {
                SessionEvent::Ready if owned => {
                    let app = self.app(p, server);
                    assert!(!app.ready, "Ready twice");
                    app.ready = true;
                }
                SessionEvent::ConnWritable(c) if owned => {
                    assert!(self.app(p, server).blocked.remove(&c), "ConnWritable({c}) without NoCredit");
                }
                SessionEvent::Conduit(Event::DropLink { link, reason }) => {
                    assert!(
                        !matches!(
                            reason,
                            LinkDropReason::Violation(_) | LinkDropReason::Gap | LinkDropReason::HandshakeFailed(_)
                        ),
                        "honest peers over FIFO links: {p} server {server} dropped a link for {reason:?}"
                    );
                    assert!(reason != LinkDropReason::Rejected || server, "only the acceptor rejects");
                    let serial = self
                        .pairs
                        .iter()
                        .enumerate()
                        .filter(|(q, _)| server || *q == p)
                        .flat_map(|(_, pr)| &pr.links)
                        .find(|l| holds(l, link))
                        .map(|l| l.serial);
                    match serial {
                        Some(serial) => self.close_end(serial, server),
                        None => {
                            if let Some(s) = self.end_session(p, server, h) {
                                s.link_down(now, link);
                            }
                        }
                    }
                }
                SessionEvent::Conduit(Event::Ended(r)) => {
                    ended = true;
                    if !owned {
                        continue;
                    }
                    let lost = self.pairs[p].lost;
                    let peer_over = self.session(p, !server).is_none_or(|s| s.is_ended());
                    let app = self.app(p, server);
                    assert!(app.ended.is_none(), "Ended twice");
                    app.ended = Some(r);
                    match r {
                        SessionEnd::RecoveryTimeout
                        | SessionEnd::LocalClose { .. }
                        | SessionEnd::PeerGoodbye { .. } => {}
                        SessionEnd::Rejected => assert!(!server && (lost || peer_over), "REJECTED while B lives"),
                        SessionEnd::Full => assert!(!server && (lost || peer_over), "told full while B lives"),
                        SessionEnd::Evicted => assert!(server, "evicted initiator"),
                        other => panic!("honest pairing {p} ended with {other:?}"),
                    }
                }
                _ => {}
            }
        }
        let failure = self.end_session(p, server, h).and_then(|s| s.failure());
        assert_eq!(failure, None, "honest pairing {p} (server {server}) failed at the session layer");
        if let (true, true, Server::Endpoint(ep), Some(h)) = (ended, server, &mut self.server, h) {
            // Ended and drained: free it (the contract); its handle is stale from now on.
            ep.free(now, h);
            self.forget_freed(h);
        }
        moved
    }

    /// Applications answer the Opens they got: always accept (retried while the ring is full).
    pub(super) fn answer_opens(&mut self) -> bool {
        let mut moved = false;
        for p in 0..self.pairs.len() {
            for server in [false, true] {
                let pending = std::mem::take(&mut self.app(p, server).pending_accept);
                let mut keep = Vec::new();
                for c in pending {
                    let r = self.session(p, server).map(|s| s.accept(c, b""));
                    match r {
                        Some(Ok(())) => {
                            moved = true;
                            self.app(p, server).open.insert(c);
                        }
                        Some(Err(CommandError::WouldBlock)) => keep.push(c),
                        _ => {}
                    }
                }
                self.app(p, server).pending_accept = keep;
            }
        }
        moved
    }

    pub(super) fn check(&mut self) {
        for p in 0..self.pairs.len() {
            for server in [false, true] {
                let max = if server { self.config.session(true) } else { self.config.session(false) }.max_connections;
                if let Some(s) = server_ref(&self.server, self.pairs[p].handle).filter(|_| server) {
                    assert!(s.connection_count() <= max as usize);
                    assert_eq!(s.conduit().stats().events_overflowed, 0);
                }
                if !server {
                    let s = &self.pairs[p].client;
                    assert!(s.connection_count() <= max as usize);
                    assert_eq!(s.conduit().stats().events_overflowed, 0);
                }
            }
            for l in &self.pairs[p].links {
                assert!(l.to_a.data.len() <= self.pipe_bound && l.to_b.data.len() <= self.pipe_bound, "I6: pipe bound");
            }
            let held = self.pairs[p].links.iter().filter(|l| l.a.is_some()).count();
            assert!(held <= 1, "I5: the initiator holds {held} links");
            let h = self.pairs[p].handle;
            let held = self.pairs[p].links.iter().filter(|l| l.b.is_some() && l.handle == h).count();
            assert!(held <= 1, "I5: the acceptor session holds {held} links");
        }
    }

    pub(super) fn alive(&self, p: usize) -> bool {
        let pr = &self.pairs[p];
        !pr.lost
            && !pr.client.is_ended()
            && server_ref(&self.server, pr.handle).is_some_and(|s| !s.is_ended())
            && (!self.config.endpoint || pr.handle.is_some())
    }

    /// Everything accepted by a send was delivered (unless the receiver closed that
    /// connection).
    pub(super) fn delivered_all(&self, p: usize) -> bool {
        let pr = &self.pairs[p];
        [(&pr.capp, &pr.sapp), (&pr.sapp, &pr.capp)].iter().all(|(from, to)| {
            from.sent.iter().all(|(c, v)| to.closed_by_me.contains(c) || to.got.get(c).copied().unwrap_or(0) == v.len())
        })
    }

    pub(super) fn quiet(&self) -> bool {
        (0..self.pairs.len()).all(|p| {
            !self.alive(p)
                || (self.delivered_all(p)
                    && self.pairs[p].client.conduit().is_established()
                    && self.pairs[p].capp.pending_accept.is_empty()
                    && self.pairs[p].sapp.pending_accept.is_empty())
        })
    }

    pub(super) fn heal(&mut self) {
        for p in 0..self.pairs.len() {
            if self.alive(p) || (self.config.endpoint && self.pairs[p].handle.is_none()) {
                self.reconnect(p);
            }
        }
        for _ in 0..1_000 {
            self.deliver_all();
            if self.quiet() {
                break;
            }
            let mut redialed = false;
            for p in 0..self.pairs.len() {
                let pr = &self.pairs[p];
                let fresh = self.config.endpoint && pr.handle.is_none() && !pr.client.is_ended();
                if (self.alive(p) || fresh)
                    && !pr.client.conduit().is_established()
                    && pr.links.iter().all(|l| l.a.is_none())
                {
                    self.reconnect(p);
                    redialed = true;
                }
            }
            if redialed {
                continue;
            }
            let Some(t) = self.all_sessions_timeout() else { break };
            self.advance(t.saturating_duration_since(self.now));
        }
    }

    pub(super) fn finish(&mut self) {
        if self.trace {
            eprintln!("[{:?}] finish", self.now);
        }
        self.heal();
        for p in 0..self.pairs.len() {
            if !self.alive(p) {
                continue;
            }
            let pr = &self.pairs[p];
            assert!(
                self.delivered_all(p),
                "I7: pairing {p}: not everything sent was delivered: C {:?} S {:?}",
                pr.capp,
                pr.sapp
            );
        }
        // Readers catch up: no sender stays blocked on a connection open at both ends.
        for p in 0..self.pairs.len() {
            for server in [false, true] {
                let app = self.app(p, server);
                app.slow.clear();
                let conns: Vec<ConnId> = app.unreleased.keys().copied().collect();
                for c in conns {
                    self.release(p, server, c, usize::MAX);
                }
            }
        }
        self.drain();
        self.heal();
        for p in 0..self.pairs.len() {
            if !self.alive(p) {
                continue;
            }
            for server in [false, true] {
                let (app, peer) = if server {
                    (&self.pairs[p].sapp, &self.pairs[p].capp)
                } else {
                    (&self.pairs[p].capp, &self.pairs[p].sapp)
                };
                for c in &app.blocked {
                    let open_both = *c == ROOT || app.open.contains(c) && peer.open.contains(c);
                    assert!(
                        !open_both,
                        "pairing {p}: {} blocked on {c} for good after every reader read",
                        if server { "S" } else { "C" }
                    );
                }
            }
        }
    }
}
