//! Adapter benchmarks against raw length-prefixed TCP, ratios measured in the same run.
//!
//! - one connection, one way, loopback TCP, 16 B / 256 B / 4 KiB / 64 KiB: the tokio adapter
//!   against raw tokio (BufWriter writes, a BytesMut read buffer handing out each message as
//!   an owned `Bytes`, as a length-delimited codec does), and the smol adapter against raw
//!   smol the same way;
//! - 100 connections at once, aggregate (one session with 100 virtual connections against
//!   100 raw TCP connections);
//! - 16 B round trip, p50 (tokio);
//! - resume after a link kill (tokio): from the kill to the first message delivered over the
//!   next link, for a message sent at the moment of the kill (so it can only travel on the
//!   next link). No backoff applies (a link that had attached is redialed at once).
//!
//! tokio cases run on one current-thread runtime, smol cases on smol's global executor with
//! one thread: both ends in one thread, so the ratio is one of CPU cost per message.
//! Each case runs `SOTTO_BENCH_RUNS` times (default 5); the table shows medians. Environment:
//! `SOTTO_BENCH_ONLY` (substring of a case name), `SOTTO_BENCH_SCALE` (multiplies message
//! counts), `SOTTO_BENCH_CREDIT_KIB` (per-connection credit instead of the default 256 KiB),
//! `SOTTO_BENCH_SKIP_RAW` (one-connection cases: leave the baseline out, to profile sotto),
//! `SOTTO_BENCH_VERBOSE` (print every run). Each case first runs once uncounted (warm-up).
//! In the one-connection cases the order of the two
//! measurements alternates from run to run (even runs: raw first).

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures::future::join_all;
use sotto_tokio::{Config, ConnReceiver, ConnSender, Connection, SessionHandle};

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn runs() -> usize {
    env_f64("SOTTO_BENCH_RUNS", 5.0) as usize
}

/// `SOTTO_BENCH_SKIP_RAW` set: the one-connection cases measure sotto only (to profile it).
fn skip_raw() -> bool {
    std::env::var_os("SOTTO_BENCH_SKIP_RAW").is_some()
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

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn config() -> Config {
    let mut c = Config::default();
    c.acceptor.max_sessions = 2;
    c.acceptor.max_pending_handshakes = 4;
    if let Some(k) = std::env::var("SOTTO_BENCH_CREDIT_KIB").ok().and_then(|s| s.parse::<u32>().ok()) {
        c.protocol.initial_credit = k << 10;
    }
    c
}

// ---- raw length-prefixed TCP (the baseline) ----

/// Read length-prefixed messages from `r` as owned `Bytes` split off one read buffer.
struct RawReader<R> {
    io: R,
    buf: BytesMut,
}

impl<R> RawReader<R> {
    fn new(io: R) -> Self {
        Self { io, buf: BytesMut::with_capacity(64 << 10) }
    }
    fn take(&mut self) -> Option<Bytes> {
        if self.buf.len() < 4 {
            return None;
        }
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if self.buf.len() < 4 + len {
            self.buf.reserve(4 + len - self.buf.len());
            return None;
        }
        self.buf.advance(4);
        Some(self.buf.split_to(len).freeze())
    }
}

impl<R: tokio::io::AsyncRead + Unpin> RawReader<R> {
    async fn next_tokio(&mut self) -> Bytes {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(m) = self.take() {
                return m;
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(64 << 10);
            }
            let n = self.io.read_buf(&mut self.buf).await.expect("read");
            assert!(n > 0, "eof");
        }
    }
}

