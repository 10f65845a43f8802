//! In-memory links with seeded faults: a [`Net`] dials (the initiator's connector) and
//! listens (the acceptor's stream of streams); each dial either fails or makes a duplex
//! [`SimStream`] pair whose fault plan is drawn from the net's generator.
//!
//! Faults a link can carry (one per faulty link, drawn when it is made):
//! - **kill** at any byte of either direction: the write that reaches it stops there, then
//!   both directions reset (reads fail, buffered bytes are lost) or end (reads drain what was
//!   buffered, then see end of stream); writes fail;
//! - **half-open** at any byte: from there on both directions are a void (writes succeed and
//!   vanish, reads wait forever, closing is not seen by the peer), as when a peer vanishes
//!   without a reset;
//! - **stalls**: a read waits a seeded time (up to `max_stall`) before it sees data.
//!
//! Every link (faulty or not) does short reads and writes (any length from one byte) and
//! spurious wake-ups (a `Pending` with an immediate wake, the in-memory form of a zero-length
//! readiness). A write returns `Ok(0)` never: the driver treats that as a dead link
//! (`WriteZero`), so a dead link answers with an error instead.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::io::{AsyncRead, AsyncWrite};
use futures::Stream;
use sotto_driver::{Runtime, Timer};
use sotto_tests::SimRng;

use crate::executor::{SimRuntime, SimTimer};

/// What faults a [`Net`] injects, in per-mille chances.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Faults {
    /// Chance that a dial fails (at once, or after up to 200 ms).
    pub dial_fail: u32,
    /// Links that may carry a fault: the first this many made; later links are clean, so a
    /// run always finishes.
    pub faulty_links: u64,
    /// Chance that one of those links carries a kill or half-open fault.
    pub link_fault: u32,
    /// Of the faulty links, the chance that the fault is half-open rather than a kill.
    pub half_open: u32,
    /// Bytes a fault may wait for before it strikes: drawn uniformly up to this.
    pub fault_within: u64,
    /// Chance per read or write of a short transfer.
    pub short_io: u32,
    /// Chance per read or write of a spurious wake-up instead of progress.
    pub spurious: u32,
    /// Chance per read of a stall first.
    pub stall: u32,
    /// The longest stall.
    pub max_stall: Duration,
    /// Bytes a direction buffers before writes wait (drawn per link up to this, at least 1).
    pub max_buffer: usize,
}

impl Faults {
    /// No faults at all, short transfers neither.
    #[must_use]
    pub fn none() -> Self {
        Self {
            dial_fail: 0,
            faulty_links: 0,
            link_fault: 0,
            half_open: 0,
            fault_within: 0,
            short_io: 0,
            spurious: 0,
            stall: 0,
            max_stall: Duration::ZERO,
            max_buffer: 64 << 10,
        }
    }

    /// A seeded mix of everything, for randomized runs.
    #[must_use]
    pub fn random(rng: &mut SimRng) -> Self {
        Self {
            dial_fail: rng.range(0, 400) as u32,
            faulty_links: rng.range(0, 6),
            link_fault: rng.range(300, 1000) as u32,
            half_open: rng.range(0, 500) as u32,
            fault_within: rng.range(1, 6000),
            short_io: rng.range(0, 500) as u32,
            spurious: rng.range(0, 100) as u32,
            stall: rng.range(0, 30) as u32,
            max_stall: Duration::from_millis(rng.range(1, 300)),
            max_buffer: rng.range(1, 64 << 10) as usize,
        }
    }
}

/// Counters of what a [`Net`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NetStats {
    /// Dials attempted.
    pub dials: u64,
    /// Dials failed by the plan.
    pub dial_failures: u64,
    /// Links made.
    pub links: u64,
    /// Links killed (reset or ended) by the plan.
    pub kills: u64,
    /// Links that went half-open.
    pub half_opens: u64,
    /// Most bytes buffered in one direction of one link at once.
    pub max_buffered: usize,
}

struct NetInner {
    rng: SimRng,
    faults: Faults,
    backlog: VecDeque<SimStream>,
    listener: Option<Waker>,
    stats: NetStats,
}

/// The simulated network between one initiator and one acceptor.
#[derive(Clone)]
pub struct Net {
    rt: SimRuntime,
    inner: Arc<Mutex<NetInner>>,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net").finish_non_exhaustive()
    }
}

impl Net {
    /// A network on `rt` injecting `faults`, its choices drawn from `seed`.
    #[must_use]
    pub fn new(rt: &SimRuntime, seed: u64, faults: Faults) -> Self {
        let inner = NetInner {
            rng: SimRng::new(seed),
            faults,
            backlog: VecDeque::new(),
            listener: None,
            stats: NetStats::default(),
        };
        Self { rt: rt.clone(), inner: Arc::new(Mutex::new(inner)) }
    }

    fn lock(&self) -> MutexGuard<'_, NetInner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Change the fault plan (for links made from now on).
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// What the net did so far.
    #[must_use]
    pub fn stats(&self) -> NetStats {
        self.lock().stats
    }

