//! The simulated links and time: link ends going away, delivery of bytes between the ends,
//! routing through the endpoint, kills, reconnects and timers.

use crate::pair::Notify;
use crate::shared::{push_batch_part, Pipe};
use sotto_proto::endpoint::{Placed, SessionHandle};
use sotto_proto::session::{ConnId, DataBatch, Incoming, Session};
use sotto_proto::wire::Message;
use sotto_proto::{Duration, Instant, ResumeKey};

use super::model::App;
use super::{server_of, server_ref, SLink, Server, Sim};

/// An owned copy of an [`Incoming`] (the session borrows from the input buffer).
pub(super) enum Owned {
    Hello,
    Data(ConnId, Vec<u8>),
    /// A batch's body (`(varint(len) payload)+`), re-encoded from its messages.
    DataBatch(ConnId, Vec<u8>),
    Open(ConnId),
    Accepted(ConnId),
    Rejected(ConnId),
    Closed(ConnId),
    Finished(ConnId, bool),
}

pub(super) fn own(i: Incoming<'_>) -> Owned {
    match i {
        Incoming::PeerHello { .. } => Owned::Hello,
        Incoming::Data { conn, payload } => Owned::Data(conn, payload.to_vec()),
        Incoming::DataBatch { conn, batch } => {
            let mut body = Vec::new();
            for payload in batch {
                push_batch_part(&mut body, payload);
            }
            Owned::DataBatch(conn, body)
        }
        Incoming::Open { conn, .. } => Owned::Open(conn),
        Incoming::Accepted { conn, .. } => Owned::Accepted(conn),
        Incoming::Rejected { conn, .. } => Owned::Rejected(conn),
        Incoming::Closed { conn, .. } => Owned::Closed(conn),
        Incoming::Finished { conn, both } => Owned::Finished(conn, both),
    }
}

impl Owned {
    fn as_incoming(&self) -> Incoming<'_> {
        match self {
            Self::Hello => Incoming::PeerHello { metadata: &[] },
            Self::Data(conn, p) => Incoming::Data { conn: *conn, payload: p },
            Self::DataBatch(conn, body) => Incoming::DataBatch {
                conn: *conn,
                batch: DataBatch::parse(body).expect("re-encoded from a valid batch"),
            },
            Self::Open(conn) => Incoming::Open { conn: *conn, metadata: &[] },
            Self::Accepted(conn) => Incoming::Accepted { conn: *conn, metadata: &[] },
            Self::Rejected(conn) => Incoming::Rejected { conn: *conn, code: 0, metadata: &[] },
            Self::Closed(conn) => Incoming::Closed { conn: *conn, metadata: &[] },
            Self::Finished(conn, both) => Incoming::Finished { conn: *conn, both: *both },
        }
    }
}

impl Sim {
    /// `server`'s end of link `serial` goes away; the other end sees EOF after what is in
    /// flight, if the path still works.
    pub(super) fn close_end(&mut self, serial: u64, server: bool) {
        let now = self.now;
        let Some((p, i)) = self.find(serial) else { return };
        let link = &mut self.pairs[p].links[i];
        let pending = if server { link.pending.take() } else { None };
        let id = if server { link.b.take() } else { link.a.take() };
        let handle = link.handle;
        let (inbound, outbound) =
            if server { (&mut link.to_b, &mut link.to_a) } else { (&mut link.to_a, &mut link.to_b) };
        inbound.discard();
        if outbound.open {
            outbound.open = false;
            outbound.eof = true;
        }
        if let (Some(pl), Server::Endpoint(ep)) = (pending, &mut self.server) {
            ep.pending_closed(pl);
        }
        if let Some(id) = id {
            let s = if server { server_of(&mut self.server, handle) } else { Some(&mut self.pairs[p].client) };
            if let Some(s) = s {
                s.link_down(now, id);
            }
        }
        let l = &self.pairs[p].links[i];
        if l.a.is_none() && l.b.is_none() && l.pending.is_none() {
            self.pairs[p].links.remove(i);
        }
    }

