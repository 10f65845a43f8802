//! Sessions that move between acceptors (issue 17, handoff): an endpoint adopts a session
//! imported from another one ([`Endpoint::adopt`]) and releases one it handed off
//! ([`Endpoint::release`]).

use super::{Endpoint, SessionHandle};
use crate::conduit::{Conduit, Role};
use crate::time::Instant;
use crate::wire::ResumeKey;

/// Why [`Endpoint::adopt`] refused a session. The session was not adopted: its sender keeps
/// it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdoptError {
    /// `max_sessions` sessions are live, or `max_detached_sessions` are detached: adopting
    /// one would take the place of a session this endpoint holds.
    Full,
    /// Not an acceptor's session with a resume key (an initiator's, one that never had a
    /// link, or one that has ended): no peer could resume it here.
    NotAdoptable,
    /// It has a link: an adopted session waits detached for its peer's resume (an imported
    /// session always does).
    Attached,
    /// One of its resume keys already routes to a session here: adopting it would give a key
    /// two owners.
    KeyInUse,
    /// The endpoint is a worker of an acceptor group ([`Endpoint::set_issuer`]) and one of
    /// the session's keys does not route to it: untagged, issued by another worker, or by a
    /// run of the group it does not serve (adopt that epoch first, [`Issuer::adopt`](super::Issuer::adopt)).
    /// Adopted anyway, the peer's resume would be forwarded elsewhere or answered REJECTED:
    /// the session would have no owner.
    NotRoutedHere,
}

impl core::fmt::Display for AdoptError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Full => f.write_str("the endpoint has no room for another session"),
            Self::NotAdoptable => f.write_str("not an acceptor's session with a resume key"),
            Self::Attached => f.write_str("the session has a link"),
            Self::KeyInUse => f.write_str("a resume key of the session already routes to another session"),
            Self::NotRoutedHere => f.write_str("a resume key of the session does not route to this worker"),
        }
    }
}

impl core::error::Error for AdoptError {}

impl Endpoint {
    /// Adopt a session imported from another acceptor ([`Session::import`](crate::session::Session::import)
    /// or [`Conduit::import`]), detached and waiting for its peer's resume: from now on its
    /// resume keys (current and previous, [`Conduit::resume_keys`]) route to the returned
    /// handle, and it counts as a live, detached session (subject to `max_detached_sessions`
    /// eviction like any other, by the time it detached). It is ready: no handshake deadline
    /// applies. Its owner drives it as any session routed by [`route`](Self::route)
    /// (resumes come as [`Routed::Resume`](super::Routed::Resume)), reports
    /// [`attached`](Self::attached) when the peer resumes, and [`free`](Self::free)s it when
    /// it ends.
    ///
    /// Refused, with nothing changed, when the endpoint is full (no session is reclaimed for
    /// it), when the session is not an acceptor's detached session with a key, when one of
    /// its keys already routes here, or, on a worker of a group, when one of its keys does
    /// not route to this worker ([`AdoptError::NotRoutedHere`]).
    pub fn adopt(&mut self, now: Instant, conduit: &Conduit) -> Result<SessionHandle, AdoptError> {
        let now = self.clock.observe(now);
        if conduit.role() != Role::Acceptor || conduit.is_ended() || !conduit.ever_attached {
            return Err(AdoptError::NotAdoptable);
        }
        let keys = conduit.resume_keys();
        if keys[0].is_none_or(|k| k.ct_eq(&ResumeKey::ZERO)) {
            return Err(AdoptError::NotAdoptable);
        }
        if conduit.current_link().is_some() {
            return Err(AdoptError::Attached);
        }
        let since = conduit.detached_since().unwrap_or(now);
        if keys.iter().flatten().any(|k| self.keys.get(k).is_some()) {
            return Err(AdoptError::KeyInUse);
        }
        // A worker of a group reads a presented key's tag before its index (`route`): each
        // key must name this worker, or the peer's resume never reaches the session.
        if let Some(issuer) = &self.issuer {
            if keys.iter().flatten().any(|k| issuer.classify(k) != super::KeyOrigin::Here) {
                return Err(AdoptError::NotRoutedHere);
            }
        }
        if self.sessions_live >= self.config.max_sessions
            || self.detached.len() >= self.config.max_detached_sessions as usize
        {
            return Err(AdoptError::Full);
        }
        let index = self.take_session_slot();
        let slot = &mut self.sessions[index];
        slot.generation = slot.generation.wrapping_add(1);
        slot.live = true;
        slot.forgotten = false;
        slot.keys = keys;
        slot.unready = None;
        slot.detached_since = Some(since);
        let handle = SessionHandle { index: index as u32, generation: slot.generation };
        self.sessions_live += 1;
        for k in keys.into_iter().flatten() {
            self.keys.insert(k, handle.index);
        }
        self.detached.set(handle.index, since);
        self.stats.sessions_adopted += 1;
        Ok(handle)
    }

