//! Every async operation of the session API cancelled at each of its await points: the
//! operation's future is dropped after k polls, for every k below the number of polls it
//! takes to complete, and the run checks that nothing was lost, duplicated or overtaken.
//!
//! Send operations run against a full connection window (the reader starts once the
//! operation is pending), so each waits for credit before it completes.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::{Sink, SinkExt};
use sotto_driver::{ConnSender, SessionHandle};
use sotto_sim::fixture::{cancel_after, config, connection, noop_context, polls_to_complete, sessions};
use sotto_sim::workload::message;
use sotto_sim::{Faults, Net, Sim, SimOptions, SimRuntime};

const TAG: u32 = 7;
const LEN: usize = 240;
/// Messages sent after the cancelled operation.
const AFTER: u32 = 5;
/// Seeds per await point (task order and time per poll differ).
const SEEDS: u64 = 20;

/// Run `scenario` on a fresh simulation with a clean net; then everything must wind down.
fn simulate<F, Fut>(seed: u64, scenario: F) -> Result<Fut::Output, String>
where
    F: FnOnce(SimRuntime, Net) -> Fut,
    Fut: Future,
{
    let sim = Sim::new(SimOptions::new(seed));
    let rt = sim.runtime();
    let net = Net::new(&rt, seed, Faults::none());
    let out = sim.run(scenario(rt, net)).map_err(|s| format!("seed {seed}: {s}"))?;
    sim.run_to_quiescence().map_err(|s| format!("seed {seed}, winding down: {s}"))?;
    Ok(out)
}

/// Run `scenario(k)` for every await point k (1 up to the polls an uncancelled run takes)
/// and `SEEDS` seeds each. `scenario(usize::MAX)` must return the polls it took.
fn at_every_await_point<F, Fut>(name: &str, scenario: F)
where
    F: Fn(SimRuntime, Net, usize) -> Fut,
    Fut: Future<Output = Result<usize, String>>,
{
    let polls = simulate(1, |rt, net| scenario(rt, net, usize::MAX))
        .and_then(|r| r)
        .unwrap_or_else(|e| panic!("{name}, uncancelled: {e}"));
    assert!(polls >= 2, "{name}: the operation never waited ({polls} polls), so nothing was cancelled");
    for k in 1..polls {
        for seed in 1..=SEEDS {
            if let Err(e) = simulate(seed, |rt, net| scenario(rt, net, k)).and_then(|r| r) {
                panic!("{name} cancelled after {k} of {polls} polls, seed {seed}: {e}");
            }
        }
    }
}

/// What may and must arrive of the cancelled operation's messages.
struct Expect {
    /// Sequence numbers that must arrive.
    present: Vec<u32>,
    /// Sequence numbers that must not.
    absent: Vec<u32>,
}

fn seq_of(m: &Bytes) -> u32 {
    u32::from_le_bytes([m[4], m[5], m[6], m[7]])
}

/// Check the receiver's sequence numbers: strictly increasing (nothing duplicated or
/// overtaken), every message before and after the operation, and the operation's own as
/// `expect` says.
fn check_received(got: &[u32], first_op: u32, op_len: u32, expect: &Expect) -> Result<(), String> {
    if got.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!("out of order or duplicated: {got:?}"));
    }
    let must = (0..first_op).chain(first_op + op_len..first_op + op_len + AFTER).chain(expect.present.iter().copied());
    for s in must {
        if !got.contains(&s) {
            return Err(format!("message {s} lost: {got:?}"));
        }
    }
    if let Some(s) = expect.absent.iter().find(|s| got.contains(s)) {
        return Err(format!("message {s} of a cancelled operation went out: {got:?}"));
    }
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum SendOp {
    Send,
    SendMany,
    SinkSend,
    SinkFlush,
}