    /// The application at `server`'s end of pairing `p` handles an input's result.
    pub(super) fn on_incoming(&mut self, p: usize, server: bool, inc: Incoming<'_>) {
        match inc {
            Incoming::PeerHello { .. } => {}
            Incoming::Data { conn, payload } => self.on_data(p, server, conn, payload),
            Incoming::DataBatch { conn, batch } => {
                // Each message of a batch is a delivery of its own, checked like Data.
                for payload in batch {
                    self.on_data(p, server, conn, payload);
                }
            }
            Incoming::Open { conn, .. } => self.app(p, server).pending_accept.push(conn),
            Incoming::Accepted { conn, .. } => {
                let app = self.app(p, server);
                assert!(app.opening.remove(&conn), "Accepted {conn} never opened");
                app.open.insert(conn);
            }
            Incoming::Rejected { conn, .. } => {
                assert!(self.app(p, server).opening.remove(&conn), "Rejected {conn} never opened");
            }
            // The peer's end of stream: everything it sent there came first, once.
            Incoming::Finished { conn, both } => {
                let sent = {
                    let peer = if server { &self.pairs[p].capp } else { &self.pairs[p].sapp };
                    peer.sent.get(&conn).map_or(0, Vec::len)
                };
                let app = self.app(p, server);
                let got = app.got.get(&conn).copied().unwrap_or(0);
                assert_eq!(got, sent, "I1: pairing {p} conn {conn}: Fin after {got} of {sent} payloads");
                assert!(app.peer_finished.insert(conn), "a second Fin on {conn} delivered");
                assert_eq!(both, app.finished_by_me.contains(&conn), "Finished {conn}: both {both}");
                if both {
                    app.open.remove(&conn);
                }
            }
            Incoming::Closed { conn, .. } => {
                let app = self.app(p, server);
                app.open.remove(&conn);
                app.opening.remove(&conn);
                app.pending_accept.retain(|&c| c != conn);
            }
        }
    }

    /// One data message delivered on `conn`: it must be the next one the peer sent there.
    pub(super) fn on_data(&mut self, p: usize, server: bool, conn: ConnId, payload: &[u8]) {
        assert!(!self.app(p, server).peer_finished.contains(&conn), "data on {conn} after the peer's Fin");
        let i = *self.app(p, server).got.get(&conn).unwrap_or(&0);
        let peer = if server { &self.pairs[p].capp } else { &self.pairs[p].sapp };
        let expected = peer.sent.get(&conn).and_then(|v| v.get(i));
        assert!(
            expected.is_some_and(|e| e.as_slice() == payload),
            "I1: pairing {p} conn {conn}: payload {i} toward {} is not the next one sent",
            if server { "the acceptor" } else { "the initiator" }
        );
        // What the message spent of the connection's credit is what the application gives
        // back once it has consumed it.
        let credit = self.session(p, server).map_or(payload.len(), |s| s.credit_of(payload.len()) as usize);
        let app = self.app(p, server);
        *app.got.entry(conn).or_default() += 1;
        let slow = app.slow.contains(&conn);
        *app.unreleased.entry(conn).or_default() += credit;
        if !slow {
            self.release(p, server, conn, usize::MAX);
        }
    }

    pub(super) fn release(&mut self, p: usize, server: bool, conn: ConnId, amount: usize) {
        let app = self.app(p, server);
        let held = app.unreleased.entry(conn).or_default();
        let n = amount.min(*held);
        *held -= n;
        if n > 0 {
            if let Some(s) = self.session(p, server) {
                let _ = s.release(conn, n);
            }
        }
    }

