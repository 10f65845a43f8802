//! Harness for sotto <-> vox 0.3.0 interop tests.
//!
//! The vox side is the `vox-peer` binary of this workspace (a real `vox-core` 0.3.0
//! `StableConduit` over TCP); the link killer is the `chaos-proxy` binary. Both are child
//! processes whose output is collected line by line. The sotto side runs in the test process on
//! `sotto-tokio`'s raw [`StableConduit`] handle.
//!
//! Items are vox `String`s in postcard form (`varint(len)` + UTF-8), `"msg-<i>"` for i from 0,
//! in both directions.
//!
//! The binaries are found next to the test executable's directory (`target/debug/` when the
//! test runs from `target/debug/deps/`), or through `VOX_PEER_BIN` / `CHAOS_PROXY_BIN`. Build
//! them first: `cargo build --workspace` in `interop/` (what `interop/run.sh` does).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sotto_tokio::raw::{ConduitEvent, StableConduit, Stats};
use sotto_tokio::{LinkDownCause, SessionEnd};

// ---------------------------------------------------------------------------
// Items
// ---------------------------------------------------------------------------

/// The postcard encoding of a `String`: LEB128 `varint(len)` then the UTF-8 bytes.
#[must_use]
pub fn encode_string(s: &str) -> Bytes {
    let mut out = Vec::with_capacity(s.len() + 5);
    let mut n = s.len();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(s.as_bytes());
    Bytes::from(out)
}

/// Decode a postcard `String`; the whole input must be consumed.
pub fn decode_string(b: &[u8]) -> Result<String, String> {
    let mut len: u64 = 0;
    let mut pos = 0;
    loop {
        let Some(&byte) = b.get(pos) else { return Err(format!("truncated varint in {b:02x?}")) };
        if pos >= 5 {
            return Err(format!("varint too long in {b:02x?}"));
        }
        len |= u64::from(byte & 0x7f) << (7 * pos);
        pos += 1;
        if byte & 0x80 == 0 {
            break;
        }
    }
    let rest = &b[pos..];
    if rest.len() as u64 != len {
        return Err(format!("length {len} but {} bytes follow in {b:02x?}", rest.len()));
    }
    String::from_utf8(rest.to_vec()).map_err(|e| format!("not UTF-8: {e}"))
}

/// The i-th message each side sends.
#[must_use]
pub fn msg(i: usize) -> String {
    format!("msg-{i}")
}

/// How a received sequence compares with `msg-0 .. msg-(n-1)`, in order, each once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Items received (duplicates included).
    pub received: usize,
    /// Items expected.
    pub expected: usize,
    /// Expected items never received.
    pub missing: Vec<usize>,
    /// Items received more than once (extra copies).
    pub duplicates: usize,
    /// Items that arrived after a later one (first copies only).
    pub out_of_order: usize,
    /// Items that are not `msg-<i>` with `i < expected`.
    pub foreign: usize,
}

impl Delivery {
    /// Compare `got` with the expected `n` messages.
    #[must_use]
    pub fn of(got: &[String], n: usize) -> Self {
        let mut seen: HashMap<usize, usize> = HashMap::new();
        let mut d = Self { received: got.len(), expected: n, ..Self::default() };
        let mut highest: Option<usize> = None;
        for s in got {
            let Some(i) = s.strip_prefix("msg-").and_then(|t| t.parse::<usize>().ok()).filter(|&i| i < n) else {
                d.foreign += 1;
                continue;
            };
            let count = seen.entry(i).or_insert(0);
            *count += 1;
            if *count > 1 {
                d.duplicates += 1;
                continue;
            }
            if highest.is_some_and(|h| i < h) {
                d.out_of_order += 1;
            }
            highest = Some(highest.map_or(i, |h| h.max(i)));
        }
        d.missing = (0..n).filter(|i| !seen.contains_key(i)).collect();
        d
    }

    /// Exactly `msg-0 .. msg-(n-1)`, in order, each once.
    #[must_use]
    pub fn exact(&self) -> bool {
        self.received == self.expected
            && self.missing.is_empty()
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.foreign == 0
    }
}

impl std::fmt::Display for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} received", self.received, self.expected)?;
        if self.exact() {
            return f.write_str(", exactly once, in order");
        }
        let shown: Vec<String> = self.missing.iter().take(10).map(|i| i.to_string()).collect();
        write!(
            f,
            ", missing {} [{}{}], duplicates {}, out of order {}, foreign {}",
            self.missing.len(),
            shown.join(" "),
            if self.missing.len() > 10 { " ..." } else { "" },
            self.duplicates,
            self.out_of_order,
            self.foreign
        )
    }
}

