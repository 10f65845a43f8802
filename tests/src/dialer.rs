//! The initiator's link source: when A has no link it waits a jittered, capped exponential
//! backoff, then "dials". A dial connects after `connect_latency`, or fails, or is dropped (A
//! gets a link that leads nowhere: no byte and no EOF ever come back), or is delayed. Outcomes
//! come from a script first, then from the policy's odds.

use sotto_proto::{Duration, Instant};

use crate::rng::SimRng;

/// What one dial attempt does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialOutcome {
    /// The link comes up on both sides after `connect_latency`.
    Connect,
    /// The attempt fails after `connect_latency` (connection refused); back off and retry.
    Fail,
    /// A gets a link, B never sees it, nothing ever comes back (the handshake deadline ends it).
    Drop,
    /// The link comes up, but only after this much extra time.
    Delay(Duration),
}

/// Odds and timings of dialing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DialPolicy {
    /// First backoff cap (the delay is drawn from `backoff_min..=cap`).
    pub backoff_min: Duration,
    /// Largest backoff.
    pub backoff_max: Duration,
    /// Time from dial to link up (or failure).
    pub connect_latency: Duration,
    /// Per mille of attempts that fail.
    pub fail_per_mille: u32,
    /// Per mille of attempts that are dropped.
    pub drop_per_mille: u32,
    /// Per mille of attempts that are delayed, by up to `delay_max`.
    pub delay_per_mille: u32,
    /// Longest extra delay.
    pub delay_max: Duration,
}

impl Default for DialPolicy {
    fn default() -> Self {
        Self {
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            connect_latency: Duration::from_millis(1),
            fail_per_mille: 0,
            drop_per_mille: 0,
            delay_per_mille: 0,
            delay_max: Duration::ZERO,
        }
    }
}

/// Where the dialer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialState {
    /// Not dialing (A has a link, or auto-dial is off).
    Idle,
    /// Backing off until then.
    Waiting(Instant),
    /// A dial in progress, finishing then with this outcome.
    Connecting(Instant, DialOutcome),
}

const SCRIPT_LEN: usize = 32;

/// The initiator's dialer.
#[derive(Debug)]
pub struct Dialer {
    /// Odds and timings.
    pub policy: DialPolicy,
    /// Redial by itself whenever A has no link (default true).
    pub auto: bool,
    pub(crate) state: DialState,
    /// Consecutive attempts without an attach (drives the backoff).
    pub(crate) attempt: u32,
    script: [Option<DialOutcome>; SCRIPT_LEN],
    script_head: usize,
    script_len: usize,
    /// Attempts started.
    pub attempts: u64,
    /// Longest backoff drawn.
    pub longest_backoff: Duration,
    /// The next dial happens without backoff (the very first one).
    immediate: bool,
}

impl Dialer {
    pub(crate) fn new(policy: DialPolicy) -> Self {
        Self {
            policy,
            auto: true,
            state: DialState::Idle,
            attempt: 0,
            script: [None; SCRIPT_LEN],
            script_head: 0,
            script_len: 0,
            attempts: 0,
            longest_backoff: Duration::ZERO,
            immediate: true,
        }
    }

    /// Queue scripted outcomes for the next attempts (before the policy's odds apply).
    pub fn script(&mut self, outcomes: &[DialOutcome]) {
        for o in outcomes {
            assert!(self.script_len < SCRIPT_LEN, "dial script full");
            self.script[(self.script_head + self.script_len) % SCRIPT_LEN] = Some(*o);
            self.script_len += 1;
        }
    }

    /// Where the dialer is.
    #[must_use]
    pub fn state(&self) -> DialState {
        self.state
    }

    /// Make the next dial start without backoff.
    pub fn dial_now(&mut self) {
        self.immediate = true;
        if let DialState::Waiting(_) = self.state {
            self.state = DialState::Idle;
        }
    }

    pub(crate) fn next_due(&self) -> Option<Instant> {
        match self.state {
            DialState::Idle => None,
            DialState::Waiting(at) | DialState::Connecting(at, _) => Some(at),
        }
    }

    /// A has no link: start backing off (if idle and auto).
    pub(crate) fn need_link(&mut self, now: Instant, rng: &mut SimRng) {
        if self.state != DialState::Idle || !self.auto {
            return;
        }
        let delay = if self.immediate {
            self.immediate = false;
            Duration::ZERO
        } else {
            let cap = self.policy.backoff_min.as_nanos().saturating_mul(1u64 << self.attempt.min(20));
            let cap = cap.min(self.policy.backoff_max.as_nanos()).max(self.policy.backoff_min.as_nanos());
            Duration::from_nanos(rng.range(self.policy.backoff_min.as_nanos(), cap))
        };
        self.longest_backoff = self.longest_backoff.max(delay);
        self.attempt = self.attempt.saturating_add(1);
        self.state = DialState::Waiting(now.saturating_add(delay));
    }

    /// The backoff is over: start the attempt.
    pub(crate) fn start(&mut self, now: Instant, rng: &mut SimRng) {
        let outcome = if self.script_len > 0 {
            let o = self.script[self.script_head].take();
            self.script_head = (self.script_head + 1) % SCRIPT_LEN;
            self.script_len -= 1;
            o.unwrap_or(DialOutcome::Connect)
        } else {
            let p = self.policy;
            let r = rng.below(1000) as u32;
            if r < p.fail_per_mille {
                DialOutcome::Fail
            } else if r < p.fail_per_mille + p.drop_per_mille {
                DialOutcome::Drop
            } else if r < p.fail_per_mille + p.drop_per_mille + p.delay_per_mille {
                DialOutcome::Delay(rng.duration(Duration::ZERO, p.delay_max))
            } else {
                DialOutcome::Connect
            }
        };
        self.attempts += 1;
        let mut at = now.saturating_add(self.policy.connect_latency);
        if let DialOutcome::Delay(d) = outcome {
            at = at.saturating_add(d);
        }
        self.state = DialState::Connecting(at, outcome);
    }

    /// The link attached: the next loss starts the backoff from the bottom.
    pub(crate) fn attached(&mut self) {
        self.attempt = 0;
    }

    /// Stop the attempt in progress (A got a link otherwise, or the session ended).
    pub(crate) fn cancel(&mut self) {
        self.state = DialState::Idle;
    }
}