/// The send-side scenario: fill the window, run `op` for at most `k` polls (the reader
/// starts once it is pending), send `AFTER` more with `ConnSender::send`, close, check.
async fn send_cancelled(rt: SimRuntime, net: Net, op: SendOp, k: usize) -> Result<usize, String> {
    let (a, b, _acceptor) = sessions(&rt, &net, config()).await?;
    let (ca, cb) = connection(&a, &b).await?;
    let (mut tx, _ra) = ca.split();
    let (_tb, mut rb) = cb.split();
    let go = Arc::new(AtomicBool::new(false));
    let reader = {
        let (go, rt2) = (Arc::clone(&go), rt.clone());
        rt.spawn_app(async move {
            while !go.load(Ordering::Relaxed) {
                rt2.sleep(Duration::from_millis(1)).await;
            }
            rt2.sleep(Duration::from_millis(2)).await;
            let mut got = Vec::new();
            while let Ok(m) = rb.recv().await {
                got.push(seq_of(&m));
            }
            got
        })
    };
    // Fill the window: send until a send would wait.
    let mut seq = 0;
    while let Poll::Ready(r) = tx.poll_send(&mut noop_context(), &message(TAG, seq, LEN)) {
        r.map_err(|e| format!("fill: {e}"))?;
        seq += 1;
    }
    let first_op = seq;
    go.store(true, Ordering::Relaxed);
    let (op_len, polls, expect) = run_send_op(&mut tx, op, first_op, k).await?;
    for s in first_op + op_len..first_op + op_len + AFTER {
        tx.send(message(TAG, s, LEN)).await.map_err(|e| format!("send after: {e}"))?;
    }
    tx.close_with(&[]).await;
    let got = reader.await;
    check_received(&got, first_op, op_len, &expect)?;
    drop((a, b));
    Ok(polls)
}

/// Run `op` on messages `first..` for at most `k` polls: (its message count, the polls it
/// took, what must arrive).
async fn run_send_op(tx: &mut ConnSender, op: SendOp, first: u32, k: usize) -> Result<(u32, usize, Expect), String> {
    let none = |n: u32| Expect { present: vec![], absent: (first..first + n).collect() };
    let all = |n: u32| Expect { present: (first..first + n).collect(), absent: vec![] };
    Ok(match op {
        SendOp::Send => {
            let (polls, out) = counted(tx.send(message(TAG, first, LEN)), k).await;
            match out {
                Some(r) => {
                    r.map_err(|e| format!("send: {e}"))?;
                    (1, polls, all(1))
                }
                None => (1, polls, none(1)),
            }
        }
        SendOp::SendMany => {
            let batch: Vec<Bytes> = (first..first + 3).map(|s| message(TAG, s, LEN)).collect();
            let (polls, out) = counted(tx.send_many(&batch), k).await;
            match out {
                Some(r) => {
                    let n = r.map_err(|e| format!("send_many: {e}"))? as u32;
                    (
                        3,
                        polls,
                        Expect { present: (first..first + n).collect(), absent: (first + n..first + 3).collect() },
                    )
                }
                None => (3, polls, none(3)),
            }
        }
        SendOp::SinkSend => {
            let (polls, out) = counted(SinkExt::send(tx, message(TAG, first, LEN)), k).await;
            match out {
                Some(r) => {
                    r.map_err(|e| format!("Sink::send: {e}"))?;
                    (1, polls, all(1))
                }
                // Cancelled: it may go out, in its place, or never.
                None => (1, polls, Expect { present: vec![], absent: vec![] }),
            }
        }
        SendOp::SinkFlush => {
            for s in first..first + 3 {
                let mut pinned = std::pin::Pin::new(&mut *tx);
                match pinned.as_mut().poll_ready(&mut noop_context()) {
                    Poll::Ready(r) => r.map_err(|e| format!("poll_ready: {e}"))?,
                    Poll::Pending => return Err("poll_ready waited with nothing staged".into()),
                }
                pinned.start_send(message(TAG, s, LEN)).map_err(|e| format!("start_send: {e}"))?;
            }
            let (polls, out) = counted(SinkExt::flush(tx), k).await;
            if let Some(r) = out {
                r.map_err(|e| format!("Sink::flush: {e}"))?;
            }
            // Accepted by `start_send`: they must all arrive, in order, before later ones.
            (3, polls, all(3))
        }
    })
}

/// `future` run for at most `k` polls: (polls it took, its output unless cancelled).
async fn counted<F: Future>(future: F, k: usize) -> (usize, Option<F::Output>) {
    if k == usize::MAX {
        return polls_to_complete(future).await;
    }
    let mut c = cancel_after(future, k);
    let out = std::future::poll_fn(|cx| std::pin::Pin::new(&mut c).poll(cx)).await;
    (c.polled(), out)
}

#[test]
fn a_cancelled_send_never_goes_out_and_later_sends_keep_their_order() {
    at_every_await_point("send", |rt, net, k| send_cancelled(rt, net, SendOp::Send, k));
}

#[test]
fn a_cancelled_send_many_sends_nothing_and_later_sends_keep_their_order() {
    at_every_await_point("send_many", |rt, net, k| send_cancelled(rt, net, SendOp::SendMany, k));
}