// ---------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------

/// Path of a binary of this workspace (`vox-peer`, `chaos-proxy`).
#[must_use]
pub fn bin(name: &str) -> PathBuf {
    let var = format!("{}_BIN", name.to_uppercase().replace('-', "_"));
    if let Some(p) = std::env::var_os(&var) {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("test executable has a directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} not found: build the interop workspace first (`cargo build --workspace` in interop/, \
         as interop/run.sh does) or set {var}",
        path.display()
    );
    path
}

type Lines = Arc<Mutex<Vec<String>>>;

fn on_item(run: &mut SottoRun, item: &[u8]) {
    match decode_string(item) {
        Ok(s) => run.delivered.push(s),
        Err(e) => run.undecodable.push(e),
    }
}

fn collect<R: Read + Send + 'static>(r: R, lines: Lines) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            lines.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(line);
        }
    })
}

/// A child process whose stdout and stderr lines are collected. Killed when dropped.
pub struct Proc {
    name: String,
    child: Child,
    stdout: Lines,
    stderr: Lines,
    readers: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Start `path` with `args`.
    #[must_use]
    pub fn spawn(name: &str, path: &std::path::Path, args: &[String]) -> Self {
        let mut child = Command::new(path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", path.display()));
        let stdout = Lines::default();
        let stderr = Lines::default();
        let readers = vec![
            collect(child.stdout.take().expect("piped stdout"), Arc::clone(&stdout)),
            collect(child.stderr.take().expect("piped stderr"), Arc::clone(&stderr)),
        ];
        Self { name: name.to_owned(), child, stdout, stderr, readers, status: None }
    }

    /// The stdout lines so far.
    #[must_use]
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The stderr lines so far.
    #[must_use]
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Wait for a stderr line containing `needle`.
    pub async fn wait_stderr(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait_line(false, needle, timeout).await
    }

    /// Wait for a stdout line equal to `line`.
    pub async fn wait_stdout(&mut self, line: &str, timeout: Duration) -> bool {
        self.wait_line(true, line, timeout).await.is_some_and(|l| l == line)
    }

    async fn wait_line(&mut self, stdout: bool, needle: &str, timeout: Duration) -> Option<String> {
        let end = Instant::now() + timeout;
        loop {
            let lines = if stdout { self.stdout() } else { self.stderr() };
            if let Some(l) = lines.into_iter().find(|l| if stdout { l == needle } else { l.contains(needle) }) {
                return Some(l);
            }
            if Instant::now() >= end || self.exited().is_some() {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The address printed in a `... listening on ADDR` stderr line.
    pub async fn listen_addr(&mut self) -> std::net::SocketAddr {
        let line = self.wait_stderr("listening on", Duration::from_secs(20)).await;
        let Some(line) = line else {
            panic!("{} did not start listening; stderr: {:?}", self.name, self.stderr());
        };
        line.rsplit(' ').next().and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("bad listen line {line:?}"))
    }

    /// The exit status, if the process has exited (stdout and stderr fully read by then).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
                self.status = Some(st);
            }
        }
        self.status
    }

