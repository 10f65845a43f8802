//! The chaos proxy between the two sides: it forwards each accepted TCP connection to the
//! acceptor and kills it (closes both sockets, whatever is in flight) after a random
//! lifetime, so the link dies every few hundred milliseconds, usually mid-frame. It runs on
//! its own thread with its own tokio runtime, so neither side's runtime schedules it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy did.
#[derive(Debug, Default)]
pub(crate) struct ProxyLog {
    /// When each kill happened.
    pub(crate) kills: Mutex<Vec<Instant>>,
    /// Kills that cut a frame in half in at least one direction.
    pub(crate) mid_frame: AtomicU64,
    /// Connections forwarded.
    pub(crate) connections: AtomicU64,
    /// Connections that ended on their own (not killed).
    pub(crate) closed: AtomicU64,
}

/// A running proxy; dropping it stops it.
pub(crate) struct KillProxy {
    /// Where to dial.
    pub(crate) addr: SocketAddr,
    /// What it did.
    pub(crate) log: Arc<ProxyLog>,
    /// Set to stop killing (connections are then forwarded until they end).
    pub(crate) calm: Arc<AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl KillProxy {
    /// Forward to `upstream`, killing each connection after a lifetime drawn uniformly from
    /// `life` (milliseconds), with choices from `seed`.
    pub(crate) fn start(upstream: SocketAddr, life: (u64, u64), seed: u64) -> std::io::Result<Self> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let log = Arc::new(ProxyLog::default());
        let calm = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (log2, calm2) = (Arc::clone(&log), Arc::clone(&calm));
        let thread = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                let Ok(listener) = TcpListener::from_std(std_listener) else { return };
                tokio::select! {
                    () = accept_loop(listener, upstream, life, seed, log2, calm2) => {}
                    _ = stopped => {}
                }
            });
        });
        Ok(Self { addr, log, calm, stop: Some(stop), thread: Some(thread) })
    }

    /// Kills so far.
    pub(crate) fn kills(&self) -> usize {
        self.log.kills.lock().map_or(0, |k| k.len())
    }
}

impl Drop for KillProxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// xorshift64*: deterministic choices from the seed.
pub(crate) fn next_random(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    life: (u64, u64),
    seed: u64,
    log: Arc<ProxyLog>,
    calm: Arc<AtomicBool>,
) {
    let mut rng = seed | 1;
    loop {
        let Ok((down, _)) = listener.accept().await else { continue };
        let Ok(up) = TcpStream::connect(upstream).await else { continue };
        let _ = (down.set_nodelay(true), up.set_nodelay(true));
        log.connections.fetch_add(1, Ordering::Relaxed);
        let ms = life.0 + next_random(&mut rng) % (life.1.saturating_sub(life.0) + 1);
        tokio::spawn(connection(down, up, Duration::from_millis(ms), Arc::clone(&log), Arc::clone(&calm)));
    }
}

async fn connection(down: TcpStream, up: TcpStream, life: Duration, log: Arc<ProxyLog>, calm: Arc<AtomicBool>) {
    let kill_at = tokio::time::Instant::now() + life;
    let (dr, dw) = down.into_split();
    let (ur, uw) = up.into_split();
    let (to_up, to_down) = (Tracker::default(), Tracker::default());
    // Whichever direction ends first (killed, or the stream ended) ends the connection:
    // dropping the other pump closes all four halves, whatever is in flight.
    let ended = tokio::select! {
        e = pump(dr, uw, &to_up, kill_at, &calm) => e,
        e = pump(ur, dw, &to_down, kill_at, &calm) => e,
    };
    match ended {
        End::Killed(at) => {
            if let Ok(mut k) = log.kills.lock() {
                k.push(at);
            }
            if to_up.mid_frame() || to_down.mid_frame() {
                log.mid_frame.fetch_add(1, Ordering::Relaxed);
            }
        }
        End::Closed => {
            log.closed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Follows the length-prefixed frames of one direction to tell whether it is mid-frame.
#[derive(Default)]
struct Tracker {
    /// Bytes of the current prefix seen (0..4) and of the body still to come.
    state: Mutex<(u8, [u8; 4], u64)>,
}

impl Tracker {
    fn advance(&self, mut buf: &[u8]) {
        let Ok(mut state) = self.state.lock() else { return };
        let (mut have, mut prefix, mut body) = *state;
        while !buf.is_empty() {
            if body > 0 {
                let n = body.min(buf.len() as u64);
                body -= n;
                buf = &buf[n as usize..];
            } else {
                prefix[have as usize] = buf[0];
                have += 1;
                buf = &buf[1..];
                if have == 4 {
                    have = 0;
                    body = u64::from(u32::from_le_bytes(prefix));
                }
            }
        }
        *state = (have, prefix, body);
    }

    fn mid_frame(&self) -> bool {
        self.state.lock().is_ok_and(|s| s.0 > 0 || s.2 > 0)
    }
}

/// How a pump stopped.
enum End {
    /// Killed at this instant (taken before anything was closed).
    Killed(Instant),
    /// Its stream ended or failed (or, calm, it ended after the kill time).
    Closed,
}

/// After the kill time, wait at most this long for a read to cut in half.
const CUT_WAIT: Duration = Duration::from_millis(20);

/// Forward `from` to `to` until the kill time; the first read at or after it is forwarded
/// only in part (half of it, cutting a frame), unless the proxy is calm. A direction with
/// nothing to forward for `CUT_WAIT` after the kill time is killed between frames.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    track: &Tracker,
    kill_at: tokio::time::Instant,
    calm: &AtomicBool,
) -> End {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let due = !calm.load(Ordering::SeqCst);
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return End::Closed,
                Ok(n) => n,
            },
            () = tokio::time::sleep_until(kill_at + CUT_WAIT), if due => return End::Killed(Instant::now()),
        };
        let kill = due && tokio::time::Instant::now() >= kill_at;
        let pass = if kill { n / 2 } else { n };
        let at = Instant::now();
        if to.write_all(&buf[..pass]).await.is_err() {
            return End::Closed;
        }
        track.advance(&buf[..pass]);
        if kill {
            return End::Killed(at);
        }
    }
}
