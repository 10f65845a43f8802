//! The driver loop of a [`Net`]: drain a session's outputs (frames into the link's pipe,
//! events to the application and the link bookkeeping), hand link messages to the right state
//! machine (the endpoint's `route` for a pending link, then the session it was routed to),
//! drain the endpoint's events, close link ends.

use sotto_proto::endpoint::{EndpointEvent, HostedEvent, Placed, SessionHandle};
use sotto_proto::session::SessionEvent;
use sotto_proto::wire::LEN_PREFIX;
use sotto_proto::{Event, LinkId};

use super::link::{ClientEnd, ServerEnd, CLIENT, SERVER};
use super::Net;

impl Net {
    /// Drain client `i`'s outputs: every frame, then every event, until both are dry.
    pub fn drain_client(&mut self, i: usize) {
        self.dirty_clients[i] = true;
        let bound = u64::from(self.cfg.client.conduit.replay_frames) + 64;
        let mut frames = 0u64;
        loop {
            let mut progressed = false;
            loop {
                let now = self.now;
                let c = &mut self.clients[i];
                let Some(t) = c.session.poll_transmit(now, &mut self.tx[LEN_PREFIX..]) else { break };
                progressed = true;
                frames += 1;
                if frames > bound {
                    self.fail("I6: one drain produced more frames than the replay ring holds (unbounded output)");
                }
                let Some((slot, _)) = c.link.filter(|(_, l)| *l == t.link) else {
                    self.fail_fmt(format_args!("I5: client {i} transmitted on {:?}, not its open link", t.link));
                };
                self.write_frame(slot, CLIENT, t.len);
            }
            while let Some(e) = self.clients[i].session.poll_event() {
                progressed = true;
                self.on_client_event(i, e);
            }
            if !progressed {
                break;
            }
        }
    }

    fn on_client_event(&mut self, i: usize, e: SessionEvent) {
        if let Err(msg) = self.clients[i].app.on_event(e) {
            self.fail_fmt(format_args!("client {i}: {msg}"));
        }
        let SessionEvent::Conduit(e) = e else { return };
        let c = &mut self.clients[i];
        match e {
            Event::Attached { resumed, .. } => {
                c.counters.attached += 1;
                c.counters.resumed += u64::from(resumed);
                c.dialer.attached();
            }
            Event::DropLink { link, .. } => {
                c.counters.drop_links += 1;
                if let Some((slot, _)) = c.link.filter(|(_, l)| *l == link) {
                    self.close_end(slot, CLIENT);
                }
            }
            Event::Ended(_) => {
                c.counters.ended += 1;
                c.dialer.cancel();
            }
            Event::Writable => {}
        }
    }

    /// Drain endpoint session `h`'s outputs until dry; free it once it ended; then drain the
    /// endpoint's events.
    pub(crate) fn drain_server(&mut self, h: SessionHandle) {
        let idx = h.index as usize;
        self.dirty_servers[idx] = true;
        let bound = u64::from(self.cfg.endpoint.session.conduit.replay_frames) + 64;
        let mut frames = 0u64;
        loop {
            let mut progressed = false;
            loop {
                let now = self.now;
                let Some(s) = self.endpoint.session_mut(h) else { break };
                let Some(t) = s.poll_transmit(now, &mut self.tx[LEN_PREFIX..]) else { break };
                progressed = true;
                frames += 1;
                if frames > bound {
                    self.fail("I6: one endpoint-session drain produced more frames than its replay ring holds");
                }
                let Some(slot) = self.slot_of_server(h, t.link) else {
                    self.fail_fmt(format_args!(
                        "I5: endpoint session {h:?} transmitted on {:?}, not an open link",
                        t.link
                    ));
                };
                self.write_frame(slot, SERVER, t.len);
            }
            while let Some(e) = self.endpoint.session_mut(h).and_then(sotto_proto::session::Session::poll_event) {
                progressed = true;
                if let Err(msg) = self.servers[idx].app.on_event(e) {
                    self.fail_fmt(format_args!("endpoint session {h:?}: {msg}"));
                }
                if let SessionEvent::Conduit(Event::DropLink { link, .. }) = e {
                    if let Some(slot) = self.slot_of_server(h, link) {
                        self.close_end(slot, SERVER);
                    }
                }
            }
            if !progressed {
                break;
            }
        }
        if self.endpoint.session(h).is_some_and(sotto_proto::session::Session::is_ended) {
            for slot in 0..self.links.len() {
                if matches!(self.links[slot].server, ServerEnd::Session(sh, _) if sh == h) {
                    self.close_end(slot, SERVER);
                }
            }
            if let Some(sess) = self.endpoint.session(h) {
                self.servers[idx].last_failure = sess.failure();
                self.servers[idx].last_stats = Some(sess.stats());
            }
            self.endpoint.free(self.now, h);
            let s = &mut self.servers[idx];
            s.handle = None;
            s.last_end = s.app.ended;
            self.server_counters.freed += 1;
        }
        self.drain_endpoint();
    }