    /// Route the first message of pending link `serial` (endpoint mode).
    pub(super) fn route(&mut self, serial: u64, first: &[u8]) {
        let Some((p, i)) = self.find(serial) else { return };
        let Server::Endpoint(ep) = &mut self.server else { unreachable!("pending without an endpoint") };
        let Some(pl) = self.pairs[p].links[i].pending.take() else { return };
        self.keys += 1;
        let mut key = [0x3cu8; 16];
        key[..8].copy_from_slice(&self.keys.to_le_bytes());
        if self.trace {
            if let Some(s) = self.pairs[p].handle.and_then(|h| ep.session(h)) {
                let c = s.conduit();
                eprintln!(
                    "  routing {p}: session key {:?} ended {:?} detached {:?} sent {} acked {} received {}",
                    c.resume_key(),
                    c.ended(),
                    c.detached_since(),
                    c.items_sent(),
                    c.items_acked(),
                    c.items_received()
                );
            }
        }
        let r = ep.route(self.now, pl, first, ResumeKey(key));
        if self.trace {
            eprintln!("  route {p} -> {r:?}");
        }
        match r {
            Ok(Placed::Session { handle, link, new }) => {
                let pr = &mut self.pairs[p];
                if new && pr.links[i].a.is_none() {
                    // A fresh dial on a link the initiator has since given up: an orphan
                    // session from birth (the endpoint lets it expire).
                } else if new {
                    // A fresh dial: the initiator never got a ServerHello, so it has no
                    // session state worth keeping. The acceptor's orphan may have been
                    // announced (a version-4 acceptor is ready as it answers an early Hello)
                    // and used by its application; nothing of it reached the initiator, and
                    // it ends by its resume window. The pairing follows the new session.
                    assert!(pr.capp.open.is_empty() && pr.capp.sent.is_empty(), "fresh dial after data");
                    assert!(pr.capp.got.is_empty(), "the initiator got data of a session it never attached");
                    pr.handle = Some(handle);
                    pr.sapp = App::default();
                    pr.lost = false;
                } else {
                    assert_eq!(pr.handle, Some(handle), "pairing {p} resumed into another session");
                }
                pr.links[i].b = Some(link);
                pr.links[i].handle = Some(handle);
            }
            Ok(Placed::Reject(bytes)) => {
                let pr = &mut self.pairs[p];
                // A hello on a link the initiator gave up may be a stale duplicate (an older
                // key and position) that the endpoint rightly refuses; on the link it holds,
                // REJECTED means its session is gone.
                // A fresh hello finds every slot taken by sessions still attached (orphans of
                // earlier fresh dials whose EOF is not read yet): the endpoint is full (the
                // `endpoint` target checks when that may happen). A session whose session
                // handshake never finished may be given up by the endpoint (at its deadline,
                // or past `MAX_UNREADY_RESUMES` resumes): its initiator then starts afresh.
                let held = pr.links[i].a.is_some();
                let fresh = sotto_proto::wire::ClientHello::decode(first).is_ok_and(|h| h.resume_key.is_none());
                assert!(
                    !held || fresh || pr.lost || pr.handle.is_none() || !pr.capp.ready,
                    "pairing {p} REJECTED while its session lives"
                );
                if held {
                    pr.lost = true;
                }
                pr.links[i].to_a.write(&bytes);
                self.close_end(serial, true);
            }
            Err(e) => panic!("honest ClientHello refused: {e:?}"),
        }
    }

    /// The link carrying traffic toward one end of pairing `p`: the initiator's, or the
    /// newest the acceptor side holds.
    pub(super) fn held(&self, p: usize, server: bool) -> Option<u64> {
        let links = &self.pairs[p].links;
        if server {
            links.iter().rev().find(|l| l.b.is_some() || l.pending.is_some()).map(|l| l.serial)
        } else {
            links.iter().find(|l| l.a.is_some()).map(|l| l.serial)
        }
    }

    /// Deliver up to `n` bytes toward one end of pairing `p`; whether anything happened.
    pub(super) fn deliver(&mut self, p: usize, server: bool, n: usize) -> bool {
        let Some(serial) = self.held(p, server) else { return false };
        self.deliver_on(serial, server, n)
    }

    pub(super) fn deliver_on(&mut self, serial: u64, server: bool, n: usize) -> bool {
        let Some((p, i)) = self.find(serial) else { return false };
        let link = &mut self.pairs[p].links[i];
        if !(if server { link.b.is_some() || link.pending.is_some() } else { link.a.is_some() }) {
            return false;
        }
        let pipe = if server { &mut link.to_b } else { &mut link.to_a };
        let chunk = pipe.take(n);
        let at_eof = pipe.data.is_empty() && pipe.eof;
        let mut input: &[u8] = &chunk;
        let mut messages = Vec::new();
        loop {
            match pipe.dec.decode(&mut input) {
                Ok(Some(Message::Whole(m))) => messages.push(m.to_vec()),
                Ok(Some(Message::Reassembled)) => messages.push(pipe.dec.reassembled().to_vec()),
                Ok(None) => break,
                Err(e) => panic!("honest peer wrote a bad link message: {e}"),
            }
        }
        let moved = !chunk.is_empty() || at_eof;
        let now = self.now;
        for m in messages {
            let Some((p, i)) = self.find(serial) else { return true };
            let l = &self.pairs[p].links[i];
            if server && l.pending.is_some() {
                self.route(serial, &m);
                self.drain();
                continue;
            }
            let (id, handle) = (if server { l.b } else { l.a }, l.handle);
            let Some(id) = id else { return true };
            let current = !server || !self.config.endpoint || handle == self.pairs[p].handle;
            let s = if server { server_of(&mut self.server, handle) } else { Some(&mut self.pairs[p].client) };
            let Some(s) = s else { return true };
            let r = s.handle_message(now, id, &m);
            if self.trace {
                eprintln!("  {p} {} <- {:02x?}: {r:?}", if server { 'S' } else { 'C' }, &m[..m.len().min(24)]);
            }
            if let (Ok(Some(inc)), true) = (r, current) {
                let owned = own(inc);
                self.on_incoming(p, server, owned.as_incoming());
            }
            self.drain();
        }
        if at_eof {
            let still = self.find(serial).is_some_and(|(p, i)| {
                let l = &self.pairs[p].links[i];
                let pipe = if server { &l.to_b } else { &l.to_a };
                pipe.data.is_empty()
                    && pipe.eof
                    && if server { l.b.is_some() || l.pending.is_some() } else { l.a.is_some() }
            });
            if still {
                self.close_end(serial, server);
                self.drain();
            }
        }
        moved
    }

