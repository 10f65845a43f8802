//! A chaos proxy on plain threads (so it serves tokio and smol tests alike): it forwards each
//! accepted connection to the upstream address and, for the first `faults` connections,
//! injects one fault after a random number of bytes (counted over both directions):
//!
//! - **kill**: both sockets are shut down exactly at that byte (mid-frame, usually);
//! - **stall**: forwarding pauses for `stall` in both directions, goes on, and the connection
//!   is killed after another budget of bytes;
//! - **half-open**: forwarding stops silently and the sockets stay open (only keepalive can
//!   tell), until the proxy stops or `half_open_hold` passes.
//!
//! After `faults` connections it forwards faithfully, so the workload can finish (liveness
//! once faults stop). Everything stops when the proxy is dropped; every loop is bounded by a
//! stop flag checked at least every 20 ms.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Where a proxy listens or forwards to.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// A loopback TCP address.
    Tcp(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

/// What the proxy does to connections.
#[derive(Clone, Copy, Debug)]
pub struct Chaos {
    /// Seed of the proxy's choices (printed by tests on failure).
    pub seed: u64,
    /// A fault hits after a number of bytes drawn uniformly from this range.
    pub budget: (u64, u64),
    /// How many connections get a fault; later ones are forwarded faithfully.
    pub faults: u32,
    /// Every `n`-th faulty connection stalls instead of being killed (0: never).
    pub stall_every: u32,
    /// Every `n`-th faulty connection goes half-open instead (0: never).
    pub half_open_every: u32,
    /// How long a stall lasts.
    pub stall: Duration,
    /// How long a half-open connection is held before the proxy closes it.
    pub half_open_hold: Duration,
    /// The first connection's fault comes after at least this many bytes. An initiator whose
    /// first link is cut before the acceptor's ServerHello reaches it has no resume key yet,
    /// so it redials as a new session and the acceptor is left with an orphan first session;
    /// tests that accept exactly one session need that first handshake to complete.
    pub first_min: u64,
}

impl Chaos {
    /// Kills only, after 1..16 KiB, on the first `faults` connections; the first connection
    /// lives at least through its handshake.
    #[must_use]
    pub fn kills(seed: u64, faults: u32) -> Self {
        Self {
            seed,
            budget: (1, 16 << 10),
            faults,
            stall_every: 0,
            half_open_every: 0,
            stall: Duration::from_millis(200),
            half_open_hold: Duration::from_secs(3),
            first_min: HANDSHAKE_BYTES,
        }
    }
}

/// Both hellos of a handshake, with their length prefixes.
const HANDSHAKE_BYTES: u64 = 2 * (sotto_proto::wire::LEN_PREFIX + sotto_proto::wire::HELLO_LEN) as u64;

/// Counters of what the proxy did.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections killed mid-stream.
    pub kills: AtomicU64,
    /// Stalls injected.
    pub stalls: AtomicU64,
    /// Connections left half-open.
    pub half_opens: AtomicU64,
}

/// A running proxy; dropping it stops every thread.
#[derive(Debug)]
pub struct ChaosProxy {
    /// Where to connect to reach the upstream through the proxy.
    pub endpoint: Endpoint,
    /// What it did so far.
    pub stats: Arc<ProxyStats>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    fn connect(e: &Endpoint) -> io::Result<Self> {
        Ok(match e {
            Endpoint::Tcp(a) => {
                let s = TcpStream::connect(a)?;
                s.set_nodelay(true)?;
                Self::Tcp(s)
            }
            Endpoint::Unix(p) => Self::Unix(UnixStream::connect(p)?),
        })
    }
    fn try_clone(&self) -> io::Result<Self> {
        Ok(match self {
            Self::Tcp(s) => Self::Tcp(s.try_clone()?),
            Self::Unix(s) => Self::Unix(s.try_clone()?),
        })
    }
    fn set_read_timeout(&self, d: Duration) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.set_read_timeout(Some(d)),
            Self::Unix(s) => s.set_read_timeout(Some(d)),
        }
    }
    fn shutdown(&self) {
        let _ = match self {
            Self::Tcp(s) => s.shutdown(Shutdown::Both),
            Self::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read(buf),
            Self::Unix(s) => s.read(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.write_all(buf),
            Self::Unix(s) => s.write_all(buf),
        }
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn accept(&self) -> io::Result<Sock> {
        match self {
            Self::Tcp(l) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(false)?;
                s.set_nodelay(true)?;
                Ok(Sock::Tcp(s))
            }
            Self::Unix(l) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(false)?;
                Ok(Sock::Unix(s))
            }
        }
    }
}