impl<R: futures::io::AsyncRead + Unpin> RawReader<R> {
    async fn next_futures(&mut self, scratch: &mut [u8]) -> Bytes {
        use futures::io::AsyncReadExt;
        loop {
            if let Some(m) = self.take() {
                return m;
            }
            let n = self.io.read(scratch).await.expect("read");
            assert!(n > 0, "eof");
            self.buf.extend_from_slice(&scratch[..n]);
        }
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

async fn raw_tokio_oneway(a: tokio::net::TcpStream, b: tokio::net::TcpStream, size: usize, n: u64) {
    use tokio::io::AsyncWriteExt;
    let payload = vec![7u8; size];
    let writer = async move {
        let mut w = tokio::io::BufWriter::with_capacity(64 << 10, a);
        for _ in 0..n {
            w.write_all(&(size as u32).to_le_bytes()).await.expect("write");
            w.write_all(&payload).await.expect("write");
        }
        w.flush().await.expect("flush");
        w
    };
    let reader = async move {
        let mut r = RawReader::new(b);
        for _ in 0..n {
            let m = r.next_tokio().await;
            assert_eq!(m.len(), size);
        }
    };
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

async fn raw_smol_oneway(a: smol::net::TcpStream, b: smol::net::TcpStream, size: usize, n: u64) {
    use futures::io::AsyncWriteExt;
    let payload = vec![7u8; size];
    let writer = smol::spawn(async move {
        let mut w = futures::io::BufWriter::with_capacity(64 << 10, a);
        for _ in 0..n {
            w.write_all(&(size as u32).to_le_bytes()).await.expect("write");
            w.write_all(&payload).await.expect("write");
        }
        w.flush().await.expect("flush");
        w
    });
    let reader = smol::spawn(async move {
        let mut r = RawReader::new(b);
        let mut scratch = vec![0u8; 64 << 10];
        for _ in 0..n {
            let m = r.next_futures(&mut scratch).await;
            assert_eq!(m.len(), size);
        }
    });
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

async fn tokio_session(k: usize) -> SessionPair {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let acc = sotto_tokio::serve_sessions_tcp(l, config()).expect("config");
    let a = sotto_tokio::connect_session(move || dial_tokio(addr), config()).await.expect("connect");
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
    /// stream is pending or done, like the raw `BufWriter`).
    Sink,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::SendMany => "send_many",
            Self::Sink => "sink",
        }
    }
}

/// Every sender's payload bytes: static, so a `Bytes` of them clones without touching a
/// reference count (the raw writer, too, writes from a slice it already has).
static PAYLOAD: [u8; 65536] = [7; 65536];

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
    }
    tx
}