    /// Wait up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(st) = self.exited() {
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Kill the process (if running) and reap it.
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            for r in self.readers.drain(..) {
                let _ = r.join();
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Start `vox-peer` with `args` (role, address, counts).
#[must_use]
pub fn vox_peer(args: &[String]) -> Proc {
    Proc::spawn("vox-peer", &bin("vox-peer"), args)
}

/// Start `chaos-proxy` in front of `upstream`, listening on a free loopback port, cutting each
/// connection at a byte drawn from `min..=max` (both directions counted).
pub async fn chaos_proxy(
    upstream: std::net::SocketAddr,
    seed: u64,
    min: u64,
    max: u64,
) -> (Proc, std::net::SocketAddr) {
    let args: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream.to_string(),
        "--min",
        &min.to_string(),
        "--max",
        &max.to_string(),
        "--seed",
        &seed.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut p = Proc::spawn("chaos-proxy", &bin("chaos-proxy"), &args);
    let addr = p.listen_addr().await;
    (p, addr)
}

// ---------------------------------------------------------------------------
// Reports
// ---------------------------------------------------------------------------

/// What the vox peer did, from its output.
#[derive(Clone, Debug)]
pub struct VoxReport {
    /// Its exit code (0: received everything in order; 2: not), `None` if killed.
    pub exit: Option<i32>,
    /// Its `summary ...` line.
    pub summary: String,
    /// What it received, per its `recv` lines.
    pub delivery: Delivery,
    /// Links it used (first included), from its stderr.
    pub links: Option<u64>,
    /// Its stderr lines reporting errors or retries.
    pub errors: usize,
    /// Its last stderr lines (for failures).
    pub stderr_tail: Vec<String>,
}

impl VoxReport {
    /// Read the report of an exited (or killed) vox peer that expected `n` messages.
    #[must_use]
    pub fn of(p: &mut Proc, n: usize) -> Self {
        let status = p.exited();
        let out = p.stdout();
        let err = p.stderr();
        let got: Vec<String> = out.iter().filter_map(|l| l.strip_prefix("recv ")).map(str::to_owned).collect();
        let summary = out.iter().find(|l| l.starts_with("summary")).cloned().unwrap_or_else(|| "(no summary)".into());
        let links =
            err.iter().rev().find_map(|l| l.strip_prefix("vox-peer: links used: ")).and_then(|s| s.parse().ok());
        let errors = err.iter().filter(|l| l.contains("error") || l.contains("retry") || l.contains("fail")).count();
        let stderr_tail = err.iter().rev().take(15).rev().cloned().collect();
        Self {
            exit: status.and_then(|s| s.code()),
            summary,
            delivery: Delivery::of(&got, n),
            links,
            errors,
            stderr_tail,
        }
    }
}

/// What the chaos proxy did, from its stderr.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProxyReport {
    /// Connections that closed.
    pub connections: usize,
    /// Connections cut by the byte budget.
    pub kills: usize,
}

impl ProxyReport {
    /// Read the proxy's log so far.
    #[must_use]
    pub fn of(p: &Proc) -> Self {
        let lines = p.stderr();
        let closed: Vec<&String> = lines.iter().filter(|l| l.contains("closed after")).collect();
        if std::env::var_os("INTEROP_PROXY_LOG").is_some() {
            for l in closed.iter().take(8).chain(closed.iter().rev().take(8).rev()) {
                eprintln!("    {l}");
            }
        }
        Self { connections: closed.len(), kills: closed.iter().filter(|l| l.contains("budget")).count() }
    }
}

// ---------------------------------------------------------------------------
// The sotto side
// ---------------------------------------------------------------------------

/// What the sotto side saw.
#[derive(Debug)]
pub struct SottoRun {
    /// Items sent (accepted into the replay ring).
    pub sent: usize,
    /// The first send error, if any.
    pub send_error: Option<String>,
    /// Delivered items, decoded.
    pub delivered: Vec<String>,
    /// Items that did not decode as a postcard `String`.
    pub undecodable: Vec<String>,
    /// Every event, in order.
    pub events: Vec<ConduitEvent>,
    /// The counters at the end.
    pub stats: Stats,
    /// Whether (and how) the session ended while the vox peer ran.
    pub ended: Option<SessionEnd>,
    /// The vox peer exited before the deadline.
    pub peer_exited: bool,
    /// How long the exchange took.
    pub elapsed: Duration,
}

impl SottoRun {
    /// Links that came up with sotto's extensions in force (must be 0 against vox).
    #[must_use]
    pub fn ext_links(&self) -> usize {
        self.events.iter().filter(|e| matches!(e, ConduitEvent::LinkUp { ext: true, .. })).count()
    }

    /// Links that died inside a frame, as seen by sotto (`LinkDownCause::Truncated`).
    #[must_use]
    pub fn truncated(&self) -> usize {
        self.events.iter().filter(|e| matches!(e, ConduitEvent::LinkDown { cause: LinkDownCause::Truncated })).count()
    }

