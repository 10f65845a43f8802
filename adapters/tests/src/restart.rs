//! A zero-downtime restart, as an application runs it (issue 17): a server application on
//! an "old" acceptor, clients exchanging numbered messages with it both ways, and a "new"
//! acceptor that takes over the listening socket and every live session over a Unix socket.
//!
//! The server application keeps, per connection, what it received (its own [`Ledger`], one
//! per acceptor) and how far it has sent ([`Progress`], which the two applications share:
//! the application's own state moves by its own means; sotto moves the sessions). A message
//! counts as sent once `send` returned `Ok`: so across the restart nothing is lost,
//! duplicated or reordered exactly when the old ledger followed by the new one is `0..n` on
//! every connection, and every client receives `0..n` in order.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::join;
use sotto_driver::{Connection, SessionAcceptor, SessionHandle};

use crate::sessions::conn_message;
use crate::workload::sleep;

/// Spawns a detached task on the runtime under test.
pub type Spawn = fn(Pin<Box<dyn Future<Output = ()> + Send>>);

/// What one server application received, per connection tag, in order.
#[derive(Debug, Default)]
pub struct Ledger(Mutex<HashMap<u32, Vec<u64>>>);

impl Ledger {
    fn push(&self, tag: u32, i: u64) {
        self.0.lock().expect("ledger").entry(tag).or_default().push(i);
    }

    /// What connection `tag` received here.
    #[must_use]
    pub fn of(&self, tag: u32) -> Vec<u64> {
        self.0.lock().expect("ledger").get(&tag).cloned().unwrap_or_default()
    }

    /// Messages received here on all connections.
    #[must_use]
    pub fn total(&self) -> usize {
        self.0.lock().expect("ledger").values().map(Vec::len).sum()
    }
}

/// How many messages the server has sent on each connection (shared by the old and the new
/// application).
#[derive(Debug, Default)]
pub struct Progress(Mutex<HashMap<u32, u64>>);

impl Progress {
    /// How many on connection `tag`.
    #[must_use]
    pub fn next(&self, tag: u32) -> u64 {
        self.0.lock().expect("progress").get(&tag).copied().unwrap_or(0)
    }
    fn advance(&self, tag: u32) {
        *self.0.lock().expect("progress").entry(tag).or_insert(0) += 1;
    }
}

/// The tag of a connection opened with metadata `c<tag>`.
fn tag_of(metadata: &Bytes) -> Option<u32> {
    std::str::from_utf8(metadata.strip_prefix(b"c")?).ok()?.parse().ok()
}

/// Message index and tag of a message made by [`conn_message`].
fn parse(m: &[u8]) -> (u64, u32) {
    let mut i = [0u8; 8];
    i.copy_from_slice(&m[..8]);
    let mut t = [0u8; 4];
    t.copy_from_slice(&m[8..12]);
    (u64::from_le_bytes(i), u32::from_le_bytes(t))
}

/// The server application on one connection: records what arrives, sends its messages
/// `0..n` (from where the application left off), a pause every `pace` messages.
async fn serve_conn(conn: Connection, tag: u32, n: u64, ledger: Arc<Ledger>, progress: Arc<Progress>) {
    let (mut tx, mut rx) = conn.split();
    let recv = async {
        while let Ok(m) = rx.recv().await {
            let (i, t) = parse(&m);
            assert_eq!(t, tag, "a message of another connection");
            assert_eq!(m, conn_message(tag, i), "a corrupted message");
            ledger.push(tag, i);
        }
    };
    let send = async {
        loop {
            let i = progress.next(tag);
            if i >= n {
                break;
            }
            if tx.send(conn_message(tag, i)).await.is_err() {
                // Handed off (or ended): the new application sends it.
                break;
            }
            progress.advance(tag);
            if i % 4 == 3 {
                sleep(Duration::from_millis(1)).await;
            }
        }
    };
    join(recv, send).await;
}

/// Serve one session: its adopted connections, then the peer's new ones.
async fn serve_session(s: SessionHandle, n: u64, ledger: Arc<Ledger>, progress: Arc<Progress>, spawn: Spawn) {
    for c in s.adopted_connections() {
        let tag = tag_of(c.peer_metadata()).expect("tagged connection");
        spawn(Box::pin(serve_conn(c, tag, n, Arc::clone(&ledger), Arc::clone(&progress))));
    }
    while let Ok(inc) = s.accept().await {
        let tag = tag_of(inc.metadata()).expect("tagged connection");
        let Ok(c) = inc.accept(b"ok").await else { break };
        spawn(Box::pin(serve_conn(c, tag, n, Arc::clone(&ledger), Arc::clone(&progress))));
    }
}

/// The server application on `acceptor`: every session it yields (new or adopted), served
/// with `serve_conn` on each connection.
pub async fn serve_app(
    acceptor: Arc<SessionAcceptor>,
    n: u64,
    ledger: Arc<Ledger>,
    progress: Arc<Progress>,
    spawn: Spawn,
) {
    while let Ok(s) = acceptor.accept().await {
        spawn(Box::pin(serve_session(s, n, Arc::clone(&ledger), Arc::clone(&progress), spawn)));
    }
}

/// The client on one connection: sends `0..n` (a pause every few), receives the server's
/// `0..n` in order; returns how many it received before `halfway` was reached by both.
pub async fn client_conn(conn: Connection, tag: u32, n: u64, received: Arc<Progress>) {
    let (mut tx, mut rx) = conn.split();
    let send = async {
        for i in 0..n {
            tx.send(conn_message(tag, i)).await.expect("a client's send is never refused");
            if i % 4 == 3 {
                sleep(Duration::from_millis(1)).await;
            }
        }
    };
    let recv = async {
        for i in 0..n {
            let m = rx.recv().await.expect("the connection lives through the restart");
            assert_eq!(m, conn_message(tag, i), "conn {tag}: server message {i} lost, duplicated or out of order");
            received.advance(tag);
        }
    };
    join(send, recv).await;
}

/// `old ++ new` is `0..n` for connection `tag`.
pub fn assert_exactly_once(tag: u32, n: u64, old: &Ledger, new: &Ledger) {
    let mut all = old.of(tag);
    all.extend(new.of(tag));
    let want: Vec<u64> = (0..n).collect();
    assert_eq!(all.len() as u64, n, "conn {tag}: {} of {n} client messages reached a server application", all.len());
    assert_eq!(all, want, "conn {tag}: client messages lost, duplicated or reordered across the restart");
}

/// Whether every connection `0..tags` got at least `k` server messages.
#[must_use]
pub fn all_received(p: &Progress, tags: u32, k: u64) -> bool {
    (0..tags).all(|t| p.next(t) >= k)
}
