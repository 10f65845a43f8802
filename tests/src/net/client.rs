//! One initiator of a [`Net`](super::Net): its session, the application on top, its dialer,
//! and what it saw.

use sotto_proto::endpoint::SessionHandle;
use sotto_proto::session::{Session, SessionConfig};
use sotto_proto::{LinkId, Role};

use super::app::App;
use crate::dialer::{DialPolicy, Dialer};
use crate::rng::SimRng;

/// Counters the harness keeps about one client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientCounters {
    /// `Attached` events.
    pub attached: u64,
    /// `Attached { resumed: true }` events.
    pub resumed: u64,
    /// `DropLink` events.
    pub drop_links: u64,
    /// `Ended` events, over every session this client ran.
    pub ended: u64,
    /// Sessions started (the first one included).
    pub sessions: u64,
    /// `handle_message` calls that returned an error.
    pub input_errors: u64,
    /// Link framing errors its reader hit.
    pub framing_errors: u64,
}

/// One initiator.
#[derive(Debug)]
pub struct Client {
    /// The session under test.
    pub session: Session,
    /// The application on top.
    pub app: App,
    /// Its link source.
    pub dialer: Dialer,
    /// The source (address hash) its links present to the endpoint.
    pub source: u64,
    /// The endpoint session its latest link was routed to.
    pub server: Option<SessionHandle>,
    /// What happened.
    pub counters: ClientCounters,
    /// The current link: slot and link id.
    pub(crate) link: Option<(usize, LinkId)>,
    /// Sessions run so far; part of every session's epoch.
    pub(crate) generation: u64,
    pub(crate) index: usize,
}

impl Client {
    pub(crate) fn new(index: usize, cfg: SessionConfig, dial: DialPolicy, payload: (u32, u32), rng: SimRng) -> Self {
        let mut c = Self {
            session: Session::new(Role::Initiator, cfg, b"client").expect("valid client session config"),
            app: App::new(true, cfg.max_connections, cfg.initial_credit, payload, rng),
            dialer: Dialer::new(dial),
            source: 1000 + index as u64,
            server: None,
            counters: ClientCounters::default(),
            link: None,
            generation: 0,
            index,
        };
        c.counters.sessions = 1;
        c.app.reset(c.epoch());
        c
    }

    /// The epoch of the current session (unique per client and session).
    #[must_use]
    pub fn epoch(&self) -> u64 {
        ((self.index as u64 + 1) << 32) | self.generation
    }

    /// Whether the session is ready on this side.
    #[must_use]
    pub fn ready(&self) -> bool {
        self.app.ready && !self.session.is_ended()
    }

    /// The current link id, if any.
    #[must_use]
    pub fn link(&self) -> Option<LinkId> {
        self.link.map(|(_, l)| l)
    }

    /// Forget the session (the caller closes its link first) and start a fresh one.
    pub(crate) fn restart(&mut self) {
        self.session.reset();
        self.generation += 1;
        self.app.reset(self.epoch());
        self.server = None;
        self.counters.sessions += 1;
        self.dialer.cancel();
        self.dialer.attached();
        self.dialer.dial_now();
    }
}