    /// Dial the acceptor: the initiator's connector. Fails by the plan, at once or after a
    /// delay; otherwise the other end waits in the listener.
    pub fn dial(&self) -> impl Future<Output = io::Result<SimStream>> + Send + 'static {
        let net = self.clone();
        async move {
            let (fail, delay) = {
                let mut g = net.lock();
                g.stats.dials += 1;
                let chance = g.faults.dial_fail;
                let fail = g.rng.chance(chance);
                let delay = if g.rng.chance(500) { g.rng.range(0, 200_000) } else { 0 };
                (fail, Duration::from_micros(delay))
            };
            if !delay.is_zero() {
                net.rt.sleep(delay).await;
            }
            if fail {
                net.lock().stats.dial_failures += 1;
                return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "simulated dial failure"));
            }
            let (a, b) = net.pair();
            let mut g = net.lock();
            g.backlog.push_back(b);
            if let Some(w) = g.listener.take() {
                w.wake();
            }
            Ok(a)
        }
    }

    /// A connected pair with a fault plan drawn now: (dialer's end, acceptor's end).
    #[must_use]
    pub fn pair(&self) -> (SimStream, SimStream) {
        let mut g = self.lock();
        let f = g.faults;
        g.stats.links += 1;
        let faulty = g.stats.links <= f.faulty_links && g.rng.chance(f.link_fault);
        let mut fault = None;
        if faulty {
            let dir = g.rng.below(2) as usize;
            let at = g.rng.range(0, f.fault_within);
            fault = Some(if g.rng.chance(f.half_open) {
                Fault { dir, at, kind: FaultKind::HalfOpen }
            } else {
                Fault { dir, at, kind: FaultKind::Kill { reset: g.rng.chance(500) } }
            });
        }
        let cap = g.rng.range(1, f.max_buffer.max(1) as u64) as usize;
        let link = Arc::new(Mutex::new(Link {
            dirs: [Pipe::new(cap), Pipe::new(cap)],
            fault,
            void: false,
            max_buffered: 0,
            net: Arc::clone(&self.inner),
        }));
        let a = SimStream::new(&self.rt, Arc::clone(&link), 0, g.rng.fork(1), f);
        let b = SimStream::new(&self.rt, link, 1, g.rng.fork(2), f);
        (a, b)
    }

    /// The acceptor's stream of accepted streams (for [`sotto_driver::serve`]).
    #[must_use]
    pub fn listener(&self) -> Listener {
        Listener { net: self.clone() }
    }

    /// The acceptor's stream of accepted streams with a source of 0 (for
    /// [`sotto_driver::serve_sessions`]).
    pub fn session_listener(&self) -> impl Stream<Item = io::Result<(SimStream, u64)>> + Send + 'static {
        futures::StreamExt::map(self.listener(), |r| r.map(|s| (s, 0)))
    }
}

/// Streams dialed to a [`Net`], as an acceptor takes them. Never ends.
pub struct Listener {
    net: Net,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").finish_non_exhaustive()
    }
}

impl Stream for Listener {
    type Item = io::Result<SimStream>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut g = self.net.lock();
        match g.backlog.pop_front() {
            Some(s) => Poll::Ready(Some(Ok(s))),
            None => {
                g.listener = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum FaultKind {
    /// Reset (`true`: buffered bytes lost, reads fail) or end of stream (`false`).
    Kill {
        reset: bool,
    },
    HalfOpen,
}

#[derive(Clone, Copy, Debug)]
struct Fault {
    /// The direction whose byte count triggers it (0: bytes the dialer's end writes).
    dir: usize,
    /// After this many bytes in that direction.
    at: u64,
    kind: FaultKind,
}

/// One direction of a link.
struct Pipe {
    buf: VecDeque<u8>,
    cap: usize,
    written: u64,
    reader: Option<Waker>,
    writer: Option<Waker>,
    /// The writer closed (or dropped) its end: reads drain, then see end of stream.
    eof: bool,
    /// Reset: reads and writes fail.
    reset: bool,
    /// The reader dropped its end: writes fail.
    reader_gone: bool,
}

impl Pipe {
    fn new(cap: usize) -> Self {
        Self {
            buf: VecDeque::new(),
            cap,
            written: 0,
            reader: None,
            writer: None,
            eof: false,
            reset: false,
            reader_gone: false,
        }
    }
    fn wake(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }
}

struct Link {
    /// `dirs[i]` carries what end `i` writes.
    dirs: [Pipe; 2],
    fault: Option<Fault>,
    /// Half-open: writes vanish, reads wait forever, closes are not seen.
    void: bool,
    max_buffered: usize,
    net: Arc<Mutex<NetInner>>,
}

impl Link {
    fn strike(&mut self, kind: FaultKind) {
        let mut net = self.net.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match kind {
            FaultKind::Kill { reset } => {
                net.stats.kills += 1;
                for d in &mut self.dirs {
                    if reset {
                        d.reset = true;
                        d.buf.clear();
                    } else {
                        d.eof = true;
                        d.reader_gone = true;
                    }
                    d.wake();
                }
            }
            FaultKind::HalfOpen => {
                net.stats.half_opens += 1;
                self.void = true;
            }
        }
        net.stats.max_buffered = net.stats.max_buffered.max(self.max_buffered);
    }
}

/// One end of a simulated link: `futures::io::AsyncRead + AsyncWrite`, and a sotto
/// [`Io`](sotto_driver::Io).
pub struct SimStream {
    link: Arc<Mutex<Link>>,
    side: usize,
    rng: SimRng,
    faults: Faults,
    rt: SimRuntime,
    stall: Option<SimTimer>,
}

impl std::fmt::Debug for SimStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimStream").field("side", &self.side).finish_non_exhaustive()
    }
}

impl SimStream {
    fn new(rt: &SimRuntime, link: Arc<Mutex<Link>>, side: usize, rng: SimRng, faults: Faults) -> Self {
        Self { link, side, rng, faults, rt: rt.clone(), stall: None }
    }

