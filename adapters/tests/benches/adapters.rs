//! Adapter benchmarks against raw length-prefixed TCP and yamux, ratios measured in the same run.
//!
//! - one connection, one way, loopback TCP, 16 B / 256 B / 4 KiB / 64 KiB: the tokio adapter
//!   (`send`, `send_many`, the `Sink`, and the connection as a byte stream carrying the
//!   baseline's frames) against raw tokio TCP and against one yamux stream (yamux over tokio
//!   through `tokio-util`'s compat layer), and the smol adapter against raw smol TCP;
//! - the same at 4 KiB and 64 KiB with a 4 MiB credit window, and with the two ends on
//!   separate threads (each end its own current-thread tokio runtime on its own OS thread);
//! - 100 connections at once, aggregate (one session with 100 virtual connections against
//!   100 raw TCP connections);
//! - 16 B round trip, p50 (tokio: raw, sotto, yamux);
//! - resume after a link kill (tokio): from the kill to the first message delivered over the
//!   next link, for a message sent at the moment of the kill (so it can only travel on the
//!   next link). No backoff applies (a link that had attached is redialed at once).
//!
//! The raw baseline (and the yamux one, over its stream) is the fastest plain loop: the writer
//! lays length-prefixed frames into one large buffer (`SOTTO_BENCH_RAW_BUF_KIB`, default
//! 256 KiB) and writes it whole when the next frame does not fit; the reader reads into one
//! large buffer and parses the frames in place (no copy, no allocation, no reference count).
//!
//! Unless a case says "2 threads", tokio cases run on one current-thread runtime and smol
//! cases on smol's global executor with one thread: both ends in one thread, so the ratio is
//! one of CPU cost per message. Each case runs `SOTTO_BENCH_RUNS` times (default 5), every
//! contender once per run, in an order that rotates from run to run; the table shows
//! medians of the rates and the median and range of the per-run ratios, and the load
//! average when the case started. Environment: `SOTTO_BENCH_ONLY` (substring of a case
//! name), `SOTTO_BENCH_SCALE` (multiplies message counts), `SOTTO_BENCH_CREDIT_KIB`
//! (per-connection credit of the default cases instead of 256 KiB), `SOTTO_BENCH_SKIP_RAW`
//! (measure sotto only, to profile it), `SOTTO_BENCH_VERBOSE` (print every run). Each case
//! first runs every contender once uncounted (warm-up).

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::join_all;
use sotto_tokio::{Config, ConnReceiver, ConnSender, Connection, SessionHandle};

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn runs() -> usize {
    env_f64("SOTTO_BENCH_RUNS", 5.0) as usize
}

/// `SOTTO_BENCH_SKIP_RAW` set: only sotto is measured (to profile it).
fn skip_raw() -> bool {
    std::env::var_os("SOTTO_BENCH_SKIP_RAW").is_some()
}

fn verbose() -> bool {
    std::env::var_os("SOTTO_BENCH_VERBOSE").is_some()
}

fn selected(name: &str) -> bool {
    std::env::var("SOTTO_BENCH_ONLY").map_or(true, |s| name.contains(&s))
}

fn count_for(size: usize) -> u64 {
    let scale = env_f64("SOTTO_BENCH_SCALE", 1.0);
    let n = ((128u64 << 20) / size as u64).clamp(8_000, 1_000_000);
    ((n as f64 * scale) as u64).max(100)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The one-minute load average (the machine may be shared; figures are noisy when it is high).
fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// The bench's sotto config; `credit_kib` overrides the per-connection credit (else
/// `SOTTO_BENCH_CREDIT_KIB`, else the default).
fn config_with(credit_kib: Option<u32>) -> Config {
    let mut c = Config::default();
    c.acceptor.max_sessions = 2;
    c.acceptor.max_pending_handshakes = 4;
    let env = std::env::var("SOTTO_BENCH_CREDIT_KIB").ok().and_then(|s| s.parse::<u32>().ok());
    if let Some(k) = credit_kib.or(env) {
        c.protocol.initial_credit = k << 10;
    }
    c
}

fn config() -> Config {
    config_with(None)
}

/// The yamux release measured (the dev-dependency's version, kept in step with Cargo.toml).
const YAMUX_VERSION: &str = "0.14.1";

/// Every sender's payload bytes: static, so a `Bytes` of them clones without touching a
/// reference count (the raw writer, too, writes from a slice it already has).
static PAYLOAD: [u8; 65536] = [7; 65536];

// ---- raw length-prefixed frames (the baseline's plain loop, also used over yamux) ----

fn write_buf_len(size: usize) -> usize {
    let kib = env_f64("SOTTO_BENCH_RAW_BUF_KIB", 256.0) as usize;
    (kib << 10).max(size + 4)
}

/// Writes `n` frames of `size` bytes to `w`: laid into one buffer, written whole whenever the
/// next frame does not fit, and once at the end.
macro_rules! write_frames {
    ($w:expr, $size:expr, $n:expr) => {{
        let size = $size;
        let payload = &PAYLOAD[..size];
        let header = (size as u32).to_le_bytes();
        let mut buf = Vec::with_capacity(write_buf_len(size));
        for _ in 0..$n {
            if buf.capacity() - buf.len() < size + 4 {
                $w.write_all(&buf).await.expect("write");
                buf.clear();
            }
            buf.extend_from_slice(&header);
            buf.extend_from_slice(payload);
        }
        $w.write_all(&buf).await.expect("write");
        $w.flush().await.expect("flush");
    }};
}

async fn write_frames_tokio<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, size: usize, n: u64) {
    use tokio::io::AsyncWriteExt;
    write_frames!(w, size, n);
}