/// xorshift64*: deterministic choices from the seed.
fn next(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Fault {
    None = 0,
    Kill = 1,
    Stall = 2,
    HalfOpen = 3,
}

impl ChaosProxy {
    /// Listen on `listen` (`Tcp` with port 0, or a fresh Unix path) and forward to `upstream`.
    pub fn start(listen: Endpoint, upstream: Endpoint, chaos: Chaos) -> io::Result<Self> {
        let (listener, endpoint) = match listen {
            Endpoint::Tcp(a) => {
                let l = TcpListener::bind(a)?;
                let addr = l.local_addr()?;
                l.set_nonblocking(true)?;
                (Listener::Tcp(l), Endpoint::Tcp(addr))
            }
            Endpoint::Unix(p) => {
                let l = UnixListener::bind(&p)?;
                l.set_nonblocking(true)?;
                (Listener::Unix(l), Endpoint::Unix(p))
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(ProxyStats::default());
        let accept = {
            let stop = Arc::clone(&stop);
            let stats = Arc::clone(&stats);
            thread::spawn(move || accept_loop(&listener, &upstream, chaos, &stop, &stats))
        };
        Ok(Self { endpoint, stats, stop, accept: Some(accept) })
    }

    /// Kills so far.
    #[must_use]
    pub fn kills(&self) -> u64 {
        self.stats.kills.load(Ordering::SeqCst)
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: &Listener,
    upstream: &Endpoint,
    chaos: Chaos,
    stop: &Arc<AtomicBool>,
    stats: &Arc<ProxyStats>,
) {
    let mut rng = chaos.seed | 1;
    let mut n = 0u32;
    let mut conns = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let down = match listener.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(2));
                continue;
            }
            Err(_) => continue,
        };
        stats.connections.fetch_add(1, Ordering::SeqCst);
        let Ok(up) = Sock::connect(upstream) else { continue };
        let fault = if n >= chaos.faults {
            Fault::None
        } else if chaos.half_open_every > 0 && (n + 1) % chaos.half_open_every == 0 {
            Fault::HalfOpen
        } else if chaos.stall_every > 0 && (n + 1) % chaos.stall_every == 0 {
            Fault::Stall
        } else {
            Fault::Kill
        };
        let (lo, hi) = chaos.budget;
        let budget = lo + next(&mut rng) % (hi.saturating_sub(lo) + 1);
        let budget = if n == 0 { budget.max(chaos.first_min) } else { budget };
        n += 1;
        let stop = Arc::clone(stop);
        let stats = Arc::clone(stats);
        conns.push(thread::spawn(move || connection(down, up, fault, budget, chaos, &stop, &stats)));
        conns.retain(|t: &JoinHandle<()>| !t.is_finished());
    }
    for t in conns {
        let _ = t.join();
    }
}

/// Shared by the two directions of one connection.
struct ConnState {
    used: AtomicU64,
    /// The fault to inject (a `Fault` as u8) once `used` reaches `trigger_at`.
    fault: AtomicU8,
    trigger_at: AtomicU64,
    /// Forwarding is over (killed, or either side closed).
    dead: AtomicBool,
    /// Forwarding is paused until this many ms after `start` (stall), or for good (half-open).
    paused_until_ms: AtomicU64,
    start: Instant,
}

