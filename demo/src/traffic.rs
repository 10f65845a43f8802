//! The demo's traffic: on every connection, in each direction, a sender of sequence-numbered
//! payloads and a receiver that checks each one (number, connection, direction, contents)
//! and counts what was lost, duplicated, reordered or corrupted.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use sotto_tokio::{ConnReceiver, ConnSender};

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
    let mut streak = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = tx.send(payload(conn, dir, seq)).await {
            eprintln!("\nconnection {conn}: send failed: {e}");
            return seq;
        }
        seq += 1;
        add(&tally.sent, 1);
        streak += 1;
        if streak == YIELD_EVERY {
            streak = 0;
            YieldNow(false).await;
        }
    }
    if let Err(e) = tx.send(fin(conn, dir, seq)).await {
        eprintln!("\nconnection {conn}: sending the FIN failed: {e}");
    }
    seq
}

/// Receive and check messages until the FIN, counting anomalies in `tally`.
pub(crate) async fn recv_loop(mut rx: ConnReceiver, conn: u32, dir: u8, tally: &Tally) {
    let mut next = 0u64;
    let mut missing = BTreeSet::new();
    let mut streak = 0;
    loop {
        let msg = match rx.recv().await {
            Ok(m) => m,
            Err(e) => {
                eprintln!("\nconnection {conn}: receive ended early: {e}");
                return;
            }
        };
        let (Some(seq), Some(c), Some(&d)) = (
            msg.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes),
            msg.get(8..12).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes),
            msg.get(12),
        ) else {
            add(&tally.corrupted, 1);
            continue;
        };
        if c != conn || d != dir {
            add(&tally.corrupted, 1);
            continue;
        }
        if seq == FIN {
            let count = msg.get(HEADER..HEADER + 8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes);
            add(&tally.lost, count.saturating_sub(next) + missing.len() as u64);
            tally.finished.fetch_add(1, Ordering::SeqCst);
            return;
        }
        let body = &msg[HEADER..];
        if body.len() != body_len(conn, seq) || body.iter().enumerate().any(|(k, b)| *b != body_byte(conn, dir, seq, k))
        {
            add(&tally.corrupted, 1);
            continue;
        }
        add(&tally.bytes, msg.len() as u64);
        if seq == next {
            next += 1;
            add(&tally.delivered, 1);
        } else if seq > next {
            // A gap: remember what is missing (a late arrival is then "reordered").
            missing.extend(next..seq);
            next = seq + 1;
            add(&tally.delivered, 1);
        } else if missing.remove(&seq) {
            add(&tally.reordered, 1);
            add(&tally.delivered, 1);
        } else {
            add(&tally.duplicated, 1);
        }
        streak += 1;
        if streak == YIELD_EVERY {
            streak = 0;
            YieldNow(false).await;
        }
    }
}
