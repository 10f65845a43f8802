//! Endpoint unit tests: routing, limits, handles.

use super::*;
use crate::conduit::{ConduitConfig, Event, LinkId, Role, SessionEnd};
use crate::session::{SessionEvent, SessionInputError};
use alloc::vec;

fn small() -> EndpointConfig {
    let conduit =
        ConduitConfig { replay_bytes: 1 << 16, replay_frames: 64, max_frame_len: 1 << 16, ..Default::default() };
    EndpointConfig {
        session: SessionConfig { conduit, max_connections: 4, ..Default::default() },
        max_sessions: 4,
        max_pending_handshakes: 2,
        max_detached_sessions: 2,
        ..Default::default()
    }
}

fn key(n: u8) -> ResumeKey {
    ResumeKey([n; 16])
}

/// Run one initiator link against the endpoint: returns the handle it was routed to.
struct Client {
    s: Session,
    link: Option<LinkId>,
    server: Option<(SessionHandle, LinkId)>,
}

impl Client {
    fn new(cfg: &EndpointConfig) -> Self {
        Self { s: Session::new(Role::Initiator, cfg.session, b"c").expect("config"), link: None, server: None }
    }

    /// Attach a fresh link through the endpoint and pump until quiet.
    fn attach(&mut self, ep: &mut Hosted, now: Instant, k: ResumeKey) -> Result<Placed, LinkRefusal> {
        let link = self.s.link_up(now, ResumeKey::ZERO);
        self.link = Some(link);
        let mut buf = vec![0u8; 1 << 16];
        let t = self.s.poll_transmit(now, &mut buf).expect("client hello");
        let pending = ep.accept_link(now, 7)?;
        let routed = ep.route(now, pending, &buf[..t.len], k)?;
        match routed {
            Placed::Session { handle, link, .. } => {
                self.server = Some((handle, link));
                self.pump(ep, now);
            }
            Placed::Reject(bytes) => {
                let r = self.s.handle_message(now, link, &bytes);
                assert!(matches!(r, Err(SessionInputError::Conduit(_))));
            }
        }
        Ok(routed)
    }