#[test]
fn a_cancelled_sink_send_keeps_its_place_or_never_goes_out() {
    at_every_await_point("Sink::send", |rt, net, k| send_cancelled(rt, net, SendOp::SinkSend, k));
}

#[test]
fn a_cancelled_sink_flush_keeps_the_staged_messages_before_later_sends() {
    at_every_await_point("Sink::flush", |rt, net, k| send_cancelled(rt, net, SendOp::SinkFlush, k));
}

/// A connection's `close_with` (which first queues what the `Sink` staged, waiting for
/// credit) cancelled after k polls, then called again: every message sent or staged before
/// arrives once, in order, then the close.
async fn conn_close_cancelled(rt: SimRuntime, net: Net, k: usize) -> Result<usize, String> {
    let (a, b, _acceptor) = sessions(&rt, &net, config()).await?;
    let (ca, cb) = connection(&a, &b).await?;
    let (mut tx, _ra) = ca.split();
    let (_tb, mut rb) = cb.split();
    let go = Arc::new(AtomicBool::new(false));
    let reader = {
        let (go, rt2) = (Arc::clone(&go), rt.clone());
        rt.spawn_app(async move {
            while !go.load(Ordering::Relaxed) {
                rt2.sleep(Duration::from_millis(1)).await;
            }
            rt2.sleep(Duration::from_millis(2)).await;
            let mut got = Vec::new();
            while let Ok(m) = rb.recv().await {
                got.push(seq_of(&m));
            }
            got
        })
    };
    let mut seq = 0;
    while let Poll::Ready(r) = tx.poll_send(&mut noop_context(), &message(TAG, seq, LEN)) {
        r.map_err(|e| format!("fill: {e}"))?;
        seq += 1;
    }
    for s in seq..seq + 3 {
        let mut pinned = std::pin::Pin::new(&mut tx);
        match pinned.as_mut().poll_ready(&mut noop_context()) {
            Poll::Ready(r) => r.map_err(|e| format!("poll_ready: {e}"))?,
            Poll::Pending => return Err("poll_ready waited with nothing staged".into()),
        }
        pinned.start_send(message(TAG, s, LEN)).map_err(|e| format!("start_send: {e}"))?;
    }
    go.store(true, Ordering::Relaxed);
    let (polls, _) = counted(tx.close_with(&[]), k).await;
    tx.close_with(&[]).await;
    let got = reader.await;
    if got != (0..seq + 3).collect::<Vec<_>>() {
        return Err(format!("received {got:?}, expected 0..{}", seq + 3));
    }
    drop((a, b));
    Ok(polls)
}

#[test]
fn a_cancelled_connection_close_loses_nothing_and_closes_when_called_again() {
    at_every_await_point("close_with", conn_close_cancelled);
}

/// The peer sends 0..6 with 1 ms between; the first `recv` is cancelled after k polls; the
/// rest must arrive, every one once and in order.
async fn recv_cancelled(rt: SimRuntime, net: Net, k: usize) -> Result<usize, String> {
    let (a, b, _acceptor) = sessions(&rt, &net, config()).await?;
    let (ca, cb) = connection(&a, &b).await?;
    let (mut tx, _ra) = ca.split();
    let (_tb, mut rb) = cb.split();
    let writer = {
        let rt2 = rt.clone();
        rt.spawn_app(async move {
            for s in 0..6 {
                rt2.sleep(Duration::from_millis(1)).await;
                tx.send(message(TAG, s, LEN)).await.map_err(|e| format!("send: {e}"))?;
            }
            Ok::<_, String>(tx)
        })
    };
    let (polls, first) = counted(rb.recv(), k).await;
    let mut got = Vec::new();
    if let Some(m) = first {
        got.push(seq_of(&m.map_err(|e| format!("recv: {e}"))?));
    }
    while got.len() < 6 {
        got.push(seq_of(&rb.recv().await.map_err(|e| format!("recv: {e}; got {got:?}"))?));
    }
    if got != (0..6).collect::<Vec<_>>() {
        return Err(format!("received {got:?}"));
    }
    let mut tx = writer.await?;
    tx.close_with(&[]).await;
    drop((a, b));
    Ok(polls)
}

#[test]
fn a_cancelled_recv_loses_no_message() {
    at_every_await_point("recv", recv_cancelled);
}

