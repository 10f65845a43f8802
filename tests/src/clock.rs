//! The virtual-clock loop both simulations share ([`Sim`](crate::sim::Sim) for two conduits,
//! [`Net`](crate::net::Net) for sessions and an endpoint): jump the clock to the next thing
//! due, process it, repeat.

use sotto_proto::{Duration, Instant};

/// A simulation driven by a virtual clock.
pub(crate) trait VirtualClock {
    /// The simulated time.
    fn now(&self) -> Instant;
    /// Move the clock to `t` (never backwards: callers pass `max(now, t)`).
    fn set_now(&mut self, t: Instant);
    /// The earliest time something is due (timers, deliveries, dialers), if any.
    fn next_time(&self) -> Option<Instant>;
    /// Process everything due at the current time.
    fn process_due(&mut self);
    /// Start whatever waits for a nudge rather than a deadline (dialers with nothing armed).
    fn poke(&mut self);
}

/// Process everything due up to `t`, in time order, then set the clock to `t`.
pub(crate) fn advance_to<S: VirtualClock>(s: &mut S, t: Instant) {
    s.poke();
    while let Some(next) = s.next_time() {
        if next > t {
            break;
        }
        s.set_now(s.now().max(next));
        s.process_due();
    }
    s.set_now(s.now().max(t));
}

/// Run event by event until `pred` holds (true) or `limit` of simulated time has passed
/// (false; the clock is then at the limit).
pub(crate) fn run_until<S: VirtualClock>(s: &mut S, limit: Duration, mut pred: impl FnMut(&S) -> bool) -> bool {
    let deadline = s.now().saturating_add(limit);
    s.poke();
    loop {
        if pred(s) {
            return true;
        }
        match s.next_time() {
            Some(next) if next <= deadline => {
                s.set_now(s.now().max(next));
                s.process_due();
            }
            _ => {
                s.set_now(s.now().max(deadline));
                return pred(s);
            }
        }
    }
}