    fn pump(&mut self, ep: &mut Hosted, now: Instant) {
        let mut buf = vec![0u8; 1 << 16];
        for _ in 0..1000 {
            let mut moved = false;
            while let Some(t) = self.s.poll_transmit(now, &mut buf) {
                moved = true;
                if let (Some((h, sl)), true) = (self.server, Some(t.link) == self.link) {
                    if let Some(srv) = ep.session_mut(h) {
                        let _ = srv.handle_message(now, sl, &buf[..t.len]);
                    }
                }
            }
            if let Some((h, sl)) = self.server {
                if let Some(srv) = ep.session_mut(h) {
                    while let Some(t) = srv.poll_transmit(now, &mut buf) {
                        moved = true;
                        if let (Some(cl), true) = (self.link, t.link == sl) {
                            let _ = self.s.handle_message(now, cl, &buf[..t.len]);
                        }
                    }
                    while let Some(e) = srv.poll_event() {
                        moved = true;
                        if let SessionEvent::Conduit(Event::DropLink { link, .. }) = e {
                            srv.link_down(now, link);
                        }
                    }
                }
            }
            while self.s.poll_event().is_some() {
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    fn cut(&mut self, ep: &mut Hosted, now: Instant) {
        if let Some(l) = self.link.take() {
            self.s.link_down(now, l);
        }
        if let Some((h, sl)) = self.server {
            if let Some(srv) = ep.session_mut(h) {
                srv.link_down(now, sl);
            }
        }
    }
}

#[test]
fn fresh_then_resume_routes_to_same_session() {
    let cfg = small();
    let mut ep = Hosted::new(cfg, b"srv").expect("config");
    let mut c = Client::new(&cfg);
    let r = c.attach(&mut ep, Instant::ZERO, key(1)).expect("routed");
    let Placed::Session { handle, new: true, .. } = r else { panic!("fresh session expected: {r:?}") };
    assert!(c.s.is_ready());
    c.cut(&mut ep, Instant::ZERO);
    let r = c.attach(&mut ep, Instant::ZERO, key(2)).expect("routed");
    assert_eq!(r, Placed::Session { handle, link: LinkId(2), new: false }, "resume reaches the same slot");
    assert_eq!(ep.stats().resumes_routed, 1);
    assert_eq!(c.s.conduit().resume_key(), Some(key(2)));
}

#[test]
fn r7_resume_supersedes_half_open_link() {
    let cfg = small();
    let mut ep = Hosted::new(cfg, b"").expect("config");
    let mut c = Client::new(&cfg);
    c.attach(&mut ep, Instant::ZERO, key(1)).expect("routed");
    let (h, old_link) = c.server.expect("server side");
    // The client thinks the link died; the server never saw EOF.
    if let Some(l) = c.link.take() {
        c.s.link_down(Instant::ZERO, l);
    }
    c.attach(&mut ep, Instant::ZERO, key(2)).expect("routed");
    let srv = ep.session_mut(h).expect("live");
    assert!(srv.conduit().is_established());
    assert_ne!(srv.conduit().current_link(), Some(old_link));
    assert_eq!(srv.conduit().stats().link_drops.superseded, 1);
}

#[test]
fn r14_unknown_key_gets_fixed_reject_and_counts() {
    let cfg = small();
    let mut ep = Hosted::new(cfg, b"").expect("config");
    let hello = ClientHello { resume_key: Some(key(9)), last_received: Some(3), ext: true, early: false };
    let p = ep.accept_link(Instant::ZERO, 1).expect("pending");
    let r = ep.route(Instant::ZERO, p, &hello.encode(), key(1)).expect("routed");
    assert_eq!(r, Placed::Reject(ServerHello::rejected().encode()));
    assert_eq!(ep.stats().rejected, 1);
    assert_eq!(ep.stats().sessions_live, 0);
}

#[test]
fn h2_bad_magic_creates_nothing() {
    let cfg = small();
    let mut ep = Hosted::new(cfg, b"").expect("config");
    let mut bytes = ClientHello { resume_key: None, last_received: None, ext: true, early: false }.encode();
    bytes[0] = b'X';
    let p = ep.accept_link(Instant::ZERO, 1).expect("pending");
    assert_eq!(ep.route(Instant::ZERO, p, &bytes, key(1)), Err(LinkRefusal::BadHello(WireError::BadMagic)));
    assert_eq!(ep.stats().sessions_live, 0);
    assert_eq!(ep.stats().bad_hellos, 1);
}

#[test]
fn h9_pending_flood_refused_and_h7_expiry_frees_slots() {
    let cfg = small();
    let mut ep = Hosted::new(cfg, b"").expect("config");
    let a = ep.accept_link(Instant::ZERO, 1).expect("pending");
    let _b = ep.accept_link(Instant::ZERO, 2).expect("pending");
    assert_eq!(ep.accept_link(Instant::ZERO, 3), Err(LinkRefusal::TooManyPendingHandshakes));
    assert_eq!(ep.poll_timeout(), Some(Instant::ZERO.saturating_add(Duration::from_secs(10))));
    ep.handle_timeout(Instant::from_nanos(9_999_999_999));
    assert_eq!(ep.poll_event(), None, "no timer fires early");
    ep.handle_timeout(Instant::ZERO.saturating_add(Duration::from_secs(10)));
    assert_eq!(ep.poll_event(), Some(HostedEvent::Endpoint(EndpointEvent::HandshakeExpired(a))));
    assert!(matches!(ep.poll_event(), Some(HostedEvent::Endpoint(EndpointEvent::HandshakeExpired(_)))));
    assert_eq!(ep.poll_event(), None);
    ep.accept_link(Instant::ZERO.saturating_add(Duration::from_secs(10)), 4).expect("slot freed");
    // The expired handle is stale.
    assert_eq!(ep.route(Instant::ZERO, a, &[], key(1)), Err(LinkRefusal::UnknownPending));
}

#[test]
fn stale_handle_never_aliases() {
    let cfg = small();
    let mut ep = Hosted::new(cfg, b"").expect("config");
    let mut c = Client::new(&cfg);
    let Ok(Placed::Session { handle, .. }) = c.attach(&mut ep, Instant::ZERO, key(1)) else { panic!("routed") };
    ep.free(Instant::ZERO, handle);
    assert!(ep.session(handle).is_none());
    let mut c2 = Client::new(&cfg);
    let Ok(Placed::Session { handle: h2, .. }) = c2.attach(&mut ep, Instant::ZERO, key(2)) else { panic!("routed") };
    assert_eq!(h2.index, handle.index, "slot reused");
    assert!(ep.session(handle).is_none(), "old handle stays stale");
    assert!(ep.session(h2).is_some());
    // The freed session's key no longer routes.
    c.cut(&mut ep, Instant::ZERO);
    assert!(matches!(c.attach(&mut ep, Instant::ZERO, key(3)), Ok(Placed::Reject(_))));
}

#[test]
fn l2_detached_beyond_cap_evicts_oldest() {
    let cfg = small();
    let mut ep = Hosted::new(cfg, b"").expect("config");
    let mut handles = vec![];
    for i in 0..3u8 {
        let now = Instant::from_nanos(u64::from(i) * 1000);
        let mut c = Client::new(&cfg);
        let Ok(Placed::Session { handle, .. }) = c.attach(&mut ep, now, key(i + 1)) else { panic!("routed") };
        assert_eq!(ep.poll_event(), Some(HostedEvent::SessionReady(handle)));
        c.cut(&mut ep, now);
        handles.push(handle);
    }
    assert_eq!(ep.poll_event(), Some(HostedEvent::Endpoint(EndpointEvent::Evicted(handles[0]))));
    assert_eq!(ep.poll_event(), None);
    assert_eq!(ep.session(handles[0]).and_then(|s| s.conduit().ended()), Some(SessionEnd::Evicted));
    assert_eq!(ep.stats().evicted, 1);
}

#[test]
fn l3_failed_resumes_rate_limited_per_source() {
    let mut cfg = small();
    cfg.max_pending_handshakes = 64;
    cfg.failure_budget = 3;
    let mut ep = Hosted::new(cfg, b"").expect("config");
    let hello = ClientHello { resume_key: Some(key(9)), last_received: None, ext: true, early: false }.encode();
    for _ in 0..3 {
        let p = ep.accept_link(Instant::ZERO, 42).expect("pending");
        assert!(matches!(ep.route(Instant::ZERO, p, &hello, key(1)), Ok(Placed::Reject(r)) if r.len() <= hello.len()));
    }
    assert_eq!(ep.accept_link(Instant::ZERO, 42), Err(LinkRefusal::RateLimited));
    ep.accept_link(Instant::ZERO, 43).expect("other source unaffected");
}

#[test]
fn max_sessions_full_rejects_fresh() {
    let cfg = small();
    let mut ep = Hosted::new(cfg, b"").expect("config");
    for i in 0..4u8 {
        let mut c = Client::new(&cfg);
        assert!(matches!(c.attach(&mut ep, Instant::ZERO, key(i + 1)), Ok(Placed::Session { .. })));
    }
    let mut c = Client::new(&cfg);
    assert!(matches!(c.attach(&mut ep, Instant::ZERO, key(77)), Ok(Placed::Reject(_))));
    assert_eq!(c.s.conduit().ended(), Some(SessionEnd::Full), "told full, not an unknown key");
}

#[test]
fn r15_retired_key_is_rejected_without_disturbing_the_live_link() {
    let cfg = small();
    let mut ep = Hosted::new(cfg, b"").expect("config");
    let mut c = Client::new(&cfg);
    c.attach(&mut ep, Instant::ZERO, key(1)).expect("routed");
    c.cut(&mut ep, Instant::ZERO);
    c.attach(&mut ep, Instant::ZERO, key(2)).expect("resumed with key 1, issued key 2");
    // A frame on the new link proves key 2 arrived: key 1 is retired.
    c.s.send(crate::session::ROOT, b"x").expect("send");
    c.pump(&mut ep, Instant::ZERO);
    let (h, live) = c.server.expect("routed");
    let hello = ClientHello { resume_key: Some(key(1)), last_received: None, ext: true, early: false };
    let p = ep.accept_link(Instant::ZERO, 9).expect("pending");
    let r = ep.route(Instant::ZERO, p, &hello.encode(), key(3));
    assert_eq!(r, Ok(Placed::Reject(ServerHello::rejected().encode())), "refused like an unknown key");
    let srv = ep.session(h).expect("live");
    assert_eq!(srv.conduit().current_link(), Some(live), "the live link stays");
    assert_eq!(srv.conduit().stats().link_drops.superseded, 0);
    assert!(srv.conduit().is_established());
    assert_eq!(ep.stats().rejected, 1);
}

#[test]
fn a_sotto_initiator_told_full_ends_full_and_one_told_rejected_ends_rejected() {
    let cfg = small();
    for (reply, end) in
        [(ServerHello::rejected_full(), SessionEnd::Full), (ServerHello::rejected(), SessionEnd::Rejected)]
    {
        let mut c = Session::new(Role::Initiator, cfg.session, b"c").expect("config");
        let link = c.link_up(Instant::ZERO, ResumeKey::ZERO);
        let mut buf = vec![0u8; 1 << 16];
        while c.poll_transmit(Instant::ZERO, &mut buf).is_some() {}
        let _ = c.handle_message(Instant::ZERO, link, &reply.encode());
        assert_eq!(c.conduit().ended(), Some(end));
    }
}

#[test]
fn resume_with_the_previous_key_reissues_the_current_key() {
    let cfg = small();
    let mut ep = Hosted::new(cfg, b"").expect("config");
    let mut c = Client::new(&cfg);
    c.attach(&mut ep, Instant::ZERO, key(1)).expect("routed");
    c.cut(&mut ep, Instant::ZERO);
    c.attach(&mut ep, Instant::ZERO, key(2)).expect("resumed with key 1, issued key 2");
    let (h, _) = c.server.expect("routed");
    // A stale duplicate of that resume (still presenting key 1, which stays valid until key 2
    // is used, and the same position) must not rotate key 2 away from the client that holds it.
    let position = c.s.conduit().items_received().checked_sub(1).map(|n| n as u32);
    let hello = ClientHello { resume_key: Some(key(1)), last_received: position, ext: true, early: false };
    let p = ep.accept_link(Instant::ZERO, 9).expect("pending");
    let r = ep.route(Instant::ZERO, p, &hello.encode(), key(3)).expect("routed");
    assert!(matches!(r, Placed::Session { handle, new: false, .. } if handle == h));
    assert_eq!(ep.session(h).and_then(|s| s.conduit().resume_key()), Some(key(2)), "key 2 issued again");
    // The client, holding key 2, resumes.
    c.cut(&mut ep, Instant::ZERO);
    let r = c.attach(&mut ep, Instant::ZERO, key(4)).expect("routed");
    assert!(matches!(r, Placed::Session { handle, new: false, .. } if handle == h), "{r:?}");
    assert!(c.s.is_ready() && !c.s.is_ended());
    assert_eq!(c.s.conduit().resume_key(), Some(key(4)));
}

#[test]
fn stale_resume_with_the_previous_key_and_an_old_position_is_refused() {
    let cfg = small();
    let mut ep = Hosted::new(cfg, b"").expect("config");
    let mut c = Client::new(&cfg);
    c.attach(&mut ep, Instant::ZERO, key(1)).expect("routed");
    c.cut(&mut ep, Instant::ZERO);
    c.attach(&mut ep, Instant::ZERO, key(2)).expect("resumed with key 1, issued key 2");
    let (h, live) = c.server.expect("routed");
    // Key 1 with a position behind what the session trimmed (it knows the client got its
    // HelloYourself): a stale duplicate, refused like an unknown key; the session lives on.
    assert!(ep.session(h).is_some_and(|s| s.conduit().items_acked() > 0));
    let hello = ClientHello { resume_key: Some(key(1)), last_received: None, ext: true, early: false };
    let p = ep.accept_link(Instant::ZERO, 9).expect("pending");
    let r = ep.route(Instant::ZERO, p, &hello.encode(), key(3));
    assert_eq!(r, Ok(Placed::Reject(ServerHello::rejected().encode())));
    let srv = ep.session(h).expect("live");
    assert!(!srv.is_ended());
    assert_eq!(srv.conduit().current_link(), Some(live));
}

#[test]
fn full_endpoint_reclaims_the_oldest_detached_session_for_a_new_one() {
    let cfg = small();
    let mut ep = Hosted::new(cfg, b"").expect("config");
    let mut handles = vec![];
    let mut clients = vec![];
    for i in 0..4u8 {
        let now = Instant::from_nanos(u64::from(i) * 1000);
        let mut c = Client::new(&cfg);
        let Ok(Placed::Session { handle, .. }) = c.attach(&mut ep, now, key(i + 1)) else { panic!("routed") };
        handles.push(handle);
        clients.push(c);
    }
    while ep.poll_event().is_some() {}
    // Two sessions lose their links; the one detached first is the one reclaimed.
    clients[2].cut(&mut ep, Instant::from_nanos(5000));
    clients[1].cut(&mut ep, Instant::from_nanos(6000));
    let mut c = Client::new(&cfg);
    let now = Instant::from_nanos(7000);
    let Ok(Placed::Session { handle, new: true, .. }) = c.attach(&mut ep, now, key(50)) else { panic!("routed") };
    assert_eq!(handle.index, handles[2].index);
    assert_eq!(ep.poll_event(), Some(HostedEvent::Endpoint(EndpointEvent::Reclaimed(handles[2]))));
    assert!(ep.session(handles[2]).is_none(), "the reclaimed handle is stale");
    assert!(ep.session(handles[1]).is_some(), "the younger detached session stays");
    assert!(c.s.is_ready());
    // The evicted session's owner is rejected when it comes back.
    assert!(matches!(clients[2].attach(&mut ep, now, key(51)), Ok(Placed::Reject(_))));
}

fn fresh_hello() -> [u8; HELLO_LEN] {
    ClientHello { resume_key: None, last_received: None, ext: true, early: false }.encode()
}

/// A fresh ClientHello from `source` at `arrived`, routed at `routed`; nothing more is fed.
fn unready_session(ep: &mut Hosted, arrived: Instant, routed: Instant, source: u64, k: ResumeKey) -> SessionHandle {
    let p = ep.accept_link(arrived, source).expect("pending");
    let Ok(Placed::Session { handle, new: true, .. }) = ep.route(routed, p, &fresh_hello(), k) else { panic!("new") };
    handle
}

#[test]
fn new_session_is_reported_ready_once_and_never_expires() {
    let cfg = small();
    let mut ep = Hosted::new(cfg, b"").expect("config");
    let mut c = Client::new(&cfg);
    let Ok(Placed::Session { handle, .. }) = c.attach(&mut ep, Instant::ZERO, key(1)) else { panic!("routed") };
    assert!(ep.session(handle).is_some_and(Session::is_ready));
    assert_eq!(ep.poll_event(), Some(HostedEvent::SessionReady(handle)));
    assert_eq!(ep.poll_event(), None, "reported once");
    assert_eq!(ep.poll_timeout(), None, "no handshake deadline left");
    ep.handle_timeout(Instant::ZERO.saturating_add(Duration::from_secs(3600)));
    assert_eq!(ep.poll_event(), None);
    assert!(ep.session(handle).is_some_and(|s| !s.is_ended()));
    let st = ep.stats();
    assert_eq!((st.sessions_ready, st.session_handshakes_expired, st.sessions_live), (1, 0, 1));
    // A resume of a ready session reports nothing new.
    c.cut(&mut ep, Instant::ZERO);
    c.attach(&mut ep, Instant::ZERO, key(2)).expect("resumed");
    assert_eq!(ep.poll_event(), None);
}

#[test]
fn unready_session_is_freed_at_its_link_deadline_and_charged() {
    let mut cfg = small();
    cfg.failure_budget = 2;
    cfg.failure_period = Duration::from_secs(60);
    let mut ep = Hosted::new(cfg, b"").expect("config");
    let t0 = Instant::from_nanos(1000);
    let deadline = t0.saturating_add(cfg.handshake_timeout);
    // The ClientHello comes 4 s after the link: the deadline still counts from the link.
    let h = unready_session(&mut ep, t0, t0.saturating_add(Duration::from_secs(4)), 5, key(1));
    assert_eq!(ep.poll_event(), None);
    assert_eq!(ep.poll_timeout(), Some(deadline));
    ep.handle_timeout(Instant::from_nanos(deadline.as_nanos() - 1));
    assert_eq!(ep.poll_event(), None, "nothing fires early");
    assert!(ep.session(h).is_some());
    ep.handle_timeout(deadline);
    assert_eq!(ep.poll_event(), Some(HostedEvent::Endpoint(EndpointEvent::SessionHandshakeExpired(h))));
    assert_eq!(ep.poll_event(), None);
    assert!(ep.session(h).is_none(), "freed: the handle is stale");
    assert_eq!(ep.poll_timeout(), None);
    let st = ep.stats();
    assert_eq!((st.session_handshakes_expired, st.sessions_ready, st.sessions_live), (1, 0, 0));
    // Its key no longer routes.
    let resume = ClientHello { resume_key: Some(key(1)), last_received: None, ext: true, early: false }.encode();
    let p = ep.accept_link(deadline, 6).expect("pending");
    assert!(matches!(ep.route(deadline, p, &resume, key(2)), Ok(Placed::Reject(_))));
    // The source was charged: a second expiry spends its budget of 2.
    let h2 = unready_session(&mut ep, deadline, deadline, 5, key(3));
    let later = deadline.saturating_add(cfg.handshake_timeout);
    ep.handle_timeout(later);
    assert_eq!(ep.poll_event(), Some(HostedEvent::Endpoint(EndpointEvent::SessionHandshakeExpired(h2))));
    assert_eq!(ep.accept_link(later, 5), Err(LinkRefusal::RateLimited));
    ep.accept_link(later, 7).expect("other sources unaffected");
}

#[test]
fn slot_of_an_expired_session_is_reused_with_a_new_generation() {
    let mut cfg = small();
    cfg.max_sessions = 1;
    let mut ep = Hosted::new(cfg, b"").expect("config");
    let h = unready_session(&mut ep, Instant::ZERO, Instant::ZERO, 5, key(1));
    let deadline = Instant::ZERO.saturating_add(cfg.handshake_timeout);
    // The one slot is held by the unready session: a new client is refused until it expires.
    let p = ep.accept_link(Instant::ZERO, 6).expect("pending");
    assert!(matches!(ep.route(Instant::ZERO, p, &fresh_hello(), key(2)), Ok(Placed::Reject(_))));
    ep.handle_timeout(deadline);
    assert_eq!(ep.poll_event(), Some(HostedEvent::Endpoint(EndpointEvent::SessionHandshakeExpired(h))));
    let mut c = Client::new(&cfg);
    let Ok(Placed::Session { handle, new: true, .. }) = c.attach(&mut ep, deadline, key(3)) else { panic!("new") };
    assert_eq!(handle.index, h.index);
    assert_ne!(handle, h);
    assert_eq!(ep.poll_event(), Some(HostedEvent::SessionReady(handle)));
    assert!(ep.session(h).is_none());
}

#[test]
fn unready_session_that_ends_by_itself_is_forgotten_without_an_event() {
    let mut cfg = small();
    cfg.failure_budget = 1;
    let mut ep = Hosted::new(cfg, b"").expect("config");
    let h = unready_session(&mut ep, Instant::ZERO, Instant::ZERO, 5, key(1));
    ep.session_mut(h).expect("live").conduit_end(Instant::ZERO, SessionEnd::Evicted);
    assert_eq!(ep.poll_event(), None);
    assert_eq!(ep.poll_timeout(), None, "its handshake deadline is gone");
    ep.handle_timeout(Instant::ZERO.saturating_add(cfg.handshake_timeout));
    assert_eq!(ep.poll_event(), None);
    assert!(ep.session(h).is_some(), "still the driver's to free");
    assert_eq!(ep.stats().session_handshakes_expired, 0);
    ep.accept_link(Instant::ZERO, 5).expect("not charged");
}

#[test]
fn session_ready_at_the_deadline_is_reported_ready_not_expired() {
    let cfg = small();
    let mut ep = Hosted::new(cfg, b"").expect("config");
    let deadline = Instant::ZERO.saturating_add(cfg.handshake_timeout);
    let mut c = Client::new(&cfg);
    // The whole handshake happens at the deadline, before the endpoint's events are drained.
    let p = ep.accept_link(Instant::ZERO, 7).expect("pending");
    let link = c.s.link_up(deadline, ResumeKey::ZERO);
    c.link = Some(link);
    let mut buf = vec![0u8; 1 << 16];
    let t = c.s.poll_transmit(deadline, &mut buf).expect("client hello");
    let Ok(Placed::Session { handle, link: sl, .. }) = ep.route(deadline, p, &buf[..t.len], key(1)) else {
        panic!("routed")
    };
    c.server = Some((handle, sl));
    c.pump(&mut ep, deadline);
    ep.handle_timeout(deadline);
    assert_eq!(ep.poll_event(), Some(HostedEvent::SessionReady(handle)));
    assert_eq!(ep.poll_event(), None);
    assert_eq!(ep.stats().session_handshakes_expired, 0);
}

fn resume_hello(k: ResumeKey) -> [u8; HELLO_LEN] {
    ClientHello { resume_key: Some(k), last_received: None, ext: true, early: false }.encode()
}

fn at(secs: u64) -> Instant {
    Instant::ZERO.saturating_add(Duration::from_secs(secs))
}

/// A new session whose initiator has the ServerHello and whose Hello the acceptor read (so
/// the peer holds the key), its HelloYourself never delivered: unready, link `at(0)`. The
/// initiator speaks version 3 (a version-4 acceptor is ready as it answers a version-4
/// Hello; with an older initiator it waits for LetsGo).
fn spoken_unready_session(ep: &mut Hosted, cfg: &EndpointConfig, k: ResumeKey) -> (Session, SessionHandle) {
    let mut c = Session::speaking(Role::Initiator, cfg.session, b"c", 3).expect("config");
    let cl = c.link_up(at(0), ResumeKey::ZERO);
    let mut buf = vec![0u8; 1 << 16];
    let t = c.poll_transmit(at(0), &mut buf).expect("client hello");
    let p = ep.accept_link(at(0), 5).expect("pending");
    let Ok(Placed::Session { handle, link: sl, new: true }) = ep.route(at(0), p, &buf[..t.len], k) else {
        panic!("new")
    };
    // The ServerHello reaches the initiator; its Hello reaches the acceptor; nothing more.
    let t = ep.session_mut(handle).and_then(|s| s.poll_transmit(at(0), &mut buf)).expect("server hello");
    let _ = c.handle_message(at(0), cl, &buf[..t.len]);
    let t = c.poll_transmit(at(0), &mut buf).expect("hello frame");
    let srv = ep.session_mut(handle).expect("live");
    let _ = srv.handle_message(at(0), sl, &buf[..t.len]);
    assert!(!srv.is_ready() && srv.conduit().items_received() == 1, "acceptor read the Hello only");
    srv.link_down(at(5), sl);
    (c, handle)
}

/// The finding of docs/simulation.md: links dying during the session handshake must not
/// cost the session once the peer holds its key. While detached, the unready session is held
/// like any detached one; a resume gives the handshake a fresh deadline from the resuming
/// link's arrival.
#[test]
fn unready_session_deadline_pauses_while_detached_and_restarts_on_resume() {
    let cfg = small();
    let mut ep = Hosted::new(cfg, b"").expect("config");
    // The peer spoke, then the link died 5 s in: the deadline stops.
    let (_c, h) = spoken_unready_session(&mut ep, &cfg, key(1));
    assert_eq!(ep.poll_event(), None);
    assert_eq!(ep.poll_timeout(), None, "no handshake deadline while detached");
    ep.handle_timeout(at(30));
    assert_eq!(ep.poll_event(), None, "not expired while detached, past the first deadline");
    assert!(ep.session(h).is_some_and(|s| !s.is_ended()));
    // The initiator's link arrives at 30 s, its ClientHello at 31 s: 10 s from the arrival.
    let p = ep.accept_link(at(30), 5).expect("pending");
    let r = ep.route(at(31), p, &resume_hello(key(1)), key(2));
    assert!(matches!(r, Ok(Placed::Session { handle, new: false, .. }) if handle == h), "{r:?}");
    assert_eq!(ep.poll_event(), None);
    assert_eq!(ep.poll_timeout(), Some(at(40)));
    ep.handle_timeout(Instant::from_nanos(at(40).as_nanos() - 1));
    assert_eq!(ep.poll_event(), None);
    ep.handle_timeout(at(40));
    assert_eq!(ep.poll_event(), Some(HostedEvent::Endpoint(EndpointEvent::SessionHandshakeExpired(h))));
    assert_eq!(ep.stats().session_handshakes_expired, 1);
}

/// A session whose peer never spoke may be an orphan (its ServerHello lost, its initiator
/// holding no key): its deadline runs from the first link's arrival through link losses.
#[test]
fn unready_session_whose_peer_never_spoke_expires_at_its_first_deadline_while_detached() {
    let cfg = small();
    let mut ep = Hosted::new(cfg, b"").expect("config");
    let h = unready_session(&mut ep, at(0), at(0), 5, key(1));
    let link = ep.session(h).and_then(|s| s.conduit().current_link()).expect("attached");
    ep.session_mut(h).expect("live").link_down(at(1), link);
    assert_eq!(ep.poll_event(), None);
    assert_eq!(ep.poll_timeout(), Some(at(10)), "still running while detached");
    ep.handle_timeout(at(10));
    assert_eq!(ep.poll_event(), Some(HostedEvent::Endpoint(EndpointEvent::SessionHandshakeExpired(h))));
}

/// A resume shows the peer holds the key: the deadline of a session whose peer never spoke
/// restarts from the resuming link's arrival, and stops while detached from then on.
#[test]
fn resume_of_an_unready_session_whose_peer_never_spoke_restarts_its_deadline() {
    let cfg = small();
    let mut ep = Hosted::new(cfg, b"").expect("config");
    let h = unready_session(&mut ep, at(0), at(0), 5, key(1));
    let link = ep.session(h).and_then(|s| s.conduit().current_link()).expect("attached");
    ep.session_mut(h).expect("live").link_down(at(1), link);
    assert_eq!(ep.poll_event(), None);
    let p = ep.accept_link(at(5), 5).expect("pending");
    let r = ep.route(at(5), p, &resume_hello(key(1)), key(2));
    assert!(matches!(r, Ok(Placed::Session { handle, new: false, .. }) if handle == h), "{r:?}");
    assert_eq!(ep.poll_event(), None);
    assert_eq!(ep.poll_timeout(), Some(at(15)), "restarted from the resuming link");
    let link = ep.session(h).and_then(|s| s.conduit().current_link()).expect("attached");
    ep.session_mut(h).expect("live").link_down(at(6), link);
    assert_eq!(ep.poll_event(), None);
    assert_eq!(ep.poll_timeout(), None, "keyed now: stopped while detached");
    ep.handle_timeout(at(60));
    assert_eq!(ep.poll_event(), None);
    assert!(ep.session(h).is_some_and(|s| !s.is_ended()));
}

/// A peer that keeps reconnecting without finishing its handshake cannot hold a slot
/// forever: the resume past `MAX_UNREADY_RESUMES` is refused and the session freed, its
/// source charged. Each resume (here superseding a live link) restarts the deadline.
#[test]
fn unready_session_is_freed_after_max_unready_resumes() {
    let mut cfg = small();
    cfg.failure_budget = 1;
    let mut ep = Hosted::new(cfg, b"").expect("config");
    let h = unready_session(&mut ep, at(0), at(0), 5, key(1));
    let mut k = key(1);
    for i in 1..=MAX_UNREADY_RESUMES {
        let now = at(u64::from(i) * 5);
        let p = ep.accept_link(now, 5).expect("pending");
        let next = key(1 + i as u8);
        let r = ep.route(now, p, &resume_hello(k), next);
        assert!(matches!(r, Ok(Placed::Session { handle, new: false, .. }) if handle == h), "resume {i}: {r:?}");
        assert_eq!(ep.poll_event(), None);
        assert_eq!(ep.poll_timeout(), Some(now.saturating_add(cfg.handshake_timeout)), "restarted by resume {i}");
        k = next;
    }
    let now = at(u64::from(MAX_UNREADY_RESUMES + 1) * 5);
    let p = ep.accept_link(now, 5).expect("pending");
    let r = ep.route(now, p, &resume_hello(k), key(99));
    assert!(matches!(r, Ok(Placed::Reject(_))), "{r:?}");
    assert_eq!(ep.poll_event(), Some(HostedEvent::Endpoint(EndpointEvent::SessionHandshakeExpired(h))));
    assert!(ep.session(h).is_none());
    let st = ep.stats();
    assert_eq!((st.session_handshakes_expired, st.sessions_live), (1, 0));
    assert_eq!(ep.accept_link(now, 5), Err(LinkRefusal::RateLimited), "its source was charged");
}

// ---- The endpoint on its own: sessions owned by the caller ----

/// Move frames between two sessions until quiet (one link each).
fn pump_pair(now: Instant, a: &mut Session, al: LinkId, b: &mut Session, bl: LinkId) {
    let mut buf = vec![0u8; 1 << 16];
    for _ in 0..1000 {
        let mut moved = false;
        while let Some(t) = a.poll_transmit(now, &mut buf) {
            moved = true;
            if t.link == al {
                let _ = b.handle_message(now, bl, &buf[..t.len]);
            }
        }
        while let Some(t) = b.poll_transmit(now, &mut buf) {
            moved = true;
            if t.link == bl {
                let _ = a.handle_message(now, al, &buf[..t.len]);
            }
        }
        while a.poll_event().is_some() || b.poll_event().is_some() {
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

/// A fresh session through `ep`: the initiator, the acceptor session the caller now owns,
/// its handle and both link ids.
fn open_owned(
    ep: &mut Endpoint,
    cfg: &EndpointConfig,
    now: Instant,
    k: ResumeKey,
) -> (Session, Session, SessionHandle) {
    let mut client = Session::new(Role::Initiator, cfg.session, b"c").expect("config");
    let cl = client.link_up(now, ResumeKey::ZERO);
    let mut buf = vec![0u8; 1 << 16];
    let t = client.poll_transmit(now, &mut buf).expect("client hello");
    let p = ep.accept_link(now, 7).expect("pending");
    let Ok(Routed::New { handle, hello, key }) = ep.route(now, p, &buf[..t.len], k) else { panic!("new") };
    let mut server = Session::new(Role::Acceptor, cfg.session, b"s").expect("config");
    let (sl, r) = server.link_up_with_hello(now, key, &hello);
    r.expect("fresh hello accepted");
    pump_pair(now, &mut client, cl, &mut server, sl);
    assert!(client.is_ready() && server.is_ready());
    assert!(ep.session_ready(handle));
    (client, server, handle)
}

#[test]
fn construction_with_100k_max_sessions_allocates_nothing_per_session() {
    let cfg = EndpointConfig { max_sessions: 100_000, ..EndpointConfig::default() };
    let ep = Endpoint::new(cfg).expect("config");
    assert_eq!(ep.sessions.capacity(), 0);
    assert_eq!(ep.sessions_free.capacity(), 0);
    assert_eq!(ep.pending.capacity(), 0);
    assert_eq!(ep.pending_deadlines.capacity(), 0);
    assert_eq!(ep.unready_deadlines.capacity(), 0);
    assert_eq!(ep.keys.capacity(), 0);
    assert_eq!(ep.detached.capacity(), 0);
}

#[test]
fn a_thousand_sessions_detached_at_once_are_all_kept_with_the_default_config() {
    let cfg = EndpointConfig::default();
    let mut ep = Endpoint::new(cfg).expect("config");
    let hello = fresh_hello();
    let mut handles = vec![];
    for i in 0..1000u32 {
        let mut k = [0u8; 16];
        k[..4].copy_from_slice(&(i + 1).to_le_bytes());
        let p = ep.accept_link(Instant::ZERO, u64::from(i)).expect("pending");
        let Ok(Routed::New { handle, .. }) = ep.route(Instant::ZERO, p, &hello, ResumeKey(k)) else { panic!("new") };
        assert!(ep.session_ready(handle));
        handles.push((handle, ResumeKey(k)));
    }
    // Every link is cut at once.
    let cut = Instant::from_nanos(5_000);
    for (h, _) in &handles {
        ep.detached(*h, cut);
    }
    assert_eq!(ep.poll_event(), None, "nothing evicted");
    let st = ep.stats();
    assert_eq!((st.sessions_detached, st.sessions_live, st.evicted), (1000, 1000, 0));
    // Each one's key still routes to it.
    for (h, k) in &handles {
        let resume = ClientHello { resume_key: Some(*k), last_received: None, ext: true, early: false }.encode();
        let p = ep.accept_link(cut, 1).expect("pending");
        let Ok(Routed::Resume(r)) = ep.route(cut, p, &resume, key(0xEE)) else { panic!("resume") };
        assert_eq!(r.handle(), *h);
    }
}

#[test]
fn refused_resume_never_touches_the_live_link_and_is_charged() {
    let mut cfg = small();
    cfg.failure_budget = 1;
    let mut ep = Endpoint::new(cfg).expect("config");
    let (_client, mut server, h) = open_owned(&mut ep, &cfg, Instant::ZERO, key(1));
    let live = server.conduit().current_link();
    // A resume presenting key 1, which still routes to the session in the endpoint's index,
    // while the session itself has moved on to key 2 (as after a resume whose new key was
    // used): the session, not the index, is the authority.
    let hello = ClientHello { resume_key: Some(key(1)), last_received: Some(u32::MAX - 5), ext: true, early: false };
    let p = ep.accept_link(Instant::ZERO, 9).expect("pending");
    let Ok(Routed::Resume(resume)) = ep.route(Instant::ZERO, p, &hello.encode(), key(3)) else { panic!("resume") };
    assert_eq!(resume.handle(), h);
    server.conduit.previous_key = None;
    server.conduit.key = Some(key(2));
    let outcome = resume.apply_to_session(Instant::ZERO, &mut server);
    assert_eq!(outcome, ResumeOutcome::Refused);
    assert_eq!(server.conduit().current_link(), live, "the live link stays");
    assert_eq!(server.conduit().stats().link_drops.superseded, 0);
    assert!(server.conduit().is_established());
    let reply = ep.resume_outcome(Instant::ZERO, &resume, &outcome);
    assert_eq!(reply, Some(ServerHello::rejected().encode()));
    assert_eq!(ep.stats().rejected, 1);
    assert_eq!(ep.accept_link(Instant::ZERO, 9), Err(LinkRefusal::RateLimited), "its source was charged");
}

#[test]
fn full_acceptor_refuses_a_fresh_hello_as_full_not_as_an_unknown_key() {
    let mut cfg = small();
    cfg.max_sessions = 1;
    let mut ep = Endpoint::new(cfg).expect("config");
    let (_client, _server, _h) = open_owned(&mut ep, &cfg, Instant::ZERO, key(1));
    let p = ep.accept_link(Instant::ZERO, 8).expect("pending");
    let r = ep.route(Instant::ZERO, p, &fresh_hello(), key(2));
    assert_eq!(
        r,
        Ok(Routed::Reject { reply: ServerHello::rejected_full().encode(), reason: RejectReason::Full }),
        "a sotto initiator (EXT) is told the acceptor is full"
    );
    let st = ep.stats();
    assert_eq!((st.rejected_full, st.rejected), (1, 0));
    // A vox initiator (no EXT) sees the plain REJECTED, byte for byte.
    let vox = ClientHello { resume_key: None, last_received: None, ext: false, early: false }.encode();
    let p = ep.accept_link(Instant::ZERO, 8).expect("pending");
    let r = ep.route(Instant::ZERO, p, &vox, key(4));
    assert_eq!(r, Ok(Routed::Reject { reply: ServerHello::rejected().encode(), reason: RejectReason::Full }));
    assert_eq!(ep.stats().rejected_full, 2);
    let unknown = ClientHello { resume_key: Some(key(9)), last_received: None, ext: true, early: false }.encode();
    let p = ep.accept_link(Instant::ZERO, 8).expect("pending");
    let r = ep.route(Instant::ZERO, p, &unknown, key(3));
    assert!(matches!(r, Ok(Routed::Reject { reason: RejectReason::UnknownKey, .. })));
    assert_eq!(ep.stats().rejected, 1);
}

#[test]
fn one_source_holds_at_most_its_pending_quota_and_others_still_get_in() {
    let cfg = EndpointConfig { max_pending_handshakes: 8, max_pending_per_source: 3, ..small() };
    let mut ep = Endpoint::new(cfg).expect("config");
    let t0 = Instant::ZERO;
    let held: Vec<PendingLink> = (0..3).map(|_| ep.accept_link(t0, 7).expect("within the quota")).collect();
    assert!(!ep.source_has_room(7), "at its quota");
    assert_eq!(ep.accept_link(t0, 7), Err(LinkRefusal::SourcePendingQuota), "the fourth from one source");
    assert_eq!(ep.stats().source_quota_refused, 1);
    assert!(ep.source_has_room(9) && ep.source_has_room(0), "other sources, and the unknown one, have room");
    assert_eq!(ep.stats().links_refused, 1);
    // Another source is not affected by the first one's quota.
    for _ in 0..3 {
        ep.accept_link(t0, 9).expect("another source");
    }
    // A freed slot gives the source room again (closed, routed or expired alike).
    ep.pending_closed(held[0]);
    assert!(ep.source_has_room(7), "a slot freed");
    ep.accept_link(t0, 7).expect("room again after one closed");
    let _ = ep.route(t0, held[1], &[0u8; 3], key(1));
    ep.accept_link(t0, 7).expect("room again after one was routed");
    assert_eq!(ep.accept_link(t0, 7), Err(LinkRefusal::SourcePendingQuota));
    // Source 0 (unknown) has only the global cap.
    let mut ep = Endpoint::new(cfg).expect("config");
    for _ in 0..8 {
        ep.accept_link(t0, 0).expect("unknown source: global cap only");
    }
    assert_eq!(ep.accept_link(t0, 0), Err(LinkRefusal::TooManyPendingHandshakes));
}

#[test]
fn a_silent_link_is_freed_and_counted_but_not_charged_to_its_source() {
    let cfg = EndpointConfig { failure_budget: 2, ..small() };
    let mut ep = Endpoint::new(cfg).expect("config");
    let t0 = Instant::ZERO;
    for n in 0..4 {
        let p = ep.accept_link(t0, 5).expect("silent links do not spend the failure budget");
        ep.pending_silent(t0, p);
        assert_eq!(ep.stats().first_byte_expired, n + 1);
        assert_eq!(ep.stats().handshakes_expired, n + 1);
        assert_eq!(ep.stats().pending_links, 0, "its slot is free");
        ep.pending_silent(t0, p); // stale: ignored
    }
    // A whole expired handshake (bytes came, no hello by the deadline) is still charged.
    let cfg = EndpointConfig { failure_budget: 1, ..small() };
    let mut ep = Endpoint::new(cfg).expect("config");
    let _p = ep.accept_link(t0, 5).expect("pending");
    ep.handle_timeout(t0.saturating_add(cfg.handshake_timeout));
    assert_eq!(ep.accept_link(t0.saturating_add(cfg.handshake_timeout), 5), Err(LinkRefusal::RateLimited));
}

#[test]
fn a_link_failed_before_its_hello_is_freed_counted_and_charged_to_its_source() {
    let cfg = EndpointConfig { failure_budget: 2, ..small() };
    let mut ep = Endpoint::new(cfg).expect("config");
    let t0 = Instant::ZERO;
    for n in 0..2 {
        let p = ep.accept_link(t0, 5).expect("within budget");
        ep.pending_failed(t0, p);
        assert_eq!(ep.stats().pending_failed, n + 1);
        assert_eq!(ep.stats().handshakes_expired, 0, "not an expiry");
        assert_eq!(ep.stats().pending_links, 0, "its slot is free");
        ep.pending_failed(t0, p); // stale: ignored
        assert_eq!(ep.stats().pending_failed, n + 1);
    }
    assert_eq!(ep.accept_link(t0, 5), Err(LinkRefusal::RateLimited), "charged to the source");
    ep.accept_link(t0, 6).expect("another source is not charged");
}

#[test]
fn a_zero_pending_quota_is_a_config_error() {
    let cfg = EndpointConfig { max_pending_per_source: 0, ..small() };
    assert!(Endpoint::new(cfg).is_err());
}

fn tagged(worker: u16, epoch: u32) -> Issuer {
    Issuer::new([0x5a; 16], epoch, worker, 4).expect("issuer")
}

fn tagged_hello(k: ResumeKey, ext: bool) -> [u8; HELLO_LEN] {
    ClientHello { resume_key: Some(k), last_received: None, ext, early: false }.encode()
}

#[test]
fn a_key_of_another_worker_is_forwarded_uncharged_and_routes_there() {
    let cfg = EndpointConfig { failure_budget: 2, ..small() };
    let (mut w0, mut w1) = (Endpoint::new(cfg).expect("config"), Endpoint::new(cfg).expect("config"));
    w0.set_issuer(Some(tagged(0, 9)));
    w1.set_issuer(Some(tagged(1, 9)));
    let k1 = w1.mint_key(&[3; 16]);
    let (_client, _server, h) = open_owned(&mut w1, &cfg, Instant::ZERO, k1);
    // Far more resumes than the failure budget land on worker 0: each is passed on, none charged.
    for _ in 0..8 {
        let p = w0.accept_link(Instant::ZERO, 7).expect("never rate-limited");
        let r = w0.route(Instant::ZERO, p, &tagged_hello(k1, true), w0.mint_key(&[4; 16]));
        assert!(matches!(r, Ok(Routed::Forward { worker: 1, .. })), "{r:?}");
    }
    assert_eq!(w0.stats().forwarded, 8);
    // On worker 1 the same hello reaches the session.
    let p = w1.accept_link(Instant::ZERO, 7).expect("pending");
    let r = w1.route(Instant::ZERO, p, &tagged_hello(k1, true), w1.mint_key(&[5; 16]));
    assert!(matches!(r, Ok(Routed::Resume(ref res)) if res.handle() == h), "{r:?}");
}

#[test]
fn a_key_of_an_earlier_run_is_answered_issuer_gone_at_once_and_never_charged() {
    let cfg = EndpointConfig { failure_budget: 2, ..small() };
    let old = tagged(2, 1);
    let mut ep = Endpoint::new(cfg).expect("config");
    ep.set_issuer(Some(tagged(0, 2)));
    for i in 0..50u8 {
        let p = ep.accept_link(Instant::ZERO, 7).expect("a restart's resumes never rate-limit their source");
        let r = ep.route(Instant::ZERO, p, &tagged_hello(old.mint(&[i; 16]), i % 2 == 0), key(1));
        let want = if i % 2 == 0 { ServerHello::rejected_issuer_gone() } else { ServerHello::rejected() };
        assert_eq!(r, Ok(Routed::Reject { reply: want.encode(), reason: RejectReason::IssuerGone }));
    }
    let st = ep.stats();
    assert_eq!((st.rejected_issuer_gone, st.rejected), (50, 0));
    // Adopting the old epoch (its sessions were handed over) routes its keys again.
    ep.issuer_mut().expect("issuer").adopt(1).expect("adopt");
    let p = ep.accept_link(Instant::ZERO, 8).expect("pending");
    let r = ep.route(Instant::ZERO, p, &tagged_hello(old.mint(&[0; 16]), true), key(1));
    assert!(matches!(r, Ok(Routed::Forward { worker: 2, .. })), "old worker 2 is worker 2 of 4 now: {r:?}");
}

#[test]
fn a_forged_key_is_charged_as_a_guess_and_the_source_is_refused_past_its_budget() {
    let cfg = EndpointConfig { failure_budget: 3, ..small() };
    let mut ep = Endpoint::new(cfg).expect("config");
    ep.set_issuer(Some(tagged(0, 2)));
    for i in 0..3u8 {
        let p = ep.accept_link(Instant::ZERO, 7).expect("within the budget");
        let r = ep.route(Instant::ZERO, p, &tagged_hello(key(i + 1), true), key(9));
        assert!(matches!(r, Ok(Routed::Reject { reason: RejectReason::UnknownKey, .. })), "{r:?}");
    }
    assert_eq!(ep.accept_link(Instant::ZERO, 7), Err(LinkRefusal::RateLimited));
    assert!(ep.accept_link(Instant::ZERO, 8).is_ok(), "another source still gets in");
}

#[test]
fn a_tagged_endpoint_mints_keys_of_its_worker_and_epoch() {
    let mut ep = Endpoint::new(small()).expect("config");
    assert_eq!(ep.mint_key(&[1; 16]), key(1), "untagged: the randomness itself");
    ep.set_issuer(Some(tagged(3, 77)));
    let k = ep.mint_key(&[1; 16]);
    assert_eq!(tagged(0, 77).open(&k), Some(KeyTag { worker: 3, epoch: 77 }));
}

#[test]
fn a_resuming_sotto_initiator_told_issuer_gone_ends_issuer_gone_and_a_fresh_one_ends_rejected() {
    let cfg = small();
    let mut ep = Endpoint::new(cfg).expect("config");
    let (mut c, _server, _h) = open_owned(&mut ep, &cfg, Instant::ZERO, key(1));
    let mut buf = vec![0u8; 1 << 16];
    let link = c.link_up(Instant::ZERO, key(1));
    while c.poll_transmit(Instant::ZERO, &mut buf).is_some() {}
    let _ = c.handle_message(Instant::ZERO, link, &ServerHello::rejected_issuer_gone().encode());
    assert_eq!(c.conduit().ended(), Some(SessionEnd::IssuerGone), "a resume is told its issuer is gone");
    // A fresh session cannot have an issuer gone: that reason on a first hello is a plain REJECTED.
    let mut f = Session::new(Role::Initiator, cfg.session, b"c").expect("config");
    let link = f.link_up(Instant::ZERO, ResumeKey::ZERO);
    while f.poll_transmit(Instant::ZERO, &mut buf).is_some() {}
    let _ = f.handle_message(Instant::ZERO, link, &ServerHello::rejected_issuer_gone().encode());
    assert_eq!(f.conduit().ended(), Some(SessionEnd::Rejected));
}

proptest::proptest! {
    /// Whatever key a resume presents to a worker of a group, routing is total: another
    /// worker's key is passed there (never to itself), an earlier run's key is answered
    /// issuer-gone and never charged, anything else is charged as a guess.
    #[test]
    fn a_tagged_endpoint_routes_any_presented_key_to_one_defined_outcome(
        keys in proptest::collection::vec((0u8..4, proptest::prelude::any::<[u8; 16]>()), 1..40),
    ) {
        let cfg = EndpointConfig { failure_budget: u32::MAX, ..small() };
        let mut ep = Endpoint::new(cfg).expect("config");
        ep.set_issuer(Some(tagged(1, 50)));
        let old = tagged(2, 49);
        let (mut forwarded, mut gone, mut charged) = (0u64, 0u64, 0u64);
        for (kind, bytes) in keys {
            let presented = match kind {
                0 => tagged(3, 50).mint(&bytes),
                1 => old.mint(&bytes),
                2 => ep.mint_key(&bytes),
                _ => ResumeKey(bytes),
            };
            if presented.is_zero() {
                continue;
            }
            let p = ep.accept_link(Instant::ZERO, 7).expect("pending");
            let r = ep.route(Instant::ZERO, p, &tagged_hello(presented, true), key(1)).expect("a valid hello routes");
            match r {
                Routed::Forward { worker, .. } => {
                    proptest::prop_assert_eq!(worker, 3);
                    forwarded += 1;
                }
                Routed::Reject { reason: RejectReason::IssuerGone, .. } => gone += 1,
                Routed::Reject { reason: RejectReason::UnknownKey, .. } => charged += 1,
                other => proptest::prop_assert!(false, "unexpected {other:?}"),
            }
        }
        let st = ep.stats();
        proptest::prop_assert_eq!((st.forwarded, st.rejected_issuer_gone, st.rejected), (forwarded, gone, charged));
    }
}

#[test]
fn a_pending_link_reports_the_deadline_it_was_accepted_under_until_its_slot_is_freed() {
    let mut ep = Endpoint::new(small()).expect("config");
    let at = Instant::from_nanos(5);
    let p = ep.accept_link(at, 1).expect("pending");
    assert_eq!(ep.pending_deadline(p), Some(at.saturating_add(Duration::from_secs(10))));
    ep.pending_closed(p);
    assert_eq!(ep.pending_deadline(p), None, "a freed slot has no deadline");
    let q = ep.accept_link(at, 1).expect("pending");
    assert_eq!(ep.pending_deadline(p), None, "a stale handle to a reused slot has none");
    assert!(ep.pending_deadline(q).is_some());
}
