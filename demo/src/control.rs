//! The restart mode's control channel between the demo and its acceptor processes: one Unix
//! socket per child (the child's standard input), carrying one message per line, as words.
//! A child exits when its channel closes, so no acceptor outlives the demo.

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use crate::traffic::Tally;

/// Where one connection's acceptor-side application got to: what moves from the old
/// acceptor process's application to the new one's with a handoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnState {
    /// The connection (its index in the demo).
    pub(crate) conn: u32,
    /// The next number expected from the initiator.
    pub(crate) recv_next: u64,
    /// Numbers below `recv_next` not received (normally none).
    pub(crate) missing: Vec<u64>,
    /// The next number to send to the initiator.
    pub(crate) send_next: u64,
}

/// Counts an acceptor process adds to the demo's tallies: its receivers' checks of the
/// initiator-to-acceptor direction, and what its senders sent the other way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TallyDelta {
    /// `delivered, bytes, lost, duplicated, reordered, corrupted, finished` of the
    /// initiator-to-acceptor direction, then `sent` of the other.
    pub(crate) counts: [u64; 8],
}

impl TallyDelta {
    /// The counts of `up` (received here) and `down` (sent from here).
    pub(crate) fn of(up: &Tally, down: &Tally) -> Self {
        let l = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::SeqCst);
        Self {
            counts: [
                l(&up.delivered),
                l(&up.bytes),
                l(&up.lost),
                l(&up.duplicated),
                l(&up.reordered),
                l(&up.corrupted),
                l(&up.finished),
                l(&down.sent),
            ],
        }
    }

    /// `self - earlier`, per count.
    pub(crate) fn since(&self, earlier: &Self) -> Self {
        let mut d = Self::default();
        for (i, c) in d.counts.iter_mut().enumerate() {
            *c = self.counts[i].saturating_sub(earlier.counts[i]);
        }
        d
    }

    /// Add these counts to the demo's tallies.
    pub(crate) fn add_to(&self, up: &Tally, down: &Tally) {
        let targets = [
            &up.delivered,
            &up.bytes,
            &up.lost,
            &up.duplicated,
            &up.reordered,
            &up.corrupted,
            &up.finished,
            &down.sent,
        ];
        for (t, c) in targets.into_iter().zip(self.counts) {
            t.fetch_add(c, Ordering::SeqCst);
        }
    }
}

/// One line of the control channel.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Msg {
    /// Demo to the first child: listen on loopback, accept the session and its `conns`
    /// connections, run the traffic.
    Start { conns: u32 },
    /// Demo to the serving child: hand everything off through a Unix socket bound at `path`.
    Give { path: PathBuf },
    /// Demo to a new child: take everything over from the Unix socket at `path`.
    Take { path: PathBuf },
    /// Demo to the new child: a connection's application state (relayed from the old one).
    State(ConnState),
    /// Demo to the new child: every connection's state was sent; run the traffic.
    Go,
    /// Demo to the serving child: the traffic is over; send the FINs, check the initiator's.
    Stop,
    /// Child: started, waiting for a command.
    Hello,
    /// First child: listening here.
    Addr(SocketAddr),
    /// Child: bound the handoff socket (after `Give`).
    Ready,
    /// Old child: what the handoff did (`elapsed_us`: its start to the last ACK;
    /// `freeze_us`: the longest a session was frozen).
    Handed { offered: u64, handed_off: u64, kept: u64, elapsed_us: u64, freeze_us: u64 },
    /// New child: the sessions and connections it adopted.
    Adopted { sessions: u64, conns: u32 },
    /// Child: the traffic runs (first child: after accepting; new child: after `Go`).
    Running,
    /// Child: counts since its last `Tally`.
    Tally(TallyDelta),
    /// Child: its session's frames replayed and link duplicates discarded, since it started.
    Frames { replayed: u64, duplicates: u64 },
    /// Child after `Stop`: its receivers saw every FIN, its senders sent theirs.
    Drained,
    /// Child: how its session ended.
    End(String),
    /// Child: about to exit, everything reported.
    Done,
    /// Child: something failed; it exits.
    Fail(String),
}

impl fmt::Display for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Start { conns } => write!(f, "start {conns}"),
            Self::Give { path } => write!(f, "give {}", path.display()),
            Self::Take { path } => write!(f, "take {}", path.display()),
            Self::State(s) => {
                write!(f, "state {} {} {}", s.conn, s.recv_next, s.send_next)?;
                s.missing.iter().try_for_each(|m| write!(f, " {m}"))
            }
            Self::Go => f.write_str("go"),
            Self::Stop => f.write_str("stop"),
            Self::Hello => f.write_str("hello"),
            Self::Addr(a) => write!(f, "addr {a}"),
            Self::Ready => f.write_str("ready"),
            Self::Handed { offered, handed_off, kept, elapsed_us, freeze_us } => {
                write!(f, "handed {offered} {handed_off} {kept} {elapsed_us} {freeze_us}")
            }
            Self::Adopted { sessions, conns } => write!(f, "adopted {sessions} {conns}"),
            Self::Running => f.write_str("running"),
            Self::Tally(d) => {
                f.write_str("tally")?;
                d.counts.iter().try_for_each(|c| write!(f, " {c}"))
            }
            Self::Frames { replayed, duplicates } => write!(f, "frames {replayed} {duplicates}"),
            Self::Drained => f.write_str("drained"),
            Self::End(s) => write!(f, "end {}", one_line(s)),
            Self::Done => f.write_str("done"),
            Self::Fail(s) => write!(f, "fail {}", one_line(s)),
        }
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