    /// Link-down events by cause, as short labels with counts.
    #[must_use]
    pub fn downs(&self) -> String {
        let mut counts: Vec<(String, usize)> = Vec::new();
        for e in &self.events {
            if let ConduitEvent::LinkDown { cause } = e {
                let label = match cause {
                    LinkDownCause::Dropped(r) => format!("{r:?}"),
                    LinkDownCause::Io(k) => format!("Io({k:?})"),
                    other => format!("{other:?}"),
                };
                match counts.iter_mut().find(|(l, _)| *l == label) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((label, 1)),
                }
            }
        }
        let parts: Vec<String> = counts.iter().map(|(l, n)| format!("{l} {n}")).collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Run the sotto side of one exchange: send `msg-0 .. msg-(n_send-1)`, receive everything,
/// and keep the session up until the vox peer exits (it exits once it has what it expects,
/// after a linger) or `timeout` passes. Then read the inbound queue dry and report.
///
/// The sender is a task of its own, woken only by the conduit (when the replay ring has room
/// again), as an application's sender would be: a sender polled again on every wake of a
/// shared task (a `select!` loop) retries its send on unrelated wakes, which hides a stall.
pub async fn drive_sotto(conduit: &Arc<StableConduit>, n_send: usize, peer: &mut Proc, timeout: Duration) -> SottoRun {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut run = SottoRun {
        sent: 0,
        send_error: None,
        delivered: Vec::new(),
        undecodable: Vec::new(),
        events: Vec::new(),
        stats: Stats::default(),
        ended: None,
        peer_exited: false,
        elapsed: Duration::ZERO,
    };
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut sender = {
        let conduit = Arc::clone(conduit);
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            for i in 0..n_send {
                conduit.send(encode_string(&msg(i))).await.map_err(|e| e.to_string())?;
                sent.store(i + 1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok::<(), String>(())
        })
    };
    let mut sending = n_send > 0;
    let mut events_open = true;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            r = &mut sender, if sending => {
                sending = false;
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => run.send_error = Some(e),
                    Err(e) => run.send_error = Some(format!("sender task: {e}")),
                }
            }
            r = conduit.recv() => match r {
                Ok(item) => on_item(&mut run, &item),
                Err(e) => {
                    run.ended = Some(e.0);
                    // Items are gone for good; wait for the peer only.
                    if peer.wait_exit(deadline.saturating_duration_since(tokio::time::Instant::now())).await.is_some() {
                        run.peer_exited = true;
                    }
                    break;
                }
            },
            e = conduit.next_event(), if events_open => match e {
                Some(e) => run.events.push(e),
                None => events_open = false,
            },
            _ = tick.tick() => {
                if peer.exited().is_some() {
                    run.peer_exited = true;
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
            }
        }
    }
    // Whatever was delivered before the peer went away.
    while let Ok(Ok(item)) = tokio::time::timeout(Duration::from_millis(200), conduit.recv()).await {
        on_item(&mut run, &item);
    }
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(1), conduit.next_event()).await {
        run.events.push(e);
    }
    // The sender task holds a handle to the conduit: stop it, so that dropping the caller's
    // handle closes the session.
    if sending {
        sender.abort();
        let _ = sender.await;
    }
    run.sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    run.stats = conduit.stats();
    if run.ended.is_none() {
        run.ended = conduit.ended();
    }
    run.elapsed = start.elapsed();
    run
}

/// Run the sotto side as an echo loop written the way vox users write one: one task that
/// `recv`s an item, then `send(..).await`s it back, `n` times; then keep the session up until
/// the vox peer exits or `timeout` passes. Link events are collected alongside (the
/// application's loop itself never looks at them).
pub async fn drive_sotto_echo(conduit: &StableConduit, n: usize, peer: &mut Proc, timeout: Duration) -> SottoRun {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut run = SottoRun {
        sent: 0,
        send_error: None,
        delivered: Vec::new(),
        undecodable: Vec::new(),
        events: Vec::new(),
        stats: Stats::default(),
        ended: None,
        peer_exited: false,
        elapsed: Duration::ZERO,
    };
    let got = std::cell::RefCell::new(Vec::<Bytes>::with_capacity(n));
    let echoed = std::cell::Cell::new(0usize);
    let echo = async {
        for i in 0..n {
            let item = conduit.recv().await.map_err(|e| format!("recv: {e:?}"))?;
            got.borrow_mut().push(item.clone());
            conduit.send(item).await.map_err(|e| e.to_string())?;
            echoed.set(i + 1);
        }
        Ok::<(), String>(())
    };
    tokio::pin!(echo);
    let mut echoing = n > 0;
    let mut events_open = true;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            r = &mut echo, if echoing => {
                echoing = false;
                if let Err(e) = r {
                    run.send_error = Some(e);
                }
            }
            e = conduit.next_event(), if events_open => match e {
                Some(e) => run.events.push(e),
                None => events_open = false,
            },
            _ = tick.tick() => {
                if peer.exited().is_some() {
                    run.peer_exited = true;
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
            }
        }
    }
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(1), conduit.next_event()).await {
        run.events.push(e);
    }
    for item in got.borrow().iter() {
        on_item(&mut run, item);
    }
    run.sent = echoed.get();
    run.stats = conduit.stats();
    run.ended = conduit.ended();
    run.elapsed = start.elapsed();
    run
}