/// The initiator's `open` is cancelled after k polls, then it opens another connection and
/// sends on it; the acceptor answers every open and reads each connection to its end. The
/// second connection's messages must arrive, and everything must wind down.
async fn open_cancelled(rt: SimRuntime, net: Net, k: usize) -> Result<usize, String> {
    let (a, b, _acceptor) = sessions(&rt, &net, config()).await?;
    let b = Arc::new(b);
    let answering = {
        let (b, rt2) = (Arc::clone(&b), rt.clone());
        rt.spawn_app(async move {
            let mut readers = Vec::new();
            while let Ok(inc) = b.accept().await {
                let md = inc.metadata().clone();
                let Ok(conn) = inc.accept(&[]).await else { continue };
                let (_tx, mut rx) = conn.split();
                readers.push((
                    md,
                    rt2.spawn_app(async move {
                        let mut got = Vec::new();
                        while let Ok(m) = rx.recv().await {
                            got.push(seq_of(&m));
                        }
                        got
                    }),
                ));
                if readers.iter().any(|(md, _)| md.as_ref() == b"second") {
                    break;
                }
            }
            readers
        })
    };
    let (polls, first) = counted(a.open(b"first"), k).await;
    let first = first.transpose().map_err(|e| format!("first open: {e:?}"))?;
    let mut second = a.open(b"second").await.map_err(|e| format!("second open: {e:?}"))?;
    for s in 0..3 {
        second.send(message(TAG, s, LEN)).await.map_err(|e| format!("send: {e}"))?;
    }
    second.close(&[]).await;
    if let Some(c) = first {
        c.close(&[]).await;
    }
    for (md, reader) in answering.await {
        let got = reader.await;
        if md.as_ref() == b"second" && got != [0, 1, 2] {
            return Err(format!("second connection received {got:?}"));
        }
        if md.as_ref() == b"first" && !got.is_empty() {
            return Err(format!("first connection received {got:?}"));
        }
    }
    drop((a, b));
    Ok(polls)
}

#[test]
fn a_cancelled_open_leaves_the_session_working_and_the_peer_not_waiting() {
    at_every_await_point("open", open_cancelled);
}

/// The acceptor's `accept` is cancelled after k polls while the initiator opens; the next
/// `accept` (if that one did not complete) must still get the open.
async fn accept_cancelled(rt: SimRuntime, net: Net, k: usize) -> Result<usize, String> {
    let (a, b, _acceptor) = sessions(&rt, &net, config()).await?;
    let a = Arc::new(a);
    let opener = {
        let (a, rt2) = (Arc::clone(&a), rt.clone());
        rt.spawn_app(async move {
            rt2.sleep(Duration::from_millis(1)).await;
            let mut c = a.open(b"x").await.map_err(|e| format!("open: {e:?}"))?;
            for s in 0..3 {
                c.send(message(TAG, s, LEN)).await.map_err(|e| format!("send: {e}"))?;
            }
            Ok::<_, String>(c)
        })
    };
    let (polls, inc) = counted(b.accept(), k).await;
    let inc = match inc {
        Some(r) => r.map_err(|e| format!("accept: {e:?}"))?,
        None => b.accept().await.map_err(|e| format!("accept after a cancelled one: {e:?}"))?,
    };
    let mut conn = inc.accept(&[]).await.map_err(|e| format!("answer: {e:?}"))?;
    for s in 0..3 {
        let m = conn.recv().await.map_err(|e| format!("recv: {e}"))?;
        if seq_of(&m) != s {
            return Err(format!("expected {s}, got {}", seq_of(&m)));
        }
    }
    let c = opener.await?;
    c.close(&[]).await;
    drop((a, b));
    Ok(polls)
}

#[test]
fn a_cancelled_accept_loses_no_open() {
    at_every_await_point("accept", accept_cancelled);
}

/// The initiator's graceful `close` is cancelled after k polls and its handle dropped: both
/// sessions must still end, and every task with them.
async fn close_cancelled(rt: SimRuntime, net: Net, k: usize) -> Result<usize, String> {
    let (a, b, acceptor) = sessions(&rt, &net, config()).await?;
    let (polls, _) = counted(a.close(0, "bye"), k).await;
    drop(a);
    end_of(&b).await;
    drop((b, acceptor));
    Ok(polls)
}

async fn end_of(s: &SessionHandle) {
    while s.ended().is_none() {
        if s.next_event().await.is_none() {
            break;
        }
    }
}

#[test]
fn a_cancelled_session_close_still_ends_both_sides() {
    at_every_await_point("close", close_cancelled);
}