async fn write_frames_futures<W: futures::io::AsyncWrite + Unpin>(w: &mut W, size: usize, n: u64) {
    use futures::io::AsyncWriteExt;
    write_frames!(w, size, n);
}

/// Parses length-prefixed frames in place from one large read buffer.
struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl FrameReader {
    fn new(size: usize) -> Self {
        Self { buf: vec![0; (256usize << 10).max(2 * (size + 4))], start: 0, end: 0 }
    }

    /// The next complete frame's payload length, if one is buffered (its bytes are handed
    /// to `black_box`, as an application would read them in place).
    #[inline]
    fn take(&mut self) -> Option<usize> {
        let avail = &self.buf[self.start..self.end];
        if avail.len() < 4 {
            return None;
        }
        let len = u32::from_le_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if avail.len() < 4 + len {
            return None;
        }
        std::hint::black_box(&avail[4..4 + len]);
        self.start += 4 + len;
        Some(len)
    }

    /// Free space to read into; moves a partial frame to the front when less than half the
    /// buffer is left behind it (the buffer holds at least two frames, so a frame always fits).
    fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.end < self.buf.len() / 2 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    fn filled(&mut self, k: usize) {
        assert!(k > 0, "eof");
        self.end += k;
    }

    async fn next_tokio<R: tokio::io::AsyncRead + Unpin>(&mut self, io: &mut R) -> usize {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(len) = self.take() {
                return len;
            }
            let k = io.read(self.spare()).await.expect("read");
            self.filled(k);
        }
    }

    async fn next_futures<R: futures::io::AsyncRead + Unpin>(&mut self, io: &mut R) -> usize {
        use futures::io::AsyncReadExt;
        loop {
            if let Some(len) = self.take() {
                return len;
            }
            let k = io.read(self.spare()).await.expect("read");
            self.filled(k);
        }
    }
}

async fn read_frames_tokio<R: tokio::io::AsyncRead + Unpin>(r: &mut R, size: usize, n: u64) {
    use tokio::io::AsyncReadExt;
    let mut rd = FrameReader::new(size);
    let mut got = 0;
    loop {
        while let Some(len) = rd.take() {
            assert_eq!(len, size);
            got += 1;
        }
        if got >= n {
            break;
        }
        let k = r.read(rd.spare()).await.expect("read");
        rd.filled(k);
    }
}

async fn read_frames_futures<R: futures::io::AsyncRead + Unpin>(r: &mut R, size: usize, n: u64) {
    use futures::io::AsyncReadExt;
    let mut rd = FrameReader::new(size);
    let mut got = 0;
    loop {
        while let Some(len) = rd.take() {
            assert_eq!(len, size);
            got += 1;
        }
        if got >= n {
            break;
        }
        let k = r.read(rd.spare()).await.expect("read");
        rd.filled(k);
    }
}

async fn tokio_tcp_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let (a, b) = futures::future::join(tokio::net::TcpStream::connect(addr), l.accept()).await;
    let (a, (b, _)) = (a.expect("connect"), b.expect("accept"));
    a.set_nodelay(true).expect("nodelay");
    b.set_nodelay(true).expect("nodelay");
    (a, b)
}

async fn raw_tokio_oneway(mut a: tokio::net::TcpStream, mut b: tokio::net::TcpStream, size: usize, n: u64) {
    let writer = write_frames_tokio(&mut a, size, n);
    let reader = read_frames_tokio(&mut b, size, n);
    let _ = futures::future::join(writer, reader).await;
}

async fn smol_tcp_pair() -> (smol::net::TcpStream, smol::net::TcpStream) {
    let l = smol::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let (a, b) = futures::future::join(smol::net::TcpStream::connect(addr), l.accept()).await;
    let (a, (b, _)) = (a.expect("connect"), b.expect("accept"));
    a.set_nodelay(true).expect("nodelay");
    b.set_nodelay(true).expect("nodelay");
    (a, b)
}

