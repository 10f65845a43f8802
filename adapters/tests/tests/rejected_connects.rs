//! Issue 14, defect 5: many `connect_session` attempts rejected by the acceptor, many in
//! flight at once, on a multi-thread runtime. Each attempt's memory must be what the attempt
//! needs, and all of it must be given back when it fails: a global allocator (this binary
//! only) counts the bytes live and their peak, and the driver's task counter must return to
//! zero. One test in its own binary, because both counters are process-wide.

use std::time::Duration;

use sotto_adapter_tests::live_bytes::{live, peak, reset_peak, LiveBytes};
use sotto_adapter_tests::workload::eventually;
use sotto_proto::wire::{ServerHello, HELLO_LEN, LEN_PREFIX};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[global_allocator]
static GLOBAL: LiveBytes = LiveBytes;

/// Resident set size of this process, from /proc/self/statm (Linux), in bytes.
fn rss() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// An acceptor that answers every ClientHello with REJECTED (as one does for an unknown or
/// expired key), then closes the link.
async fn rejecting_acceptor() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                // Hellos are framed like every message: a u32 LE length prefix.
                let mut hello = [0u8; LEN_PREFIX + HELLO_LEN];
                if s.read_exact(&mut hello).await.is_ok() {
                    let mut reply = (HELLO_LEN as u32).to_le_bytes().to_vec();
                    reply.extend_from_slice(&ServerHello::rejected().encode());
                    let _ = s.write_all(&reply).await;
                }
            });
        }
    });
    addr
}

/// `n` rejected attempts, `wave` in flight at once.
async fn rejected_attempts(addr: std::net::SocketAddr, n: usize, wave: usize) {
    let mut done = 0;
    while done < n {
        let batch = wave.min(n - done);
        let attempts = (0..batch).map(|_| {
            tokio::spawn(sotto_tokio::connect_session(
                move || tokio::net::TcpStream::connect(addr),
                sotto_tokio::Config::default(),
            ))
        });
        for r in futures::future::join_all(attempts).await {
            let r = r.expect("attempt task");
            assert!(matches!(r, Err(sotto_tokio::ConnectError::Rejected)), "{r:?}");
        }
        done += batch;
    }
}

const N: usize = 400;
const WAVE: usize = 100;

#[test]
fn rejected_connects_hold_no_memory_and_no_tasks() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().expect("runtime");
    rt.block_on(async {
        let addr = rejecting_acceptor().await;
        // Warm-up: the runtime's and the acceptor's own lazily made structures.
        rejected_attempts(addr, WAVE, WAVE).await;
        assert!(eventually(Duration::from_secs(10), || sotto_tokio::live_tasks() == 0).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (live0, rss0) = (live(), rss());
        reset_peak();

        rejected_attempts(addr, N, WAVE).await;
        assert!(
            eventually(Duration::from_secs(10), || sotto_tokio::live_tasks() == 0).await,
            "driver tasks left after every attempt failed: {}",
            sotto_tokio::live_tasks()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (live1, rss1, peak) = (live(), rss(), peak());
        eprintln!(
            "{N} rejected attempts, {WAVE} at once: live bytes {live0} -> {live1}, peak {peak} \
             (+{} per attempt in flight), RSS {rss0:?} -> {rss1:?}",
            (peak - live0) / WAVE
        );
        assert!(live1 <= live0 + (64 << 10), "bytes still allocated after the failures: {live0} -> {live1}");
        // An attempt that never attaches needs its session's bookkeeping and a link's
        // buffers, not a full replay ring or a full-size read and write buffer.
        let per_attempt = (peak - live0) / WAVE;
        assert!(per_attempt < 256 << 10, "{per_attempt} bytes per rejected attempt in flight");
        // What the process keeps: the allocator may hold on to freed blocks (glibc keeps
        // large ones it had to zero), which is why the attempts must not ask for large ones.
        if let (Some(before), Some(after)) = (rss0, rss1) {
            assert!(after < before + (64 << 20), "RSS grew from {before} to {after} bytes");
        }
    });
}