impl Msg {
    /// Parse one line (without its newline).
    pub(crate) fn parse(line: &str) -> Result<Self, String> {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let nums = || -> Result<Vec<u64>, String> {
            rest.split_whitespace().map(|w| w.parse::<u64>().map_err(|e| format!("{line:?}: {e}"))).collect()
        };
        let exactly = |n: usize| -> Result<Vec<u64>, String> {
            let v = nums()?;
            if v.len() == n {
                Ok(v)
            } else {
                Err(format!("{line:?}: {n} numbers expected"))
            }
        };
        let u32_of = |v: u64| u32::try_from(v).map_err(|e| format!("{line:?}: {e}"));
        let path = || if rest.is_empty() { Err(format!("{line:?}: a path expected")) } else { Ok(PathBuf::from(rest)) };
        Ok(match word {
            "start" => Self::Start { conns: u32_of(exactly(1)?[0])? },
            "give" => Self::Give { path: path()? },
            "take" => Self::Take { path: path()? },
            "state" => {
                let v = nums()?;
                let [conn, recv_next, send_next, ref missing @ ..] = v[..] else {
                    return Err(format!("{line:?}: at least 3 numbers expected"));
                };
                Self::State(ConnState { conn: u32_of(conn)?, recv_next, missing: missing.to_vec(), send_next })
            }
            "go" => Self::Go,
            "stop" => Self::Stop,
            "hello" => Self::Hello,
            "addr" => Self::Addr(rest.parse().map_err(|e| format!("{line:?}: {e}"))?),
            "ready" => Self::Ready,
            "handed" => {
                let v = exactly(5)?;
                Self::Handed { offered: v[0], handed_off: v[1], kept: v[2], elapsed_us: v[3], freeze_us: v[4] }
            }
            "adopted" => {
                let v = exactly(2)?;
                Self::Adopted { sessions: v[0], conns: u32_of(v[1])? }
            }
            "running" => Self::Running,
            "tally" => {
                let v = exactly(8)?;
                let mut d = TallyDelta::default();
                d.counts.copy_from_slice(&v);
                Self::Tally(d)
            }
            "frames" => {
                let v = exactly(2)?;
                Self::Frames { replayed: v[0], duplicates: v[1] }
            }
            "drained" => Self::Drained,
            "end" => Self::End(rest.to_string()),
            "done" => Self::Done,
            "fail" => Self::Fail(rest.to_string()),
            other => return Err(format!("unknown control message {other:?}")),
        })
    }
}

/// The writing side of a control channel (any thread).
pub(crate) struct Writer(Mutex<UnixStream>);

impl Writer {
    /// Write to `stream`.
    pub(crate) fn new(stream: UnixStream) -> Self {
        Self(Mutex::new(stream))
    }

    /// Send one message.
    pub(crate) fn send(&self, m: &Msg) -> std::io::Result<()> {
        let mut s = self.0.lock().map_err(|_| std::io::Error::other("control writer poisoned"))?;
        s.write_all(format!("{m}\n").as_bytes())
    }
}

/// Read `stream` on a thread of its own, passing each message to `on`; a line that does not
/// parse is passed as `Fail`. `on` returning `false` or the stream ending (EOF, error) ends
/// the thread, then `at_end` runs.
pub(crate) fn read_on_thread(
    stream: UnixStream,
    mut on: impl FnMut(Msg) -> bool + Send + 'static,
    at_end: impl FnOnce() + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("demo-control".into()).spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let m = Msg::parse(&line).unwrap_or_else(Msg::Fail);
            if !on(m) {
                break;
            }
        }
        at_end();
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_reads_back_as_written() {
        let msgs = [
            Msg::Start { conns: 4 },
            Msg::Give { path: PathBuf::from("/tmp/a b.sock") },
            Msg::Take { path: PathBuf::from("/tmp/x.sock") },
            Msg::State(ConnState { conn: 3, recv_next: 10, missing: vec![4, 7], send_next: 99 }),
            Msg::State(ConnState { conn: 0, recv_next: 0, missing: vec![], send_next: 0 }),
            Msg::Go,
            Msg::Stop,
            Msg::Hello,
            Msg::Addr("127.0.0.1:4000".parse().expect("addr")),
            Msg::Ready,
            Msg::Handed { offered: 1, handed_off: 1, kept: 0, elapsed_us: 1234, freeze_us: 567 },
            Msg::Adopted { sessions: 1, conns: 4 },
            Msg::Running,
            Msg::Tally(TallyDelta { counts: [1, 2, 3, 4, 5, 6, 7, 8] }),
            Msg::Frames { replayed: 5, duplicates: 2 },
            Msg::Drained,
            Msg::End("Closed { code: 0 }".into()),
            Msg::Done,
            Msg::Fail("it broke".into()),
        ];
        for m in msgs {
            assert_eq!(Msg::parse(&m.to_string()), Ok(m.clone()), "{m}");
        }
    }

    #[test]
    fn malformed_lines_are_errors() {
        for l in ["", "bogus", "start", "start x", "start 1 2", "state 1 2", "tally 1 2", "addr nowhere", "give"] {
            assert!(Msg::parse(l).is_err(), "{l:?}");
        }
    }
}