    /// Drain the endpoint's own events: expired handshakes close their link, evicted sessions
    /// are drained and freed.
    pub(crate) fn drain_endpoint(&mut self) {
        while let Some(ev) = self.endpoint.poll_event() {
            match ev {
                HostedEvent::Endpoint(EndpointEvent::HandshakeExpired(p)) => {
                    self.server_counters.handshakes_expired += 1;
                    if let Some(slot) = self.links.iter().position(|l| l.server == ServerEnd::Pending(p)) {
                        self.close_end(slot, SERVER);
                    }
                }
                HostedEvent::Endpoint(EndpointEvent::Evicted(h) | EndpointEvent::Reclaimed(h)) => {
                    self.server_counters.evicted += 1;
                    self.drain_server(h);
                }
                HostedEvent::SessionReady(h) => self.on_session_ready(h),
                HostedEvent::Endpoint(EndpointEvent::SessionHandshakeExpired(h)) => {
                    self.on_session_handshake_expired(h);
                }
            }
        }
    }

    /// A new session finished its session handshake: exactly once, while it is ready.
    fn on_session_ready(&mut self, h: SessionHandle) {
        self.server_counters.sessions_ready += 1;
        let s = &mut self.servers[h.index as usize];
        if s.handle != Some(h) || s.announced {
            self.fail_fmt(format_args!("SessionReady({h:?}) for a session not live or already announced"));
        }
        s.announced = true;
        if !self.endpoint.session(h).is_some_and(sotto_proto::session::Session::is_ready) {
            self.fail_fmt(format_args!("SessionReady({h:?}) for a session that is not ready"));
        }
    }

    /// The endpoint ended and freed a new session that missed its handshake deadline: close its
    /// links and forget it. It must never have been announced.
    fn on_session_handshake_expired(&mut self, h: SessionHandle) {
        self.server_counters.session_handshakes_expired += 1;
        let idx = h.index as usize;
        if self.servers[idx].handle != Some(h) || self.servers[idx].announced {
            self.fail_fmt(format_args!("SessionHandshakeExpired({h:?}) for a session not live or announced"));
        }
        if self.endpoint.session(h).is_some() {
            self.fail_fmt(format_args!("SessionHandshakeExpired({h:?}) but the handle is not stale"));
        }
        for slot in 0..self.links.len() {
            if matches!(self.links[slot].server, ServerEnd::Session(sh, _) if sh == h) {
                self.close_end(slot, SERVER);
            }
        }
        let s = &mut self.servers[idx];
        s.handle = None;
        s.last_end = Some(sotto_proto::SessionEnd::Evicted);
    }

    pub(crate) fn slot_of_server(&self, h: SessionHandle, link: LinkId) -> Option<usize> {
        self.links.iter().position(|l| !l.is_free() && l.server == ServerEnd::Session(h, link))
    }

    /// Write the frame at `self.tx[LEN_PREFIX..][..len]` into `slot`'s pipe from `end`, through
    /// that end's tap.
    pub(crate) fn write_frame(&mut self, slot: usize, end: usize, len: usize) {
        let latency = self.cfg.latency;
        let now = self.now;
        let serial = self.links[slot].serial;
        let r = if let Some(tap) = self.taps[end].as_mut() {
            self.frame_buf.clear();
            self.frame_buf.extend_from_slice(&self.tx[LEN_PREFIX..LEN_PREFIX + len]);
            if !tap(serial, &mut self.frame_buf) {
                return;
            }
            let n = self.frame_buf.len() as u32;
            self.frame_buf.splice(0..0, n.to_le_bytes());
            self.links[slot].pipes[end].write(now, latency, &self.frame_buf)
        } else {
            self.tx[..LEN_PREFIX].copy_from_slice(&(len as u32).to_le_bytes());
            self.links[slot].pipes[end].write(now, latency, &self.tx[..LEN_PREFIX + len])
        };
        if r.is_err() {
            self.fail("I6: a link pipe overflowed (more in flight than a session may have)");
        }
        let inflight = self.links[slot].pipes[end].in_flight();
        self.stats.max_pipe_bytes = self.stats.max_pipe_bytes.max(inflight);
    }

