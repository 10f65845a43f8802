//! The receiving side of a handoff, on its own thread: import and adopt each offered
//! session under this acceptor's limits, answer ACK, pass the adopted sessions to the
//! runtime for their drivers.

use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::mpsc::UnboundedSender;
use sotto_proto::handoff::{Ack, Frame, Refusal, Token};

use super::channel::{deadline_in, Channel};
use super::{HandoffConfig, HandoffError, ReceiveReport};
use crate::config::Config;
use crate::router::EpShared;
use crate::session::moving;
use crate::session::Home;

/// The longest frame body this acceptor reads: what the largest session its limits allow
/// could take (the replay ring, each connection's unread messages up to its window, metadata),
/// with room to spare, and at most [`MAX_FRAME`]. A frame announcing more is refused unread
/// (the socket is then given up); the exact limits are checked on import.
pub(crate) fn max_body(config: &Config) -> u32 {
    let s = config.session_config();
    let c = s.conduit;
    let window = u64::from(s.initial_credit.max(s.max_credit));
    let md = u64::from(s.max_metadata);
    // Saturating: the limits are the application's, and some (pending opens, metadata)
    // have no upper bound of their own; past MAX_FRAME it does not matter by how much.
    let per_conn = 128 + 2 * window + 3 * md;
    let total = [
        1u64 << 20,
        u64::from(c.replay_bytes),
        8 * u64::from(c.replay_frames),
        u64::from(s.max_connections).saturating_mul(per_conn),
        u64::from(s.max_pending_opens).saturating_mul(8 + md),
    ]
    .into_iter()
    .fold(0u64, u64::saturating_add);
    u32::try_from(total.min(MAX_FRAME)).unwrap_or(u32::MAX)
}

/// The longest frame body any receiver reads, whatever its limits: 256 MiB.
const MAX_FRAME: u64 = 256 << 20;

pub(super) fn run(
    ep: &Arc<EpShared>,
    sock: UnixStream,
    acceptor: &Config,
    config: HandoffConfig,
    homes: &UnboundedSender<Home>,
) -> Result<ReceiveReport, HandoffError> {
    let mut ch = Channel::new(sock, max_body(acceptor))?;
    let mut report = ReceiveReport::default();
    // The latest adopted session, until the sender's next frame: the only one a REVOKE can
    // name (the sender waits for each ACK before its next offer). It is held back from the
    // application until then: a sender that took our ACK too late (after its deadline) keeps
    // the session, serves it on and revokes it here, and an application that had accepted
    // it meanwhile could have read the messages that moved with it, which the sender's
    // application reads too. The next OFFER or DONE says the sender let it go.
    let mut last: Option<(u64, Token, Home)> = None;
    let release = |last: &mut Option<(u64, Token, Home)>| {
        if let Some((_, _, home)) = last.take() {
            // The receiver future is gone only if the acceptor's task was cancelled: then
            // the session has no driver, like every other.
            let _ = homes.unbounded_send(home);
        }
    };
    loop {
        let frame = match ch.read(deadline_in(config.idle_timeout), || HandoffError::PeerSilent) {
            Ok(frame) => frame,
            Err(e) => {
                // No word on the latest offer: the sender may have taken our ACK and then
                // died (it no longer serves the session), so the session stays here.
                release(&mut last);
                return Err(e);
            }
        };
        match frame {
            Frame::Offer(o) => {
                release(&mut last);
                let received = Instant::now();
                let (corr, token) = (o.corr, o.token);
                let deadline = Duration::from_millis(u64::from(o.deadline_ms));
                let mut result = if o.issuer.is_empty() {
                    moving::adopt(ep, o.state, o.app, acceptor)
                } else {
                    // Reserved for issuer-tagged keys (docs/handoff.md): not taken over yet.
                    Err((Refusal::Issuer, "issuer identities are not supported yet".to_owned()))
                };
                // An ACK that might reach the sender after its deadline is not sent as
                // accepted: the sender would keep the session, and so would we.
                if result.is_ok() && received.elapsed() > deadline / 2 {
                    if let Ok(home) = &result {
                        moving::revoke(home);
                    }
                    result = Err((Refusal::Expired, "adoption took over half the offer's deadline".to_owned()));
                }
                let ack = match &result {
                    Ok(_) => Ack { corr, token, refusal: None, reason: "" },
                    Err((refusal, why)) => Ack { corr, token, refusal: Some(*refusal), reason: why },
                };
                let sent = ch.send(&Frame::Ack(ack), deadline);
                match (result, sent) {
                    (Ok(home), Ok(())) => {
                        report.adopted += 1;
                        last = Some((corr, token, home));
                    }
                    (Ok(home), Err(e)) => {
                        // The sender cannot see the ACK: it keeps the session.
                        moving::revoke(&home);
                        return Err(e);
                    }
                    (Err(_), sent) => {
                        report.refused += 1;
                        sent?;
                    }
                }
            }
            Frame::Revoke { corr, token } => {
                if let Some((c, t, home)) = last.take() {
                    if c == corr && t == token {
                        moving::revoke(&home);
                        report.adopted -= 1;
                        report.revoked += 1;
                    } else {
                        last = Some((c, t, home));
                    }
                }
            }
            Frame::Done { .. } => {
                release(&mut last);
                report.done = true;
                return Ok(report);
            }
            _ => {
                release(&mut last);
                return Err(HandoffError::UnexpectedFrame("an OFFER, REVOKE or DONE was expected"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_limit_of_a_receiver_with_unbounded_limits_is_the_cap_without_overflow() {
        let mut config = Config::default();
        config.protocol.max_pending_opens = u32::MAX;
        config.protocol.max_metadata = u32::MAX;
        config.protocol.max_credit = u32::MAX;
        config.protocol.initial_credit = u32::MAX;
        assert_eq!(u64::from(max_body(&config)), MAX_FRAME);
        assert!(u64::from(max_body(&Config::default())) <= MAX_FRAME);
    }
}