    fn lock(&self) -> MutexGuard<'_, Link> {
        self.link.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A shorter length than `n` (at least 1) by the plan's chance.
    fn shorten(&mut self, n: usize) -> usize {
        if n > 1 && self.rng.chance(self.faults.short_io) {
            self.rng.range(1, n as u64 - 1) as usize
        } else {
            n
        }
    }

    fn spurious(&mut self, cx: &Context<'_>) -> bool {
        if self.rng.chance(self.faults.spurious) {
            cx.waker().wake_by_ref();
            true
        } else {
            false
        }
    }
}

impl AsyncRead for SimStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(t) = this.stall.as_mut() {
            if t.poll_expired(cx).is_pending() {
                return Poll::Pending;
            }
            this.stall = None;
        }
        if this.spurious(cx) {
            return Poll::Pending;
        }
        if out.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let want = this.shorten(out.len());
        let side = this.side;
        let stall = this.rng.chance(this.faults.stall);
        let stall_for = this.rng.duration_std(this.faults.max_stall);
        let link = Arc::clone(&this.link);
        let mut l = link.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let void = l.void;
        let p = &mut l.dirs[1 - side];
        if p.reset {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        if !p.buf.is_empty() {
            if stall && !stall_for.is_zero() {
                drop(l);
                let mut t = this.rt.timer();
                t.reset(this.rt.now() + stall_for);
                let _ = t.poll_expired(cx);
                this.stall = Some(t);
                return Poll::Pending;
            }
            let n = want.min(p.buf.len());
            for (o, b) in out.iter_mut().zip(p.buf.drain(..n)) {
                *o = b;
            }
            if let Some(w) = p.writer.take() {
                w.wake();
            }
            return Poll::Ready(Ok(n));
        }
        if p.eof && !void {
            return Poll::Ready(Ok(0));
        }
        p.reader = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.spurious(cx) {
            return Poll::Pending;
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let want = this.shorten(buf.len());
        let side = this.side;
        let link = Arc::clone(&this.link);
        let mut l = link.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let void = l.void;
        let fault = l.fault;
        let p = &mut l.dirs[side];
        if p.reset {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        if p.eof || p.reader_gone {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if void {
            p.written += want as u64;
            return Poll::Ready(Ok(want));
        }
        let room = p.cap.saturating_sub(p.buf.len());
        if room == 0 {
            p.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut n = want.min(room);
        let mut strike = None;
        if let Some(f) = fault.filter(|f| f.dir == side) {
            if f.at < p.written + n as u64 {
                n = f.at.saturating_sub(p.written) as usize;
                strike = Some(f.kind);
            }
        }
        p.buf.extend(&buf[..n]);
        p.written += n as u64;
        let buffered = p.buf.len();
        if let Some(w) = p.reader.take() {
            w.wake();
        }
        l.max_buffered = l.max_buffered.max(buffered);
        if let Some(kind) = strike {
            l.fault = None;
            l.strike(kind);
            if n == 0 {
                return match kind {
                    FaultKind::HalfOpen => Poll::Ready(Ok(want)),
                    FaultKind::Kill { .. } => Poll::Ready(Err(io::ErrorKind::ConnectionReset.into())),
                };
            }
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let l = self.lock();
        if l.dirs[self.side].reset {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let side = self.side;
        let mut l = self.lock();
        if !l.void {
            l.dirs[side].eof = true;
            l.dirs[side].wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for SimStream {
    fn drop(&mut self) {
        let side = self.side;
        let mut l = self.lock();
        if l.void {
            return;
        }
        l.dirs[side].eof = true;
        l.dirs[side].wake();
        l.dirs[1 - side].reader_gone = true;
        l.dirs[1 - side].wake();
    }
}

impl sotto_driver::Io for SimStream {}

/// Seeded `std` durations.
trait DurationStd {
    fn duration_std(&mut self, max: Duration) -> Duration;
}

impl DurationStd for SimRng {
    fn duration_std(&mut self, max: Duration) -> Duration {
        Duration::from_nanos(self.range(0, max.as_nanos() as u64))
    }
}
