//! Shared plumbing of the scale bench binaries (`memory_scale`, `acceptor_scale`): the
//! orchestrator re-executes the binary as a server and a client process and talks to each
//! over its stdin/stdout, one line per step.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The process's resident set in bytes (Linux, from /proc/self/statm).
#[must_use]
pub fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm (Linux)");
    let pages: usize = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("statm");
    pages * 4096
}

/// The 1-minute load average (Linux, from /proc/loadavg), to print next to each result.
#[must_use]
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// A tokio multi-thread runtime with `workers` worker threads, IO and time enabled.
#[must_use]
pub fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().expect("runtime")
}

/// Raise this process's soft open-file limit to `want` (capped by the hard limit); returns
/// the soft limit in force afterwards.
#[must_use]
pub fn raise_fd_limit(want: u64) -> u64 {
    let read = || {
        std::fs::read_to_string("/proc/self/limits").ok().and_then(|l| {
            l.lines().find(|l| l.starts_with("Max open files")).and_then(|l| {
                let mut w = l.split_whitespace().skip(3);
                Some((w.next()?.parse::<u64>().ok()?, w.next()?.parse::<u64>().ok()?))
            })
        })
    };
    let Some((soft, hard)) = read() else { return 0 };
    let target = want.min(hard);
    if target > soft {
        // prlimit(1) on ourselves: no libc dependency and no unsafe code here.
        let _ = Command::new("prlimit")
            .args(["--pid", &std::process::id().to_string(), &format!("--nofile={target}:{hard}")])
            .status();
    }
    read().map_or(soft, |(s, _)| s)
}

/// A child process of this binary, driven line by line.
pub struct Proc {
    /// The child.
    pub child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Proc {
    /// Re-execute this binary with `args`, stdin and stdout piped.
    #[must_use]
    pub fn spawn(args: &[&str]) -> Self {
        let exe = std::env::current_exe().expect("exe");
        let mut child =
            Command::new(exe).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("spawn");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Self { child, stdin, stdout }
    }

    /// The child's next line, trimmed.
    #[must_use]
    pub fn line(&mut self) -> String {
        let mut l = String::new();
        self.stdout.read_line(&mut l).expect("read");
        l.trim().to_string()
    }

    /// Send the child one line.
    pub fn tell(&mut self, what: &str) {
        writeln!(self.stdin, "{what}").expect("write");
        self.stdin.flush().expect("flush");
    }

    /// Tell the child to exit and wait for it.
    pub fn finish(mut self) {
        self.tell("EXIT");
        let _ = self.child.wait();
    }
}

/// Wait for a line on stdin (the orchestrator's go-ahead), off the runtime's workers.
pub async fn wait_line() -> String {
    tokio::task::spawn_blocking(|| {
        let mut l = String::new();
        std::io::stdin().read_line(&mut l).expect("stdin");
        l.trim().to_string()
    })
    .await
    .expect("stdin task")
}

/// Write one line to stdout (to the orchestrator) and flush it.
pub fn say(what: &str) {
    let mut out = std::io::stdout();
    writeln!(out, "{what}").expect("stdout");
    out.flush().expect("flush");
}

/// The `q` quantile (0..=1) of `sorted`, or zero if it is empty.
#[must_use]
pub fn quantile<T: Copy + Default>(sorted: &[T], q: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