async fn raw_smol_oneway(mut a: smol::net::TcpStream, mut b: smol::net::TcpStream, size: usize, n: u64) {
    let writer = smol::spawn(async move {
        write_frames_futures(&mut a, size, n).await;
        a
    });
    let reader = smol::spawn(async move {
        read_frames_futures(&mut b, size, n).await;
        b
    });
    let _ = futures::future::join(writer, reader).await;
}

// ---- yamux (one stream over one TCP connection, on tokio through the compat layer) ----

/// The client end: opens one outbound stream and spawns the connection's driver.
async fn yamux_client(tcp: tokio::net::TcpStream) -> yamux::Stream {
    use tokio_util::compat::TokioAsyncReadCompatExt;
    let mut conn = yamux::Connection::new(tcp.compat(), yamux::Config::default(), yamux::Mode::Client);
    let stream = futures::future::poll_fn(|cx| conn.poll_new_outbound(cx)).await.expect("yamux open");
    tokio::spawn(
        async move { while let Some(Ok(_)) = futures::future::poll_fn(|cx| conn.poll_next_inbound(cx)).await {} },
    );
    stream
}

/// The server end: spawns the connection's driver; the first inbound stream arrives on the
/// returned channel (yamux announces a stream with its first data).
fn yamux_server(tcp: tokio::net::TcpStream) -> oneshot::Receiver<yamux::Stream> {
    use tokio_util::compat::TokioAsyncReadCompatExt;
    let mut conn = yamux::Connection::new(tcp.compat(), yamux::Config::default(), yamux::Mode::Server);
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        while let Some(Ok(s)) = futures::future::poll_fn(|cx| conn.poll_next_inbound(cx)).await {
            if let Some(tx) = tx.take() {
                let _ = tx.send(s);
            }
        }
    });
    rx
}

async fn yamux_oneway(a: tokio::net::TcpStream, b: tokio::net::TcpStream, size: usize, n: u64) {
    let server = yamux_server(b);
    let mut client = yamux_client(a).await;
    let writer = async {
        write_frames_futures(&mut client, size, n).await;
    };
    let reader = async {
        let mut s = server.await.expect("yamux stream");
        read_frames_futures(&mut s, size, n).await;
        s
    };
    let _ = futures::future::join(writer, reader).await;
}

// ---- sotto ----

/// One session (initiator `a`, acceptor `b`) and `k` connections opened by `a`.
struct SessionPair {
    a: SessionHandle,
    _b: SessionHandle,
    conns: Vec<(Connection, Connection)>,
    _keep: Box<dyn std::any::Any>,
}

async fn open_conns(a: &SessionHandle, b: &SessionHandle, k: usize) -> Vec<(Connection, Connection)> {
    let opens = async {
        let mut v = Vec::new();
        for _ in 0..k {
            v.push(a.open(b"bench").await.expect("open"));
        }
        v
    };
    let accepts = async {
        let mut v = Vec::new();
        for _ in 0..k {
            v.push(b.accept().await.expect("accept").accept(b"").await.expect("answer"));
        }
        v
    };
    let (x, y) = futures::future::join(opens, accepts).await;
    x.into_iter().zip(y).collect()
}

async fn tokio_session(k: usize, credit_kib: Option<u32>) -> SessionPair {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let acc = sotto_tokio::serve_sessions_tcp(l, config_with(credit_kib)).expect("config");
    let a = sotto_tokio::connect_session(move || dial_tokio(addr), config_with(credit_kib)).await.expect("connect");
    let b = acc.accept().await.expect("accept");
    let conns = open_conns(&a, &b, k).await;
    SessionPair { a, _b: b, conns, _keep: Box::new(acc) }
}

async fn dial_tokio(addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

async fn smol_session(k: usize) -> SessionPair {
    let l = smol::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let acc = sotto_smol::serve_sessions_tcp(l, config()).expect("config");
    let a = sotto_smol::connect_session(
        move || async move {
            let s = smol::net::TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Ok(s)
        },
        config(),
    )
    .await
    .expect("connect");
    let b = acc.accept().await.expect("accept");
    let conns = open_conns(&a, &b, k).await;
    SessionPair { a, _b: b, conns, _keep: Box::new(acc) }
}

/// How the sotto sender hands messages over.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// `ConnSender::send` per message (one lock each).
    Send,
    /// `ConnSender::send_many`, bursts of up to 64.
    SendMany,
    /// The `Sink`, fed a stream of the messages (`SinkExt::send_all`: it flushes when the
    /// stream is pending or done, or when the sink is full).
    Sink,
    /// The connection as a byte stream (`AsyncWrite` / `AsyncRead`) carrying the raw
    /// baseline's length-prefixed frames with the same plain loop, as the yamux case does
    /// over its stream: no message boundaries kept by sotto.
    Bytes,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::SendMany => "send_many",
            Self::Sink => "sink",
            Self::Bytes => "bytes",
        }
    }
}

