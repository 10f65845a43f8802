//! chaos-proxy: TCP forwarder that kills every connection after a random number of bytes.
//!
//! Usage: chaos-proxy --listen 127.0.0.1:A --upstream 127.0.0.1:B [--min 200] [--max 5000] [--seed S]
//!
//! Each accepted connection is paired with a fresh upstream connection. Bytes are forwarded in
//! both directions; a per-connection budget drawn uniformly from [min, max] counts bytes in both
//! directions together. When the budget is reached the connection is cut at exactly that byte
//! (mid-frame is fine) and both sockets are closed. New connections are accepted forever.
//! Logs one line per connection to stderr.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// xorshift64* — no rand dependency needed.
fn next_rand(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut listen = None;
    let mut upstream = None;
    let (mut min, mut max) = (200u64, 5000u64);
    let mut seed: u64 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let mut it = std::env::args().skip(1);
    while let Some(f) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("missing value for {f}"));
        match f.as_str() {
            "--listen" => listen = Some(v),
            "--upstream" => upstream = Some(v),
            "--min" => min = v.parse().unwrap(),
            "--max" => max = v.parse().unwrap(),
            "--seed" => seed = v.parse().unwrap(),
            _ => panic!("unknown argument {f}"),
        }
    }
    let listener = TcpListener::bind(listen.expect("--listen")).await.unwrap();
    let upstream = upstream.expect("--upstream");
    eprintln!("chaos-proxy: listening on {}", listener.local_addr().unwrap());
    let mut rng = seed | 1;
    let mut id = 0u64;
    loop {
        let (down, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("chaos-proxy: accept: {e}");
                continue;
            }
        };
        let budget = min + next_rand(&mut rng) % (max - min + 1);
        id += 1;
        let up_addr = upstream.clone();
        tokio::spawn(async move {
            let up = match TcpStream::connect(&up_addr).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("chaos-proxy: conn {id}: upstream connect failed: {e}");
                    return;
                }
            };
            let _ = down.set_nodelay(true);
            let _ = up.set_nodelay(true);
            let used = Arc::new(AtomicU64::new(0));
            let kill = Arc::new(Notify::new());
            let (dr, dw) = down.into_split();
            let (ur, uw) = up.into_split();
            let a = pump(dr, uw, budget, used.clone(), kill.clone());
            let b = pump(ur, dw, budget, used.clone(), kill.clone());
            let (ra, rb) = tokio::join!(a, b);
            eprintln!(
                "chaos-proxy: conn {id}: closed after {} of {budget} bytes (c->s {ra:?}, s->c {rb:?})",
                used.load(Ordering::Relaxed)
            );
        });
    }
}

/// Forward until EOF, error, or the shared budget is exhausted. On budget exhaustion, wakes the
/// other direction so both sockets are dropped together.
async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    budget: u64,
    used: Arc<AtomicU64>,
    kill: Arc<Notify>,
) -> &'static str {
    let mut buf = vec![0u8; 4096];
    loop {
        let n = tokio::select! {
            r = r.read(&mut buf) => match r { Ok(0) | Err(_) => { kill.notify_waiters(); kill.notify_one(); return "eof" }, Ok(n) => n },
            _ = kill.notified() => { kill.notify_one(); return "killed" },
        };
        // Reserve part of the shared budget for this chunk.
        let prev = used.fetch_add(n as u64, Ordering::AcqRel);
        let allowed = budget.saturating_sub(prev).min(n as u64) as usize;
        if allowed > 0 && w.write_all(&buf[..allowed]).await.is_err() {
            kill.notify_waiters();
            kill.notify_one();
            return "write-err";
        }
        if allowed < n || prev + n as u64 >= budget {
            used.store(budget, Ordering::Release);
            kill.notify_waiters();
            kill.notify_one();
            return "budget";
        }
    }
}