async fn sotto_recv(mut rx: ConnReceiver, size: usize, n: u64) -> ConnReceiver {
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

fn local_send(mode: Mode) -> SpawnSend {
    Box::new(move |tx, size, n| Box::pin(sotto_send(tx, size, n, mode)))
}
fn local_recv(rx: ConnReceiver, size: usize, n: u64) -> std::pin::Pin<Box<dyn Future<Output = ConnReceiver>>> {
    Box::pin(sotto_recv(rx, size, n))
}
fn smol_send(mode: Mode) -> SpawnSend {
    Box::new(move |tx, size, n| Box::pin(smol::spawn(sotto_send(tx, size, n, mode))))
}
fn smol_recv(rx: ConnReceiver, size: usize, n: u64) -> std::pin::Pin<Box<dyn Future<Output = ConnReceiver>>> {
    Box::pin(smol::spawn(sotto_recv(rx, size, n)))
}

// ---- cases ----

struct Row {
    name: String,
    raw: f64,
    sotto: f64,
    ratio: f64,
    unit: &'static str,
}

fn print_row(r: &Row) {
    println!(
        "{:<34} raw {:>12.0} {unit}   sotto {:>12.0} {unit}   ratio {:.2}x",
        r.name,
        r.raw,
        r.sotto,
        r.ratio,
        unit = r.unit
    );
}

/// `measure` returns (raw, sotto) rates for one run; medians over runs, ratio per run.
fn case(name: &str, unit: &'static str, mut measure: impl FnMut(usize) -> (f64, f64)) -> Option<Row> {
    if !selected(name) {
        return None;
    }
    let (mut raws, mut sottos, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    // A first run warms both sides up (fresh heap pages, the runtime's threads) uncounted.
    let _ = measure(1);
    for i in 0..runs() {
        let (raw, sotto) = measure(i);
        if std::env::var_os("SOTTO_BENCH_VERBOSE").is_some() {
            println!("  run {i}: raw {raw:.0} sotto {sotto:.0} ratio {:.2}", sotto / raw);
        }
        raws.push(raw);
        sottos.push(sotto);
        ratios.push(sotto / raw);
    }
    let row = Row {
        name: name.to_string(),
        raw: median(&mut raws),
        sotto: median(&mut sottos),
        ratio: median(&mut ratios),
        unit,
    };
    print_row(&row);
    Some(row)
}

/// Which side of a case is measured first.
#[derive(Clone, Copy, Debug)]
enum Order {
    RawFirst,
    SottoFirst,
}

impl Order {
    /// Run `i` of a case: the order alternates, so that neither side always runs on what
    /// the other left (warm caches and heap, a socket's teardown, the CPU's clock).
    fn of_run(i: usize) -> Self {
        if i % 2 == 0 {
            Self::RawFirst
        } else {
            Self::SottoFirst
        }
    }
}

/// Run `raw` and `sotto` one after the other in `order`; returns (raw, sotto).
async fn in_order(order: Order, raw: impl Future<Output = f64>, sotto: impl Future<Output = f64>) -> (f64, f64) {
    match order {
        Order::RawFirst => {
            let r = raw.await;
            (r, sotto.await)
        }
        Order::SottoFirst => {
            let s = sotto.await;
            (raw.await, s)
        }
    }
}

fn tokio_oneway(size: usize, mode: Mode, order: Order) -> (f64, f64) {
    let n = count_for(size);
    let rt = tokio_rt();
    rt.block_on(async {
        let raw = async {
            let (a, b) = tokio_tcp_pair().await;
            let t = Instant::now();
            if !skip_raw() {
                raw_tokio_oneway(a, b, size, n).await;
            }
            n as f64 / t.elapsed().as_secs_f64()
        };
        let sotto = async {
            let mut p = tokio_session(1).await;
            let t = Instant::now();
            sotto_oneway(&mut p, size, n, local_send(mode), local_recv).await;
            let rate = n as f64 / t.elapsed().as_secs_f64();
            p.a.close(0, "done").await;
            rate
        };
        in_order(order, raw, sotto).await
    })
}

fn smol_oneway(size: usize, mode: Mode, order: Order) -> (f64, f64) {
    let n = count_for(size);
    smol::block_on(async {
        let raw = async {
            let (a, b) = smol_tcp_pair().await;
            let t = Instant::now();
            if !skip_raw() {
                raw_smol_oneway(a, b, size, n).await;
            }
            n as f64 / t.elapsed().as_secs_f64()
        };
        let sotto = async {
            let mut p = smol_session(1).await;
            let t = Instant::now();
            sotto_oneway(&mut p, size, n, smol_send(mode), smol_recv).await;
            let rate = n as f64 / t.elapsed().as_secs_f64();
            p.a.close(0, "done").await;
            rate
        };
        in_order(order, raw, sotto).await
    })
}

fn tokio_many(k: usize, size: usize) -> (f64, f64) {
    let n = (count_for(size) / k as u64).max(100);
    let rt = tokio_rt();
    rt.block_on(async {
        let mut pairs = Vec::new();
        for _ in 0..k {
            pairs.push(tokio_tcp_pair().await);
        }
        let t = Instant::now();
        let runs = pairs.into_iter().map(|(a, b)| tokio::spawn(raw_tokio_oneway(a, b, size, n)));
        join_all(runs).await;
        let raw = (n * k as u64) as f64 / t.elapsed().as_secs_f64();
        let mut p = tokio_session(k).await;
        let t = Instant::now();
        sotto_oneway(&mut p, size, n, local_send(Mode::Send), local_recv).await;
        let sotto = (n * k as u64) as f64 / t.elapsed().as_secs_f64();
        p.a.close(0, "done").await;
        (raw, sotto)
    })
}

/// Round trips of 16 B; returns p50 in microseconds (raw, sotto).
fn tokio_rtt() -> (f64, f64) {
    const N: usize = 20_000;
    let rt = tokio_rt();
    rt.block_on(async {
        use tokio::io::AsyncWriteExt;
        let (a, b) = tokio_tcp_pair().await;
        let echo = tokio::spawn(async move {
            let (r, w) = b.into_split();
            let mut r = RawReader::new(r);
            let mut w = tokio::io::BufWriter::new(w);
            for _ in 0..N {
                let m = r.next_tokio().await;
                w.write_all(&(m.len() as u32).to_le_bytes()).await.expect("write");
                w.write_all(&m).await.expect("write");
                w.flush().await.expect("flush");
            }
        });
        let (r, w) = a.into_split();
        let mut r = RawReader::new(r);
        let mut w = tokio::io::BufWriter::new(w);
        let mut raw = Vec::with_capacity(N);
        for _ in 0..N {
            let t = Instant::now();
            w.write_all(&16u32.to_le_bytes()).await.expect("write");
            w.write_all(&[1u8; 16]).await.expect("write");
            w.flush().await.expect("flush");
            let _ = r.next_tokio().await;
            raw.push(t.elapsed().as_secs_f64() * 1e6);
        }
        echo.await.expect("echo");
        let mut p = tokio_session(1).await;
        let (x, y) = p.conns.pop().expect("conn");
        let echo = tokio::spawn(async move {
            let mut y = y;
            for _ in 0..N {
                let m = y.recv().await.expect("recv");
                y.send(m).await.expect("send");
            }
            y
        });
        let mut x = x;
        let msg = Bytes::from_static(&[1u8; 16]);
        let mut sotto = Vec::with_capacity(N);
        for _ in 0..N {
            let t = Instant::now();
            x.send(&msg).await.expect("send");
            let _ = x.recv().await.expect("recv");
            sotto.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let _y = echo.await.expect("echo");
        p.a.close(0, "done").await;
        (median(&mut raw), median(&mut sotto))
    })
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
    println!("adapters vs raw length-prefixed TCP; medians of {} runs (ratios per run)", runs());
    let mut rows = Vec::new();
    for mode in [Mode::Send, Mode::SendMany, Mode::Sink] {
        for size in [16usize, 256, 4096, 65536] {
            let name = format!("tokio 1 conn {size:>5} B {:<9}", mode.label());
            rows.extend(case(&name, "msg/s", |i| tokio_oneway(size, mode, Order::of_run(i))));
        }
    }
    for mode in [Mode::Send, Mode::SendMany, Mode::Sink] {
        for size in [16usize, 256, 4096, 65536] {
            let name = format!("smol  1 conn {size:>5} B {:<9}", mode.label());
            rows.extend(case(&name, "msg/s", |i| smol_oneway(size, mode, Order::of_run(i))));
        }
    }
    for size in [256usize, 4096] {
        rows.extend(case(&format!("tokio 100 conns {size:>4} B msgs/s"), "msg/s", |_| tokio_many(100, size)));
    }
    if selected("rtt") {
        let (mut raws, mut sottos, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs() {
            let (r, s) = tokio_rtt();
            raws.push(r);
            sottos.push(s);
            ratios.push(s / r);
        }
        println!(
            "{:<34} raw {:>9.1} us   sotto {:>9.1} us   ratio {:.2}x (lower is better)",
            "tokio rtt 16 B p50",
            median(&mut raws),
            median(&mut sottos),
            median(&mut ratios)
        );
    }
    if selected("resume") {
        let (mut p50s, mut p99s, mut drv) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs() {
            let (a, b, c) = tokio_resume();
            p50s.push(a);
            p99s.push(b);
            drv.push(c);
        }
        println!(
            "{:<34} kill -> first message delivered over the next link: p50 {:.3} ms, p99 {:.3} ms (driver's own link-lost -> first delivery p50 {:.3} ms)",
            "tokio resume",
            median(&mut p50s),
            median(&mut p99s),
            median(&mut drv)
        );
    }
    let _ = rows;
}