async fn sotto_send(mut tx: ConnSender, size: usize, n: u64, mode: Mode) -> ConnSender {
    use futures::SinkExt;
    let payload = Bytes::from_static(&PAYLOAD[..size]);
    match mode {
        Mode::Send => {
            for _ in 0..n {
                tx.send(&payload).await.expect("send");
            }
        }
        Mode::SendMany => {
            let burst = [&payload[..]; 64];
            let mut left = n as usize;
            while left > 0 {
                left -= tx.send_many(&burst[..left.min(64)]).await.expect("send");
            }
        }
        Mode::Sink => {
            let mut items = futures::stream::iter((0..n).map(|_| Ok(payload.clone())));
            tx.send_all(&mut items).await.expect("send_all");
        }
        Mode::Bytes => write_frames_futures(&mut tx, size, n).await,
    }
    tx
}

async fn sotto_recv(mut rx: ConnReceiver, size: usize, n: u64, mode: Mode) -> ConnReceiver {
    if matches!(mode, Mode::Bytes) {
        read_frames_futures(&mut rx, size, n).await;
        return rx;
    }
    for _ in 0..n {
        let m = rx.recv().await.expect("recv");
        assert_eq!(m.len(), size);
    }
    rx
}

/// One way on every connection of `p` at once; returns the connections.
async fn sotto_oneway<F, G>(p: &mut SessionPair, size: usize, n: u64, spawn_send: F, spawn_recv: G)
where
    F: Fn(ConnSender, usize, u64) -> std::pin::Pin<Box<dyn Future<Output = ConnSender>>>,
    G: Fn(ConnReceiver, usize, u64) -> std::pin::Pin<Box<dyn Future<Output = ConnReceiver>>>,
{
    let conns = std::mem::take(&mut p.conns);
    let mut sends = Vec::new();
    let mut recvs = Vec::new();
    let mut keep = Vec::new();
    for (x, y) in conns {
        let (tx, xr) = x.split();
        let (yt, rx) = y.split();
        sends.push(spawn_send(tx, size, n));
        recvs.push(spawn_recv(rx, size, n));
        keep.push((xr, yt));
    }
    let (txs, rxs) = futures::future::join(join_all(sends), join_all(recvs)).await;
    for ((tx, rx), (xr, yt)) in txs.into_iter().zip(rxs).zip(keep) {
        let x = Connection::reunite(tx, xr).map_err(|_| ()).expect("halves");
        let y = Connection::reunite(yt, rx).map_err(|_| ()).expect("halves");
        p.conns.push((x, y));
    }
}

type SpawnSend = Box<dyn Fn(ConnSender, usize, u64) -> std::pin::Pin<Box<dyn Future<Output = ConnSender>>>>;
type SpawnRecv = Box<dyn Fn(ConnReceiver, usize, u64) -> std::pin::Pin<Box<dyn Future<Output = ConnReceiver>>>>;

fn local_send(mode: Mode) -> SpawnSend {
    Box::new(move |tx, size, n| Box::pin(sotto_send(tx, size, n, mode)))
}
fn local_recv(mode: Mode) -> SpawnRecv {
    Box::new(move |rx, size, n| Box::pin(sotto_recv(rx, size, n, mode)))
}
fn smol_send(mode: Mode) -> SpawnSend {
    Box::new(move |tx, size, n| Box::pin(smol::spawn(sotto_send(tx, size, n, mode))))
}
fn smol_recv(mode: Mode) -> SpawnRecv {
    Box::new(move |rx, size, n| Box::pin(smol::spawn(sotto_recv(rx, size, n, mode))))
}

// ---- measurements: each builds its own runtime and returns messages per second ----

fn tokio_raw_rate(size: usize, n: u64) -> f64 {
    tokio_rt().block_on(async {
        let (a, b) = tokio_tcp_pair().await;
        let t = Instant::now();
        raw_tokio_oneway(a, b, size, n).await;
        n as f64 / t.elapsed().as_secs_f64()
    })
}

fn tokio_yamux_rate(size: usize, n: u64) -> f64 {
    tokio_rt().block_on(async {
        let (a, b) = tokio_tcp_pair().await;
        let t = Instant::now();
        yamux_oneway(a, b, size, n).await;
        n as f64 / t.elapsed().as_secs_f64()
    })
}