fn connection(
    down: Sock,
    up: Sock,
    fault: Fault,
    budget: u64,
    chaos: Chaos,
    stop: &Arc<AtomicBool>,
    stats: &Arc<ProxyStats>,
) {
    let st = Arc::new(ConnState {
        used: AtomicU64::new(0),
        fault: AtomicU8::new(fault as u8),
        trigger_at: AtomicU64::new(budget),
        dead: AtomicBool::new(false),
        paused_until_ms: AtomicU64::new(0),
        start: Instant::now(),
    });
    let (Ok(down2), Ok(up2)) = (down.try_clone(), up.try_clone()) else { return };
    let a = {
        let (st, stop, stats) = (Arc::clone(&st), Arc::clone(stop), Arc::clone(stats));
        thread::spawn(move || pump(down, up2, budget, chaos, &st, &stop, &stats))
    };
    pump(up, down2, budget, chaos, &st, stop, stats);
    let _ = a.join();
}

fn pump(
    mut from: Sock,
    mut to: Sock,
    budget: u64,
    chaos: Chaos,
    st: &ConnState,
    stop: &AtomicBool,
    stats: &ProxyStats,
) {
    let _ = from.set_read_timeout(Duration::from_millis(20));
    let mut buf = vec![0u8; 16 << 10];
    loop {
        if stop.load(Ordering::SeqCst) || st.dead.load(Ordering::SeqCst) {
            break;
        }
        let paused = st.paused_until_ms.load(Ordering::SeqCst);
        if paused > 0 && (st.start.elapsed().as_millis() as u64) < paused {
            thread::sleep(Duration::from_millis(5));
            continue;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(_) => break,
        };
        let before = st.used.fetch_add(n as u64, Ordering::SeqCst);
        let trigger = st.trigger_at.load(Ordering::SeqCst);
        let fault = match st.fault.load(Ordering::SeqCst) {
            1 => Fault::Kill,
            2 => Fault::Stall,
            3 => Fault::HalfOpen,
            _ => Fault::None,
        };
        let mut pass = n;
        let mut hit = false;
        if fault != Fault::None && before < trigger && before + n as u64 >= trigger {
            pass = (trigger - before) as usize;
            hit = true;
        }
        if pass > 0 && to.write_all(&buf[..pass]).is_err() {
            break;
        }
        if !hit {
            continue;
        }
        match fault {
            Fault::Kill => {
                stats.kills.fetch_add(1, Ordering::SeqCst);
                break;
            }
            Fault::Stall => {
                // Lose nothing: forward the rest after the pause, then die a bit later.
                stats.stalls.fetch_add(1, Ordering::SeqCst);
                st.fault.store(Fault::Kill as u8, Ordering::SeqCst);
                st.trigger_at.store(before + n as u64 + budget, Ordering::SeqCst);
                let resume = st.start.elapsed() + chaos.stall;
                st.paused_until_ms.store(resume.as_millis() as u64, Ordering::SeqCst);
                thread::sleep(chaos.stall);
                if to.write_all(&buf[pass..n]).is_err() {
                    break;
                }
            }
            Fault::HalfOpen => {
                stats.half_opens.fetch_add(1, Ordering::SeqCst);
                let until = st.start.elapsed() + chaos.half_open_hold;
                st.paused_until_ms.store(until.as_millis() as u64, Ordering::SeqCst);
                // Hold the sockets open without forwarding until the hold ends or stop.
                while st.start.elapsed() < until && !stop.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(10));
                }
                break;
            }
            Fault::None => {}
        }
    }
    st.dead.store(true, Ordering::SeqCst);
    from.shutdown();
    to.shutdown();
}

/// A fault-free TCP proxy to `addr`, and its address: dropping it cuts every link through it
/// at once, as a crash of the far side would (dropping a handle closes its session with
/// GOODBYE instead).
#[must_use]
pub fn cuttable_tcp(addr: std::net::SocketAddr) -> (ChaosProxy, std::net::SocketAddr) {
    let proxy = ChaosProxy::start(
        Endpoint::Tcp("127.0.0.1:0".parse().expect("addr")),
        Endpoint::Tcp(addr),
        Chaos::kills(crate::workload::seed(), 0),
    )
    .expect("proxy");
    let Endpoint::Tcp(paddr) = proxy.endpoint.clone() else { unreachable!("a TCP proxy listens on TCP") };
    (proxy, paddr)
}