    /// Release a session handed off to another acceptor that adopted it: its keys stop
    /// routing here at once (a resume presenting them is answered as an unknown key), it
    /// no longer counts, and the handle becomes stale. Its owner must not drive it again
    /// (drop it, or end it with [`SessionEnd::HandedOff`](crate::SessionEnd::HandedOff)).
    /// Returns whether `handle` named a live session.
    pub fn release(&mut self, handle: SessionHandle) -> bool {
        if !self.is_live(handle) {
            return false;
        }
        self.free(handle);
        self.stats.sessions_released += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::{EndpointConfig, RejectReason, Routed};
    use crate::wire::ClientHello;
    use crate::Duration;

    fn at(ms: u64) -> Instant {
        Instant::from_nanos(Duration::from_millis(ms).as_nanos())
    }

    /// An acceptor conduit that had a link (key `key`) and lost it, as an import makes one.
    fn detached(key: u8) -> Conduit {
        let config = EndpointConfig::default().session.conduit;
        let mut c = Conduit::new(Role::Acceptor, config).expect("config");
        let hello = ClientHello { resume_key: None, last_received: None, ext: true, early: false };
        let (link, r) = c.link_up_with_hello(at(1), ResumeKey([key; 16]), &hello);
        assert!(r.is_ok());
        c.link_down(at(2), link);
        c
    }

    fn route(ep: &mut Endpoint, key: u8) -> Routed {
        let p = ep.accept_link(at(3), 0).expect("pending");
        let hello =
            ClientHello { resume_key: Some(ResumeKey([key; 16])), last_received: Some(0), ext: true, early: false };
        ep.route(at(3), p, &hello.encode(), ResumeKey([0xee; 16])).expect("routed")
    }

    #[test]
    fn an_adopted_sessions_key_routes_to_it_and_a_released_one_no_longer_does() {
        let mut ep = Endpoint::new(EndpointConfig::default()).expect("config");
        let c = detached(5);
        let h = ep.adopt(at(2), &c).expect("adopted");
        assert!(ep.is_live(h));
        assert_eq!(ep.stats().sessions_detached, 1, "adopted detached");
        match route(&mut ep, 5) {
            Routed::Resume(r) => assert_eq!(r.handle(), h),
            other => panic!("expected a resume, got {other:?}"),
        }
        assert!(ep.release(h));
        assert!(!ep.release(h), "released once");
        assert!(matches!(route(&mut ep, 5), Routed::Reject { reason: RejectReason::UnknownKey, .. }));
        let st = ep.stats();
        assert_eq!((st.sessions_adopted, st.sessions_released, st.sessions_live), (1, 1, 0));
    }

    #[test]
    fn adopt_refuses_a_key_in_use_a_full_endpoint_and_a_session_without_key_or_attached() {
        let mut ep = Endpoint::new(EndpointConfig { max_sessions: 1, ..EndpointConfig::default() }).expect("config");
        let c = detached(5);
        ep.adopt(at(2), &c).expect("adopted");
        assert_eq!(ep.adopt(at(2), &c), Err(AdoptError::KeyInUse), "never two owners of a key");
        assert_eq!(ep.adopt(at(2), &detached(6)), Err(AdoptError::Full));
        let mut ep = Endpoint::new(EndpointConfig::default()).expect("config");
        let fresh = Conduit::new(Role::Acceptor, ep.config().session.conduit).expect("config");
        assert_eq!(ep.adopt(at(2), &fresh), Err(AdoptError::NotAdoptable));
        let init = Conduit::new(Role::Initiator, ep.config().session.conduit).expect("config");
        assert_eq!(ep.adopt(at(2), &init), Err(AdoptError::NotAdoptable));
        let mut linked = Conduit::new(Role::Acceptor, ep.config().session.conduit).expect("config");
        let hello = ClientHello { resume_key: None, last_received: None, ext: true, early: false };
        let _ = linked.link_up_with_hello(at(1), ResumeKey([7; 16]), &hello);
        assert_eq!(ep.adopt(at(2), &linked), Err(AdoptError::Attached));
        assert_eq!(ep.stats().sessions_live, 0, "nothing adopted");
    }

    /// An acceptor conduit that had a link under key `key` and lost it.
    fn detached_with(key: ResumeKey) -> Conduit {
        let config = EndpointConfig::default().session.conduit;
        let mut c = Conduit::new(Role::Acceptor, config).expect("config");
        let hello = ClientHello { resume_key: None, last_received: None, ext: true, early: false };
        let (link, r) = c.link_up_with_hello(at(1), key, &hello);
        assert!(r.is_ok());
        c.link_down(at(2), link);
        c
    }

    #[test]
    fn a_worker_of_a_group_adopts_only_sessions_whose_keys_route_to_it() {
        use crate::endpoint::{Issuer, KeyOrigin};
        let secret = [9; 16];
        let w0 = Issuer::new(secret, 7, 0, 2).expect("issuer");
        let mut ep = Endpoint::new(EndpointConfig::default()).expect("config");
        ep.set_issuer(Some(w0.clone()));
        // Untagged (a sender without an issuer), another worker's, an earlier run's: each
        // would be answered REJECTED or forwarded at the peer's resume, so none is adopted.
        let untagged = ResumeKey([5; 16]);
        assert_eq!(w0.classify(&untagged), KeyOrigin::Foreign);
        assert_eq!(ep.adopt(at(2), &detached_with(untagged)), Err(AdoptError::NotRoutedHere));
        let other = w0.for_worker(1).expect("worker 1").mint(&[1; 16]);
        assert_eq!(ep.adopt(at(2), &detached_with(other)), Err(AdoptError::NotRoutedHere));
        let earlier = Issuer::new(secret, 6, 0, 2).expect("earlier run").mint(&[2; 16]);
        assert_eq!(ep.adopt(at(2), &detached_with(earlier)), Err(AdoptError::NotRoutedHere));
        assert_eq!(ep.stats().sessions_live, 0, "nothing adopted");
        // Once the earlier run's epoch is adopted, its worker-0 key routes here: adopted, and
        // a resume presenting it reaches the session.
        ep.issuer_mut().expect("issuer").adopt(6).expect("adopt epoch");
        let h = ep.adopt(at(2), &detached_with(earlier)).expect("adopted");
        let p = ep.accept_link(at(3), 0).expect("pending");
        let hello = ClientHello { resume_key: Some(earlier), last_received: Some(0), ext: true, early: false };
        match ep.route(at(3), p, &hello.encode(), w0.mint(&[3; 16])).expect("routed") {
            Routed::Resume(r) => assert_eq!(r.handle(), h),
            other => panic!("expected a resume, got {other:?}"),
        }
        // A key this worker minted itself is adopted too.
        assert!(ep.adopt(at(2), &detached_with(w0.mint(&[4; 16]))).is_ok());
    }
}