fn tokio_sotto_rate(size: usize, n: u64, mode: Mode, credit_kib: Option<u32>) -> f64 {
    tokio_rt().block_on(async {
        let mut p = tokio_session(1, credit_kib).await;
        let t = Instant::now();
        sotto_oneway(&mut p, size, n, local_send(mode), local_recv(mode)).await;
        let rate = n as f64 / t.elapsed().as_secs_f64();
        p.a.close(0, "done").await;
        rate
    })
}

fn smol_raw_rate(size: usize, n: u64) -> f64 {
    smol::block_on(async {
        let (a, b) = smol_tcp_pair().await;
        let t = Instant::now();
        raw_smol_oneway(a, b, size, n).await;
        n as f64 / t.elapsed().as_secs_f64()
    })
}

fn smol_sotto_rate(size: usize, n: u64, mode: Mode) -> f64 {
    smol::block_on(async {
        let mut p = smol_session(1).await;
        let t = Instant::now();
        sotto_oneway(&mut p, size, n, smol_send(mode), smol_recv(mode)).await;
        let rate = n as f64 / t.elapsed().as_secs_f64();
        p.a.close(0, "done").await;
        rate
    })
}

/// Two ends on two OS threads, each with its own current-thread tokio runtime. The receiving
/// end starts first and reports its address; the sending end returns the instant it started
/// sending, the receiving end the instant it had every message. The sender keeps its end
/// (and its runtime) alive until the receiver is done.
fn split_threads<R, S>(n: u64, recv_side: R, send_side: S) -> f64
where
    R: FnOnce(std::sync::mpsc::Sender<SocketAddr>, oneshot::Sender<()>) -> Instant + Send + 'static,
    S: FnOnce(SocketAddr, oneshot::Receiver<()>) -> Instant + Send + 'static,
{
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = oneshot::channel();
    let receiver = std::thread::spawn(move || recv_side(addr_tx, done_tx));
    let addr = addr_rx.recv().expect("address");
    let sender = std::thread::spawn(move || send_side(addr, done_rx));
    let start = sender.join().expect("sender thread");
    let end = receiver.join().expect("receiver thread");
    n as f64 / end.duration_since(start).as_secs_f64()
}

async fn tokio_listen(addr_tx: &std::sync::mpsc::Sender<SocketAddr>) -> tokio::net::TcpListener {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    addr_tx.send(l.local_addr().expect("addr")).expect("address");
    l
}

async fn tokio_accept(l: &tokio::net::TcpListener) -> tokio::net::TcpStream {
    let (s, _) = l.accept().await.expect("accept");
    s.set_nodelay(true).expect("nodelay");
    s
}

fn tokio_raw_rate_2t(size: usize, n: u64) -> f64 {
    split_threads(
        n,
        move |addr_tx, done| {
            tokio_rt().block_on(async move {
                let l = tokio_listen(&addr_tx).await;
                let mut s = tokio_accept(&l).await;
                read_frames_tokio(&mut s, size, n).await;
                let end = Instant::now();
                let _ = done.send(());
                end
            })
        },
        move |addr, done| {
            tokio_rt().block_on(async move {
                let mut s = dial_tokio(addr).await.expect("connect");
                let start = Instant::now();
                write_frames_tokio(&mut s, size, n).await;
                let _ = done.await;
                start
            })
        },
    )
}

fn tokio_yamux_rate_2t(size: usize, n: u64) -> f64 {
    split_threads(
        n,
        move |addr_tx, done| {
            tokio_rt().block_on(async move {
                let l = tokio_listen(&addr_tx).await;
                let server = yamux_server(tokio_accept(&l).await);
                let mut s = server.await.expect("yamux stream");
                read_frames_futures(&mut s, size, n).await;
                let end = Instant::now();
                let _ = done.send(());
                end
            })
        },
        move |addr, done| {
            tokio_rt().block_on(async move {
                let tcp = dial_tokio(addr).await.expect("connect");
                let mut s = yamux_client(tcp).await;
                let start = Instant::now();
                write_frames_futures(&mut s, size, n).await;
                let _ = done.await;
                start
            })
        },
    )
}

fn tokio_sotto_rate_2t(size: usize, n: u64, credit_kib: Option<u32>) -> f64 {
    split_threads(
        n,
        move |addr_tx, done| {
            tokio_rt().block_on(async move {
                let l = tokio_listen(&addr_tx).await;
                let acc = sotto_tokio::serve_sessions_tcp(l, config_with(credit_kib)).expect("config");
                let b = acc.accept().await.expect("accept");
                let conn = b.accept().await.expect("accept").accept(b"").await.expect("answer");
                let (tx, rx) = conn.split();
                let rx = sotto_recv(rx, size, n, Mode::Send).await;
                let end = Instant::now();
                let _ = done.send(());
                drop((tx, rx, b, acc));
                end
            })
        },
        move |addr, done| {
            tokio_rt().block_on(async move {
                let a = sotto_tokio::connect_session(move || dial_tokio(addr), config_with(credit_kib))
                    .await
                    .expect("connect");
                let (tx, rx) = a.open(b"bench").await.expect("open").split();
                let start = Instant::now();
                let tx = sotto_send(tx, size, n, Mode::Send).await;
                let _ = done.await;
                drop((tx, rx));
                a.close(0, "done").await;
                start
            })
        },
    )
}

