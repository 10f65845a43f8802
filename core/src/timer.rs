//! A fixed table of deadlines, one slot per timer kind. No allocation, no heap: the earliest
//! deadline is found by a scan over a handful of slots.

use crate::time::Instant;

/// The timers a conduit runs. Each has at most one deadline at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// The whole per-link handshake must finish before this.
    Handshake = 0,
    /// Send a standalone ACK (extensions only).
    AckDelay = 1,
    /// Send the next PING (extensions only).
    Ping = 2,
    /// The outstanding PING must be answered before this, or the link is dead.
    PongTimeout = 3,
    /// A detached session is lost at this point.
    Recovery = 4,
    /// Base form: a sender blocked on a full ring toward a peer that sent no ack for this
    /// long cycles the link.
    AckStarved = 5,
}

const TIMER_COUNT: usize = 6;
const ALL: [Timer; TIMER_COUNT] =
    [Timer::Handshake, Timer::AckDelay, Timer::Ping, Timer::PongTimeout, Timer::Recovery, Timer::AckStarved];

/// Deadlines indexed by [`Timer`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TimerTable {
    deadlines: [Option<Instant>; TIMER_COUNT],
}

impl TimerTable {
    /// Arm `timer` to fire at `at`, replacing any previous deadline.
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer as usize] = Some(at);
    }
    /// Arm `timer` only if it is not armed yet.
    pub(crate) fn set_if_unset(&mut self, timer: Timer, at: Instant) {
        let slot = &mut self.deadlines[timer as usize];
        if slot.is_none() {
            *slot = Some(at);
        }
    }
    /// Arm `timer` for `at`, unless it is armed for earlier.
    pub(crate) fn set_earliest(&mut self, timer: Timer, at: Instant) {
        let slot = &mut self.deadlines[timer as usize];
        if slot.is_none_or(|t| at < t) {
            *slot = Some(at);
        }
    }
    /// Disarm `timer`.
    pub(crate) fn clear(&mut self, timer: Timer) {
        self.deadlines[timer as usize] = None;
    }
    /// The deadline of `timer`, if armed.
    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.deadlines[timer as usize]
    }
    /// Whether `timer` is armed and due at `now`.
    pub(crate) fn is_due(&self, timer: Timer, now: Instant) -> bool {
        matches!(self.get(timer), Some(at) if at <= now)
    }
    /// The earliest armed deadline.
    pub(crate) fn earliest(&self) -> Option<Instant> {
        ALL.iter().filter_map(|t| self.get(*t)).min()
    }
}
