//! What `tracing` costs sotto's data path. A subscriber that is installed but filters out
//! INFO and below (a server logging at WARN) is never called while messages flow: the
//! session span is disabled, so the driver's polls do not enter it, and nothing is logged per
//! message. At INFO the span is entered once per poll of the driver (not per message), and
//! still no event is logged. `sixteen_byte_sends_with_and_without_a_subscriber` (ignored;
//! run it with `--ignored --nocapture`, `SOTTO_COST_N` messages per run) prints the rate of
//! a 16 B send run under each.

use std::time::{Duration, Instant};

use bytes::Bytes;
use sotto_adapter_tests::capture::{local, Capture};
use sotto_adapter_tests::sessions::{dial, listen, open_accept, session_config, Rt, Transport};
use sotto_adapter_tests::workload::within;
use tracing::Level;

const LIMIT: Duration = Duration::from_secs(60);

/// On a current-thread tokio runtime (so that a thread-local subscriber sees every task):
/// a session, one connection, `n` messages of 16 B one way. Returns the subscriber's calls
/// and events during the sends (if one is given) and how long the sends took.
fn sixteen_byte_run(n: u32, capture: Option<&Capture>) -> (u64, usize, Duration) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let (acc, upstream) = listen(Rt::Tokio, Transport::Tcp, session_config()).await;
        let a = dial(Rt::Tokio, upstream, session_config()).await;
        let b = within(LIMIT, "accept", acc.accept()).await.expect("accept");
        let (x, y) = within(LIMIT, "open", open_accept(&a, &b, 1)).await.pop().expect("a pair");
        let (mut tx, _rx) = x.split();
        let (_ty, mut rx) = y.split();
        let msg = Bytes::from_static(&[7u8; 16]);
        let before = capture.map_or((0, 0), |c| (c.calls(), c.events().len()));
        let t0 = Instant::now();
        let sends = async {
            for _ in 0..n {
                tx.send(msg.clone()).await.expect("send");
            }
        };
        let recvs = async {
            for _ in 0..n {
                assert_eq!(rx.recv().await.expect("recv").len(), 16);
            }
        };
        within(LIMIT, "the run", futures::future::join(sends, recvs)).await;
        let took = t0.elapsed();
        let after = capture.map_or((0, 0), |c| (c.calls(), c.events().len()));
        (after.0 - before.0, after.1 - before.1, took)
    })
}

#[test]
fn a_subscriber_filtering_out_info_is_never_called_while_messages_flow() {
    let (capture, subscriber) = local(Level::WARN);
    let (calls, events, _) = tracing::subscriber::with_default(subscriber, || sixteen_byte_run(20_000, Some(capture)));
    assert_eq!((calls, events), (0, 0), "calls into a WARN subscriber during 20,000 sends");
    assert_eq!(capture.calls(), 0, "not even while the session started");

    // At INFO the session span is entered on the driver's polls; still no event.
    let (capture, subscriber) = local(Level::INFO);
    let (calls, events, _) = tracing::subscriber::with_default(subscriber, || sixteen_byte_run(20_000, Some(capture)));
    assert_eq!(events, 0, "no event per message");
    assert!(calls > 0, "the span is entered when INFO is on");
    println!("INFO: {calls} span enters and exits during 20,000 sends");
}

#[test]
#[ignore = "a timing to read, not a check: run with --ignored --nocapture"]
fn sixteen_byte_sends_with_and_without_a_subscriber() {
    // `SOTTO_COST_N` messages per run (default 200,000), three rounds.
    let n = std::env::var("SOTTO_COST_N").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    for round in 0..3 {
        let (_, _, none) = sixteen_byte_run(n, None);
        let (capture, subscriber) = local(Level::WARN);
        let (_, _, warn) = tracing::subscriber::with_default(subscriber, || sixteen_byte_run(n, Some(capture)));
        let (capture, subscriber) = local(Level::INFO);
        let (_, _, info) = tracing::subscriber::with_default(subscriber, || sixteen_byte_run(n, Some(capture)));
        let rate = |d: Duration| f64::from(n) / d.as_secs_f64() / 1e6;
        println!(
            "round {round}: {n} x 16 B: no subscriber {:.2} M msg/s, WARN subscriber {:.2} M msg/s, INFO subscriber {:.2} M msg/s",
            rate(none),
            rate(warn),
            rate(info)
        );
    }
}