/// 100 connections (raw TCP connections, or virtual connections of one session) at once;
/// aggregate messages per second.
fn tokio_many(k: usize, size: usize, raw: bool) -> f64 {
    let n = (count_for(size) / k as u64).max(100);
    tokio_rt().block_on(async {
        if raw {
            let mut pairs = Vec::new();
            for _ in 0..k {
                pairs.push(tokio_tcp_pair().await);
            }
            let t = Instant::now();
            let runs = pairs.into_iter().map(|(a, b)| tokio::spawn(raw_tokio_oneway(a, b, size, n)));
            join_all(runs).await;
            return (n * k as u64) as f64 / t.elapsed().as_secs_f64();
        }
        let mut p = tokio_session(k, None).await;
        let t = Instant::now();
        sotto_oneway(&mut p, size, n, local_send(Mode::Send), local_recv(Mode::Send)).await;
        let rate = (n * k as u64) as f64 / t.elapsed().as_secs_f64();
        p.a.close(0, "done").await;
        rate
    })
}

const RTT_N: usize = 20_000;

/// One 16 B frame (length prefix and payload) in one write.
fn rtt_frame() -> [u8; 20] {
    let mut f = [1u8; 20];
    f[..4].copy_from_slice(&16u32.to_le_bytes());
    f
}