    /// Hand one link message that arrived at the endpoint end of `slot` to the endpoint (first
    /// message) or to its session; drain and check.
    pub(crate) fn deliver_server(&mut self, slot: usize, msg: &[u8]) {
        let now = self.now;
        self.stats.inputs += 1;
        match self.links[slot].server {
            ServerEnd::Closed => {}
            ServerEnd::Pending(p) => {
                let key = self.rng.key();
                match self.endpoint.route(now, p, msg, key) {
                    Ok(Placed::Session { handle, link, new }) => {
                        self.links[slot].server = ServerEnd::Session(handle, link);
                        let client = match self.links[slot].client {
                            ClientEnd::Session(i, _) => Some(i),
                            _ => None,
                        };
                        if new {
                            let epoch = client.map_or(u64::MAX, |i| self.clients[i].epoch());
                            let s = &mut self.servers[handle.index as usize];
                            s.handle = Some(handle);
                            s.announced = false;
                            s.client = client;
                            s.app.reset(epoch);
                        }
                        if let Some(i) = client {
                            self.clients[i].server = Some(handle);
                        }
                        self.drain_server(handle);
                    }
                    Ok(Placed::Reject(bytes)) => {
                        self.server_counters.rejects_written += 1;
                        self.tx[..LEN_PREFIX].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
                        self.tx[LEN_PREFIX..LEN_PREFIX + bytes.len()].copy_from_slice(&bytes);
                        let latency = self.cfg.latency;
                        let l = &mut self.links[slot];
                        if l.pipes[SERVER].write(now, latency, &self.tx[..LEN_PREFIX + bytes.len()]).is_err() {
                            self.fail("I6: a link pipe overflowed");
                        }
                        self.close_end(slot, SERVER);
                    }
                    Err(_) => {
                        self.server_counters.refused += 1;
                        self.close_end(slot, SERVER);
                    }
                }
                self.drain_endpoint();
            }
            ServerEnd::Session(h, link) => {
                let idx = h.index as usize;
                let Some(s) = self.endpoint.session_mut(h) else {
                    self.close_end(slot, SERVER);
                    return;
                };
                match s.handle_message(now, link, msg) {
                    Ok(Some(inc)) => {
                        if let Err(e) = self.servers[idx].app.on_incoming(s, now, inc) {
                            self.fail_fmt(format_args!("endpoint session {h:?}: {e}"));
                        }
                    }
                    Ok(None) => {}
                    Err(_) => self.server_counters.input_errors += 1,
                }
                self.drain_server(h);
            }
        }
        self.check_invariants();
    }

    /// Hand one link message that arrived at client `i` on `link`; drain and check.
    pub(crate) fn deliver_client(&mut self, i: usize, link: LinkId, msg: &[u8]) {
        let now = self.now;
        self.stats.inputs += 1;
        let c = &mut self.clients[i];
        match c.session.handle_message(now, link, msg) {
            Ok(Some(inc)) => {
                if let Err(e) = c.app.on_incoming(&mut c.session, now, inc) {
                    self.fail_fmt(format_args!("client {i}: {e}"));
                }
            }
            Ok(None) => {}
            Err(_) => c.counters.input_errors += 1,
        }
        self.drain_client(i);
        self.check_invariants();
    }

    /// End `end` of `slot` closes (after what it wrote): EOF to the other end, and its state
    /// machine hears `link_down` (or the endpoint `pending_closed`). The caller drains.
    pub(crate) fn close_end(&mut self, slot: usize, end: usize) {
        let now = self.now;
        let latency = self.cfg.latency;
        let l = &mut self.links[slot];
        if !l.end_open(end) {
            return;
        }
        l.pipes[end].close_write(now, latency);
        l.pipes[1 - end].reader_gone();
        if let Some(d) = l.decoders[end].as_mut() {
            d.reset();
        }
        let (client, server) = (l.client, l.server);
        if end == CLIENT {
            l.client = ClientEnd::Closed;
        } else {
            l.server = ServerEnd::Closed;
        }
        l.free_if_closed();
        self.stats.inputs += 1;
        if let ClientEnd::Session(i, _) = client {
            self.dirty_clients[i] = true;
        }
        if let ServerEnd::Session(h, _) = server {
            self.dirty_servers[h.index as usize] = true;
        }
        if end == CLIENT {
            if let ClientEnd::Session(i, link) = client {
                let c = &mut self.clients[i];
                if c.link.is_some_and(|(_, l)| l == link) {
                    c.link = None;
                }
                c.session.link_down(now, link);
            }
        } else {
            match server {
                ServerEnd::Pending(p) => self.endpoint.pending_closed(p),
                ServerEnd::Session(h, link) => {
                    if let Some(s) = self.endpoint.session_mut(h) {
                        s.link_down(now, link);
                    }
                }
                ServerEnd::Closed => {}
            }
        }
    }

    /// [`close_end`](Self::close_end), then drain whatever heard it, and check.
    pub(crate) fn close_and_drain(&mut self, slot: usize, end: usize) {
        let (client, server) = (self.links[slot].client, self.links[slot].server);
        self.close_end(slot, end);
        self.drain_after(
            if end == CLIENT { client } else { ClientEnd::Closed },
            if end == SERVER { server } else { ServerEnd::Closed },
        );
        self.check_invariants();
    }

    /// Drain the state machines behind these (former) ends.
    pub(crate) fn drain_after(&mut self, client: ClientEnd, server: ServerEnd) {
        if let ClientEnd::Session(i, _) = client {
            self.drain_client(i);
        }
        match server {
            ServerEnd::Session(h, _) => self.drain_server(h),
            ServerEnd::Pending(_) => self.drain_endpoint(),
            ServerEnd::Closed => {}
        }
    }

    /// The link in `slot` dies at once for both ends (a reset); both hear it.
    pub(crate) fn reset_link(&mut self, slot: usize) {
        self.stats.resets += 1;
        let (client, server) = (self.links[slot].client, self.links[slot].server);
        self.links[slot].pipes[CLIENT].blackhole();
        self.links[slot].pipes[SERVER].blackhole();
        self.close_end(slot, CLIENT);
        self.close_end(slot, SERVER);
        self.drain_after(client, server);
        self.check_invariants();
    }
}
