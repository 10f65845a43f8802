//! The demo's traffic: on every connection, in each direction, a sender of sequence-numbered
//! payloads and a receiver that checks each one (number, connection, direction, contents)
//! and counts what was lost, duplicated, reordered or corrupted.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use sotto_tokio::{ConnError, ConnReceiver, ConnSender};

/// `seq` (u64), connection (u32), direction (u8), then the body.
const HEADER: usize = 13;
/// The sequence number of the last message on a connection: its body is the count sent.
const FIN: u64 = u64::MAX;
/// Yield to the runtime after this many sends or receives that did not wait.
const YIELD_EVERY: u32 = 64;

/// Counters shared by all senders and receivers of one direction.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) sent: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) duplicated: AtomicU64,
    pub(crate) reordered: AtomicU64,
    pub(crate) corrupted: AtomicU64,
    /// Receivers that saw their connection's FIN.
    pub(crate) finished: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// The body length of message `seq` on `conn`: 16 to 512 bytes, varying.
fn body_len(conn: u32, seq: u64) -> usize {
    let x = (seq ^ (u64::from(conn) << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    16 + (x >> 55) as usize
}

fn body_byte(conn: u32, dir: u8, seq: u64, k: usize) -> u8 {
    (seq as usize).wrapping_mul(31).wrapping_add(k).wrapping_add(conn as usize * 7 + dir as usize) as u8
}

/// Message `seq` on connection `conn` in direction `dir`.
pub(crate) fn payload(conn: u32, dir: u8, seq: u64) -> Bytes {
    let len = body_len(conn, seq);
    let mut v = Vec::with_capacity(HEADER + len);
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend_from_slice(&conn.to_le_bytes());
    v.push(dir);
    v.extend((0..len).map(|k| body_byte(conn, dir, seq, k)));
    Bytes::from(v)
}

fn fin(conn: u32, dir: u8, count: u64) -> Bytes {
    let mut v = Vec::with_capacity(HEADER + 8);
    v.extend_from_slice(&FIN.to_le_bytes());
    v.extend_from_slice(&conn.to_le_bytes());
    v.push(dir);
    v.extend_from_slice(&count.to_le_bytes());
    Bytes::from(v)
}

/// Yield once to the runtime (any runtime).
pub(crate) struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Send numbered messages until `stop`, then the FIN with the count. Returns the count.
pub(crate) async fn send_loop(mut tx: ConnSender, conn: u32, dir: u8, stop: &AtomicBool, tally: &Tally) -> u64 {
    let mut seq = 0u64;
    if let Err(e) = send_from(&mut tx, conn, dir, &mut seq, stop, tally).await {
        eprintln!("\nconnection {conn}: send failed: {e}");
        return seq;
    }
    if let Err(e) = tx.send(fin(conn, dir, seq)).await {
        eprintln!("\nconnection {conn}: sending the FIN failed: {e}");
    }
    seq
}

/// Send numbered messages from `*seq` on until `stop` (then `Ok`) or a send fails; `*seq`
/// is then the number of the first message not sent. No FIN.
pub(crate) async fn send_from(
    tx: &mut ConnSender,
    conn: u32,
    dir: u8,
    seq: &mut u64,
    stop: &AtomicBool,
    tally: &Tally,
) -> Result<(), ConnError> {
    let mut streak = 0;
    while !stop.load(Ordering::Relaxed) {
        tx.send(payload(conn, dir, *seq)).await?;
        *seq += 1;
        add(&tally.sent, 1);
        streak += 1;
        if streak == YIELD_EVERY {
            streak = 0;
            YieldNow(false).await;
        }
    }
    Ok(())
}

/// Send the FIN: `count` messages were sent on `conn` in direction `dir`.
#[cfg_attr(not(unix), allow(dead_code))]
pub(crate) async fn send_fin(tx: &mut ConnSender, conn: u32, dir: u8, count: u64) -> Result<(), ConnError> {
    tx.send(fin(conn, dir, count)).await
}

/// Receive and check messages until the FIN, counting anomalies in `tally`.
pub(crate) async fn recv_loop(mut rx: ConnReceiver, conn: u32, dir: u8, tally: &Tally) {
    let mut checker = Checker::new(conn, dir);
    if let Err(e) = recv_checked(&mut rx, &mut checker, tally).await {
        eprintln!("\nconnection {conn}: receive ended early: {e}");
    }
}

/// Receive and check messages until the FIN (`Ok`) or a receive fails; `checker` then holds
/// where the direction got to.
pub(crate) async fn recv_checked(rx: &mut ConnReceiver, checker: &mut Checker, tally: &Tally) -> Result<(), ConnError> {
    let mut streak = 0;
    loop {
        let msg = rx.recv().await?;
        if checker.check(&msg, tally) == Checked::Fin {
            return Ok(());
        }
        streak += 1;
        if streak == YIELD_EVERY {
            streak = 0;
            YieldNow(false).await;
        }
    }
}

/// What one message was.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Checked {
    /// A numbered message (counted, well-formed or not).
    Message,
    /// The FIN: the anomalies it revealed are counted, the direction is finished.
    Fin,
}

/// The receiving end of one direction of one connection: the next number expected and the
/// numbers skipped so far (a late arrival of one of those is "reordered").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checker {
    /// The connection.
    pub(crate) conn: u32,
    /// Its direction (0 initiator to acceptor, 1 back).
    pub(crate) dir: u8,
    /// The next number expected.
    pub(crate) next: u64,
    /// Numbers below `next` not seen yet.
    pub(crate) missing: BTreeSet<u64>,
}

impl Checker {
    /// Nothing received yet.
    pub(crate) fn new(conn: u32, dir: u8) -> Self {
        Self { conn, dir, next: 0, missing: BTreeSet::new() }
    }

    /// Check one message, counting it in `tally`.
    pub(crate) fn check(&mut self, msg: &[u8], tally: &Tally) -> Checked {
        let (conn, dir) = (self.conn, self.dir);
        let (Some(seq), Some(c), Some(&d)) = (
            msg.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes),
            msg.get(8..12).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes),
            msg.get(12),
        ) else {
            add(&tally.corrupted, 1);
            return Checked::Message;
        };
        if c != conn || d != dir {
            add(&tally.corrupted, 1);
            return Checked::Message;
        }
        if seq == FIN {
            let count = msg.get(HEADER..HEADER + 8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes);
            add(&tally.lost, count.saturating_sub(self.next) + self.missing.len() as u64);
            tally.finished.fetch_add(1, Ordering::SeqCst);
            return Checked::Fin;
        }
        let body = &msg[HEADER..];
        if body.len() != body_len(conn, seq) || body.iter().enumerate().any(|(k, b)| *b != body_byte(conn, dir, seq, k))
        {
            add(&tally.corrupted, 1);
            return Checked::Message;
        }
        add(&tally.bytes, msg.len() as u64);
        if seq == self.next {
            self.next += 1;
            add(&tally.delivered, 1);
        } else if seq > self.next {
            // A gap: remember what is missing (a late arrival is then "reordered").
            self.missing.extend(self.next..seq);
            self.next = seq + 1;
            add(&tally.delivered, 1);
        } else if self.missing.remove(&seq) {
            add(&tally.reordered, 1);
            add(&tally.delivered, 1);
        } else {
            add(&tally.duplicated, 1);
        }
        Checked::Message
    }
}