/// Round trips of 16 B over raw tokio TCP; returns p50 in microseconds.
fn tokio_rtt_raw() -> f64 {
    tokio_rt().block_on(async {
        use tokio::io::AsyncWriteExt;
        let (mut a, mut b) = tokio_tcp_pair().await;
        let frame = rtt_frame();
        let echo = tokio::spawn(async move {
            let mut rd = FrameReader::new(16);
            for _ in 0..RTT_N {
                let _ = rd.next_tokio(&mut b).await;
                b.write_all(&frame).await.expect("write");
            }
        });
        let mut rd = FrameReader::new(16);
        let mut samples = Vec::with_capacity(RTT_N);
        for _ in 0..RTT_N {
            let t = Instant::now();
            a.write_all(&frame).await.expect("write");
            let _ = rd.next_tokio(&mut a).await;
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
        echo.await.expect("echo");
        median(&mut samples)
    })
}

/// Round trips of 16 B over one yamux stream; returns p50 in microseconds.
fn tokio_rtt_yamux() -> f64 {
    tokio_rt().block_on(async {
        use futures::io::AsyncWriteExt;
        let (a, b) = tokio_tcp_pair().await;
        let server = yamux_server(b);
        let mut client = yamux_client(a).await;
        let frame = rtt_frame();
        let echo = tokio::spawn(async move {
            let mut s = server.await.expect("yamux stream");
            let mut rd = FrameReader::new(16);
            for _ in 0..RTT_N {
                let _ = rd.next_futures(&mut s).await;
                s.write_all(&frame).await.expect("write");
                s.flush().await.expect("flush");
            }
            s
        });
        let mut rd = FrameReader::new(16);
        let mut samples = Vec::with_capacity(RTT_N);
        for _ in 0..RTT_N {
            let t = Instant::now();
            client.write_all(&frame).await.expect("write");
            client.flush().await.expect("flush");
            let _ = rd.next_futures(&mut client).await;
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let _s = echo.await.expect("echo");
        median(&mut samples)
    })
}

/// Round trips of 16 B over one sotto connection; returns p50 in microseconds.
fn tokio_rtt_sotto() -> f64 {
    tokio_rt().block_on(async {
        let mut p = tokio_session(1, None).await;
        let (x, y) = p.conns.pop().expect("conn");
        let echo = tokio::spawn(async move {
            let mut y = y;
            for _ in 0..RTT_N {
                let m = y.recv().await.expect("recv");
                y.send(m).await.expect("send");
            }
            y
        });
        let mut x = x;
        let msg = Bytes::from_static(&[1u8; 16]);
        let mut samples = Vec::with_capacity(RTT_N);
        for _ in 0..RTT_N {
            let t = Instant::now();
            x.send(&msg).await.expect("send");
            let _ = x.recv().await.expect("recv");
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let _y = echo.await.expect("echo");
        p.a.close(0, "done").await;
        median(&mut samples)
    })
}

// ---- the case runner ----

/// One contender of a case: its label and one measurement.
type Contender<'a> = (&'static str, Box<dyn Fn() -> f64 + 'a>);

/// Range of a set of values, as "lo-hi".
fn range(v: &[f64], digits: usize) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.digits$}-{hi:.digits$}")
}

/// Runs every contender once per run, in an order rotating from run to run, after one
/// uncounted warm-up run; prints the medians, sotto's ratio to each other contender (median
/// and range of the per-run ratios) and the load average at the start. `lower_better`:
/// the values are latencies (then the difference sotto minus the other is printed too).
fn case(name: &str, unit: &str, lower_better: bool, contenders: Vec<Contender<'_>>) {
    if !selected(name) {
        return;
    }
    let load = load_avg();
    let contenders: Vec<Contender<'_>> =
        contenders.into_iter().filter(|(label, _)| !skip_raw() || *label == "sotto").collect();
    let k = contenders.len();
    for (_, m) in &contenders {
        let _ = m();
    }
    let mut values = vec![Vec::new(); k];
    for i in 0..runs() {
        for j in 0..k {
            let c = (i + j) % k;
            values[c].push((contenders[c].1)());
        }
        if verbose() {
            let cells: Vec<String> =
                contenders.iter().zip(&values).map(|((l, _), v)| format!("{l} {:.1}", v[i])).collect();
            println!("  {name} run {i}: {}", cells.join("  "));
        }
    }
    let sotto = contenders.iter().position(|(l, _)| *l == "sotto").expect("sotto measured");
    let mut line = format!("{name:<38}");
    for ((label, _), v) in contenders.iter().zip(&values) {
        let mut v = v.clone();
        if lower_better {
            line += &format!(" {label} {:>6.1} {unit}", median(&mut v));
        } else {
            line += &format!(" {label} {:>10.0}", median(&mut v));
        }
    }
    if !lower_better {
        line += &format!(" {unit}");
    }
    for (j, (label, _)) in contenders.iter().enumerate() {
        if j == sotto {
            continue;
        }
        let mut ratios: Vec<f64> = values[sotto].iter().zip(&values[j]).map(|(s, o)| s / o).collect();
        line += &format!("  /{label} {:.2}x ({})", median(&mut ratios), range(&ratios, 2));
        if lower_better {
            let mut diffs: Vec<f64> = values[sotto].iter().zip(&values[j]).map(|(s, o)| s - o).collect();
            line += &format!(" {:+.1} {unit} ({})", median(&mut diffs), range(&diffs, 1));
        }
    }
    println!("{line}  load {load}");
}

/// Resume: kill the initiator's socket and send one message at that instant; time until the
/// acceptor has it. Returns (p50, p99) in ms, and the driver's own p50 from its timings.
fn tokio_resume() -> (f64, f64, f64) {
    const N: usize = 200;
    let rt = tokio_rt();
    rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let acc = sotto_tokio::serve_sessions_tcp(l, config()).expect("config");
        let current: std::sync::Arc<std::sync::Mutex<Option<std::net::TcpStream>>> = Default::default();
        let cur = std::sync::Arc::clone(&current);
        let a = sotto_tokio::connect_session(
            move || {
                let cur = std::sync::Arc::clone(&cur);
                async move {
                    let s = tokio::net::TcpStream::connect(addr).await?;
                    s.set_nodelay(true)?;
                    let std = s.into_std()?;
                    *cur.lock().expect("lock") = Some(std.try_clone()?);
                    tokio::net::TcpStream::from_std(std)
                }
            },
            config(),
        )
        .await
        .expect("connect");
        let b = acc.accept().await.expect("accept");
        let (mut x, mut y) = open_conns(&a, &b, 1).await.pop().expect("conn");
        let msg = Bytes::from_static(&[3u8; 64]);
        let mut samples = Vec::with_capacity(N);
        for _ in 0..N {
            // Quiet link, then kill it and send at once.
            x.send(msg.clone()).await.expect("send");
            let _ = y.recv().await.expect("recv");
            tokio::time::sleep(Duration::from_millis(2)).await;
            let sock = current.lock().expect("lock").take().expect("socket");
            let t = Instant::now();
            let _ = sock.shutdown(std::net::Shutdown::Both);
            x.send(msg.clone()).await.expect("send");
            let _ = y.recv().await.expect("recv");
            samples.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let mut driver: Vec<f64> = b
            .take_resume_timings()
            .iter()
            .filter_map(|t| t.first_delivery.map(|f| f.duration_since(t.link_lost).as_secs_f64() * 1e3))
            .collect();
        samples.sort_by(f64::total_cmp);
        let p99 = samples[(samples.len() * 99 / 100).min(samples.len() - 1)];
        let d = if driver.is_empty() { 0.0 } else { median(&mut driver) };
        (median(&mut samples), p99, d)
    })
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is understood.
    println!(
        "sotto vs raw length-prefixed TCP (and yamux {}); medians of {} runs; ratios sotto/other per run: median (range); load average at the case's start: {}",
        YAMUX_VERSION,
        runs(),
        load_avg()
    );
    for mode in [Mode::Send, Mode::SendMany, Mode::Sink, Mode::Bytes] {
        for size in [16usize, 256, 4096, 65536] {
            let name = format!("tokio 1 conn {size:>5} B {:<9}", mode.label());
            let n = count_for(size);
            let mut c: Vec<Contender<'_>> = vec![
                ("raw", Box::new(move || tokio_raw_rate(size, n))),
                ("sotto", Box::new(move || tokio_sotto_rate(size, n, mode, None))),
            ];
            if matches!(mode, Mode::Send | Mode::Bytes) {
                c.push(("yamux", Box::new(move || tokio_yamux_rate(size, n))));
            }
            case(&name, "msg/s", false, c);
        }
    }
    // The `Sink` against `send` itself, alternating in one case (the ratio is sink/send).
    let n16 = count_for(16);
    case(
        "tokio 1 conn    16 B sink vs send",
        "msg/s",
        false,
        vec![
            ("send", Box::new(move || tokio_sotto_rate(16, n16, Mode::Send, None))),
            ("sotto", Box::new(move || tokio_sotto_rate(16, n16, Mode::Sink, None))),
        ],
    );
    case(
        "smol  1 conn    16 B sink vs send",
        "msg/s",
        false,
        vec![
            ("send", Box::new(move || smol_sotto_rate(16, n16, Mode::Send))),
            ("sotto", Box::new(move || smol_sotto_rate(16, n16, Mode::Sink))),
        ],
    );
    for size in [4096usize, 65536] {
        let n = count_for(size);
        let name = format!("tokio 1 conn {size:>5} B send 4M-win");
        case(
            &name,
            "msg/s",
            false,
            vec![
                ("raw", Box::new(move || tokio_raw_rate(size, n))),
                ("sotto", Box::new(move || tokio_sotto_rate(size, n, Mode::Send, Some(4096)))),
                ("yamux", Box::new(move || tokio_yamux_rate(size, n))),
            ],
        );
    }
    for (size, credit) in [(16usize, None), (4096, None), (65536, None), (4096, Some(4096)), (65536, Some(4096))] {
        let n = count_for(size);
        let win = if credit.is_some() { " 4M-win" } else { "" };
        let name = format!("tokio 2 threads {size:>5} B send{win}");
        case(
            &name,
            "msg/s",
            false,
            vec![
                ("raw", Box::new(move || tokio_raw_rate_2t(size, n))),
                ("sotto", Box::new(move || tokio_sotto_rate_2t(size, n, credit))),
                ("yamux", Box::new(move || tokio_yamux_rate_2t(size, n))),
            ],
        );
    }
    for mode in [Mode::Send, Mode::SendMany, Mode::Sink] {
        for size in [16usize, 256, 4096, 65536] {
            let name = format!("smol  1 conn {size:>5} B {:<9}", mode.label());
            let n = count_for(size);
            case(
                &name,
                "msg/s",
                false,
                vec![
                    ("raw", Box::new(move || smol_raw_rate(size, n))),
                    ("sotto", Box::new(move || smol_sotto_rate(size, n, mode))),
                ],
            );
        }
    }
    for size in [256usize, 4096] {
        case(
            &format!("tokio 100 conns {size:>4} B msgs/s"),
            "msg/s",
            false,
            vec![
                ("raw", Box::new(move || tokio_many(100, size, true))),
                ("sotto", Box::new(move || tokio_many(100, size, false))),
            ],
        );
    }
    case(
        "tokio rtt 16 B p50",
        "us",
        true,
        vec![
            ("raw", Box::new(tokio_rtt_raw)),
            ("sotto", Box::new(tokio_rtt_sotto)),
            ("yamux", Box::new(tokio_rtt_yamux)),
        ],
    );
    if selected("resume") {
        let (mut p50s, mut p99s, mut drv) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs() {
            let (a, b, c) = tokio_resume();
            p50s.push(a);
            p99s.push(b);
            drv.push(c);
        }
        println!(
            "{:<38} kill -> first message delivered over the next link: p50 {:.3} ms, p99 {:.3} ms (driver's own link-lost -> first delivery p50 {:.3} ms)",
            "tokio resume",
            median(&mut p50s),
            median(&mut p99s),
            median(&mut drv)
        );
    }
    println!("load average at the end: {}", load_avg());
}