    pub(super) fn deliver_all(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            let serials: Vec<u64> = self.pairs.iter().flat_map(|pr| &pr.links).map(|l| l.serial).collect();
            for serial in serials {
                moved |= self.deliver_on(serial, false, usize::MAX);
                moved |= self.deliver_on(serial, true, usize::MAX);
            }
            if !moved {
                return;
            }
        }
        panic!("deliveries never settle");
    }

    pub(super) fn reconnect(&mut self, p: usize) {
        let now = self.now;
        let la = self.pairs[p].client.link_up(now, ResumeKey::ZERO);
        let mfl = self.max_frame_len;
        self.serials += 1;
        let serial = self.serials;
        self.pairs[p].links.push(SLink {
            serial,
            handle: None,
            a: Some(la),
            b: None,
            pending: None,
            to_a: Pipe::new(mfl),
            to_b: Pipe::new(mfl),
        });
        self.drain();
        let Some((p, i)) = self.find(serial) else { return };
        if self.pairs[p].links[i].a.is_none() {
            // The initiator dropped it at once (its session is over).
            self.close_end(serial, false);
            return;
        }
        match &mut self.server {
            Server::Single(s) => {
                self.keys += 1;
                let mut key = [0xa5u8; 16];
                key[..8].copy_from_slice(&self.keys.to_le_bytes());
                let lb = s.link_up(now, ResumeKey(key));
                self.pairs[p].links[i].b = Some(lb);
            }
            Server::Endpoint(ep) => match ep.accept_link(now, 1000 + p as u64) {
                Ok(pl) => self.pairs[p].links[i].pending = Some(pl),
                Err(e) => {
                    // Links the initiator gave up still wait for their EOF to be read: the
                    // pending table may be full. The link is closed unread.
                    assert_eq!(e, sotto_proto::endpoint::LinkRefusal::TooManyPendingHandshakes);
                    let l = &mut self.pairs[p].links[i];
                    l.to_b.discard();
                    l.to_a.open = false;
                    l.to_a.eof = true;
                }
            },
        }
        self.drain();
    }

    pub(super) fn kill(&mut self, p: usize, at_to_b: u16, at_to_a: u16, notify: Notify) {
        let (na, nb) = match notify {
            Notify::Both => (true, true),
            Notify::AOnly => (true, false),
            Notify::BOnly => (false, true),
            Notify::Neither => (false, false),
        };
        for l in &mut self.pairs[p].links {
            l.to_b.truncate(usize::from(at_to_b));
            l.to_a.truncate(usize::from(at_to_a));
            l.to_b.open = false;
            l.to_a.open = false;
            l.to_b.eof |= nb;
            l.to_a.eof |= na;
        }
    }

    pub(super) fn all_sessions_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut add = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for pr in &self.pairs {
            add(pr.client.poll_timeout());
            add(server_ref(&self.server, pr.handle).and_then(Session::poll_timeout));
        }
        if let Server::Endpoint(ep) = &self.server {
            add(ep.poll_timeout());
        }
        next
    }

    pub(super) fn fire(&mut self, t: Instant) {
        self.now = self.now.max(t);
        let now = self.now;
        for p in 0..self.pairs.len() {
            self.pairs[p].client.handle_timeout(now);
        }
        match &mut self.server {
            Server::Single(s) => s.handle_timeout(now),
            Server::Endpoint(ep) => {
                ep.handle_timeout(now);
                let hs: Vec<SessionHandle> = ep.handles().collect();
                for h in hs {
                    if let Some(s) = ep.session_mut(h) {
                        s.handle_timeout(now);
                    }
                }
            }
        }
        self.drain();
        if let Some(n) = self.all_sessions_timeout() {
            assert!(n > now, "poll_timeout {n:?} not after handle_timeout({now:?})");
        }
    }

    pub(super) fn advance(&mut self, d: Duration) {
        let target = self.now.saturating_add(d);
        for _ in 0..100_000 {
            match self.all_sessions_timeout() {
                Some(t) if t <= target => {
                    assert!(t >= self.now, "deadline in the past");
                    self.fire(t);
                }
                _ => {
                    self.now = target;
                    return;
                }
            }
        }
        panic!("timers fire forever");
    }
}
