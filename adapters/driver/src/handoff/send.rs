//! The sending side of a handoff, on its own thread: the listener's descriptor, then one
//! offer at a time, each session frozen until its ACK settles it.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sotto_proto::handoff::{Ack, Frame, ListenerFamily, Offer, Token};

use super::channel::{deadline_in, Channel};
use super::{HandoffConfig, HandoffError, HandoffReport};
use crate::router::EpShared;
use crate::session::moving::{self, Freeze, Frozen};

/// Failures kept in the report.
const MAX_FAILURES: usize = 16;
/// Tries to find a session at rest (its driver drains its events meanwhile).
const FREEZE_TRIES: u32 = 50;

pub(super) fn run(
    ep: &Arc<EpShared>,
    sock: UnixStream,
    listener: Option<(OwnedFd, ListenerFamily)>,
    config: HandoffConfig,
) -> HandoffReport {
    let start = Instant::now();
    let mut report = HandoffReport::default();
    let homes = moving::members(ep);
    let mut ch = match Channel::new(sock, 1024) {
        Ok(ch) => ch,
        Err(e) => return failed(report, e.into(), start, homes.len()),
    };
    if let Some((fd, family)) = &listener {
        if let Err(e) = ch.send_listener(fd, *family, config.ack_timeout) {
            return failed(report, e, start, homes.len());
        }
        report.listener_sent = true;
    }
    let (mut state, mut app, mut frame) = (Vec::new(), Vec::new(), Vec::new());
    let close = config.close_kept.then_some((config.close_code, "server restarting"));
    for (n, home) in homes.iter().enumerate() {
        if report.broken {
            report.kept += 1;
            close_kept(home, close);
            continue;
        }
        let mut tries = 0;
        let frozen = loop {
            match moving::freeze(home, ep.clock.now(), &mut state, &mut app) {
                Freeze::Frozen(f) => break Some(f),
                Freeze::NotNow if tries < FREEZE_TRIES => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Freeze::NotNow => break None,
                Freeze::Skip(why) => {
                    tracing::debug!(why, "sotto: session not handed off");
                    break None;
                }
            }
        };
        let Some(frozen) = frozen else {
            report.kept += 1;
            close_kept(home, close);
            continue;
        };
        let frozen_at = Instant::now();
        let corr = n as u64 + 1;
        let token = new_token();
        let deadline_ms = u32::try_from(config.ack_timeout.as_millis()).unwrap_or(u32::MAX).max(1);
        frame.clear();
        Frame::Offer(Offer { corr, token, deadline_ms, issuer: &[], app: &app, state: &state }).encode(&mut frame);
        report.offered += 1;
        let deadline = deadline_in(config.ack_timeout);
        let written = ch.write(&frame, config.ack_timeout);
        let offer_out = written.is_ok();
        let outcome = written.and_then(|()| match ch.read(deadline, || HandoffError::AckTimeout)? {
            Frame::Ack(ack) => check(&ack, corr, &token),
            _ => Err(HandoffError::UnexpectedFrame("an ACK was expected")),
        });
        report.longest_freeze = report.longest_freeze.max(frozen_at.elapsed());
        match outcome {
            Ok(()) => {
                frozen.complete(ep.clock.now());
                report.handed_off += 1;
            }
            Err(e) => {
                let protocol = !matches!(e, HandoffError::Refused { .. });
                let mut revoked = true;
                if protocol {
                    // The token is revoked: a receiver that adopted the session after all
                    // (a late ACK) must end it again. Best effort: the socket may be gone.
                    revoked = ch.send(&Frame::Revoke { corr, token }, config.ack_timeout).is_ok();
                    report.broken = true;
                }
                if offer_out && !revoked && report.listener_sent {
                    // The whole offer went out and neither its answer came nor the REVOKE
                    // went: the receiver may hold the session (it keeps what it ACKed once
                    // the socket ends), and it has the listener, so every resume lands
                    // there. Serving on here would make two owners whose states part; end
                    // this copy as handed off and let the client resume into the receiver.
                    tracing::warn!(error = %e, "sotto: session handoff outcome unknown; ended here");
                    frozen.complete(ep.clock.now());
                    report.uncertain += 1;
                } else {
                    tracing::debug!(error = %e, "sotto: session handoff failed; the session stays");
                    settle_kept(frozen, ep, close);
                    report.kept += 1;
                }
                if report.failures.len() < MAX_FAILURES {
                    report.failures.push(e);
                }
            }
        }
    }
    if !report.broken {
        let offers = u32::try_from(report.offered).unwrap_or(u32::MAX);
        if let Err(e) = ch.send(&Frame::Done { offers }, config.ack_timeout) {
            report.failures.push(e);
        }
    }
    report.elapsed = start.elapsed();
    report
}

/// An ACK settles the offer only if it echoes both its correlation id and its token.
fn check(ack: &Ack<'_>, corr: u64, token: &Token) -> Result<(), HandoffError> {
    if ack.corr != corr {
        return Err(HandoffError::CorrelationMismatch);
    }
    if !constant_time_eq(&ack.token, token) {
        return Err(HandoffError::TokenMismatch);
    }
    match ack.refusal {
        None => Ok(()),
        Some(refusal) => Err(HandoffError::Refused { refusal, reason: ack.reason.to_owned() }),
    }
}

fn constant_time_eq(a: &Token, b: &Token) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh one-time token (never all zero).
fn new_token() -> Token {
    let mut t = [0u8; 16];
    if getrandom::fill(&mut t).is_err() || t == [0; 16] {
        // No system randomness: a counter and the time still make each token unique.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        t[..8].copy_from_slice(&n.to_le_bytes());
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        t[8..].copy_from_slice(&(nanos as u64).to_le_bytes());
    }
    t
}

fn settle_kept(frozen: Frozen, ep: &EpShared, close: Option<(u32, &str)>) {
    frozen.abort(ep.clock.now(), close);
}

fn close_kept(home: &Arc<crate::session::OwnHome>, close: Option<(u32, &str)>) {
    if let Some((code, reason)) = close {
        moving::close(home, code, reason);
    }
}

/// Nothing was offered: every one of the `sessions` stays.
fn failed(mut report: HandoffReport, e: HandoffError, start: Instant, sessions: usize) -> HandoffReport {
    report.failures.push(e);
    report.broken = true;
    report.kept = sessions as u64;
    report.elapsed = start.elapsed();
    report
}
