//! Numbered messages, exactly-once in-order checks, test configuration and small async
//! helpers that work under any executor (timers from async-io).

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{select, Either};
use sotto_driver::{Config, StableConduit};

/// Message `i`: its index (u64 LE) then a pattern, 8 to ~300 bytes long.
#[must_use]
pub fn message(i: u64) -> Bytes {
    let len = (i.wrapping_mul(37) % 300) as usize;
    let mut v = Vec::with_capacity(8 + len);
    v.extend_from_slice(&i.to_le_bytes());
    v.extend((0..len).map(|k| (i as usize + k) as u8));
    Bytes::from(v)
}

/// Send messages `0..n` in order.
pub async fn send_all(c: &StableConduit, n: u64) {
    for i in 0..n {
        c.send(message(i)).await.expect("send accepted");
    }
}

/// Receive `n` messages and check they are `0..n`, each exactly once, in order.
pub async fn recv_all(c: &StableConduit, n: u64) {
    for i in 0..n {
        let got = c.recv().await.expect("session alive");
        assert_eq!(got, message(i), "message {i}: wrong, duplicated or out of order");
    }
}

/// Both directions at once: `n` messages each way, checked.
pub async fn exchange(a: &StableConduit, b: &StableConduit, n: u64) {
    futures::future::join4(send_all(a, n), recv_all(b, n), send_all(b, n), recv_all(a, n)).await;
}

/// Short timers so faults are noticed fast: keepalive every 100 ms, a link silent for 300 ms
/// after a ping is dead, quick backoff, 60 s recovery.
#[must_use]
pub fn test_config() -> Config {
    let mut c = Config::default();
    c.protocol.ping_interval = Duration::from_millis(100);
    c.protocol.pong_timeout = Duration::from_millis(300);
    c.protocol.min_ping_interval = Duration::from_millis(1);
    c.protocol.handshake_timeout = Duration::from_secs(1);
    // Generous: a loaded CI machine can starve a debug-build test for seconds at a time.
    c.protocol.recovery_timeout = Duration::from_secs(60);
    c.dial.backoff_initial = Duration::from_millis(5);
    c.dial.backoff_max = Duration::from_millis(100);
    c.dial.connect_timeout = Duration::from_secs(5);
    // Most test messages (8 to ~300 bytes) are lent from the replay ring and written
    // vectored, so every fault (one-byte writes, write returning 0, kills mid-frame) hits
    // that path; the rest are copied.
    c.buffers.lend_from = 64;
    c
}

/// Run `f`, panicking if it takes longer than `limit`.
pub async fn within<F: Future>(limit: Duration, what: &str, f: F) -> F::Output {
    let f = std::pin::pin!(f);
    match select(f, async_io::Timer::after(limit)).await {
        Either::Left((out, _)) => out,
        Either::Right(_) => panic!("{what}: did not finish within {limit:?}"),
    }
}

/// Sleep (any executor).
pub async fn sleep(d: Duration) {
    async_io::Timer::after(d).await;
}

/// Poll `cond` every 10 ms until it holds or `limit` passes; returns whether it held.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        sleep(Duration::from_millis(10)).await;
    }
    cond()
}

/// A fresh Unix socket path in the temp dir, unique in this process.
#[must_use]
pub fn unix_path(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let p = std::env::temp_dir().join(format!("sotto-{}-{tag}-{n}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// A seed for this run: `SOTTO_SEED` if set, else from the clock. Tests print it.
#[must_use]
pub fn seed() -> u64 {
    std::env::var("SOTTO_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    })
}
