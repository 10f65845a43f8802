//! A chat room: several clients, one server, and a proxy between them that kills each TCP
//! link after a random number of bytes. Every client sends numbered messages; the server
//! relays each to every other client; every client checks that it received every other
//! client's messages exactly once and in order, although its links kept dying.
//!
//! ```sh
//! cargo run -p sotto-examples --example chat            # seed from the clock
//! SOTTO_SEED=7 cargo run -p sotto-examples --example chat
//! ```

use std::error::Error;
use std::sync::Arc;

use sotto_adapter_tests::proxy::{Chaos, ChaosProxy, Endpoint};
use sotto_tokio::{connect_session, serve_sessions_tcp, Config, ConnSender, SessionAcceptor};
use tokio::sync::Mutex;

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

const CLIENTS: usize = 3;
const MESSAGES: u32 = 300;
/// Makes the messages long enough for the proxy to kill links often.
const PADDING: &str =
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore";

/// The server: take `CLIENTS` sessions with one connection each, say "start" to each, then
/// relay every message to every other connection.
async fn server(acceptor: SessionAcceptor) -> Result<()> {
    let (joined_tx, mut joined) = tokio::sync::mpsc::channel(CLIENTS);
    // Sessions keep being accepted: a client whose first link died before its handshake
    // finished dials again as a new session (the first one never opens a connection and
    // is dropped once it expires).
    tokio::spawn(async move {
        while let Ok(session) = acceptor.accept().await {
            let joined_tx = joined_tx.clone();
            tokio::spawn(async move {
                let Ok(incoming) = session.accept().await else { return };
                let Ok(conn) = incoming.accept(b"welcome").await else { return };
                let _ = joined_tx.send((session, conn)).await;
            });
        }
    });
    // The sessions are kept until the end: dropping a handle closes its session.
    let mut sessions = Vec::new();
    let mut readers = Vec::new();
    let senders: Arc<Mutex<Vec<ConnSender>>> = Arc::default();
    for _ in 0..CLIENTS {
        let (session, conn) = joined.recv().await.ok_or("acceptor ended")?;
        sessions.push(session);
        let (tx, rx) = conn.split();
        senders.lock().await.push(tx);
        readers.push(rx);
    }
    for tx in senders.lock().await.iter_mut() {
        tx.send(b"start").await?;
    }
    let mut relays = Vec::new();
    for (from, mut rx) in readers.into_iter().enumerate() {
        let senders = Arc::clone(&senders);
        relays.push(tokio::spawn(async move {
            while let Ok(msg) = rx.recv().await {
                let mut senders = senders.lock().await;
                for (to, tx) in senders.iter_mut().enumerate() {
                    // A client that has everything may close and leave while others still
                    // wait for messages: sending to it fails, the others still get theirs.
                    if to != from {
                        let _ = tx.send(&msg).await;
                    }
                }
            }
        }));
    }
    for relay in relays {
        relay.await?;
    }
    drop(sessions);
    Ok(())
}

/// A client: wait for "start", send `MESSAGES` lines, and check every other client's lines.
async fn client(me: usize, addr: std::net::SocketAddr) -> Result<u64> {
    let session = connect_session(move || tokio::net::TcpStream::connect(addr), Config::default()).await?;
    let conn = session.open(format!("client {me}").as_bytes()).await?;
    let (mut tx, mut rx) = conn.split();
    if &rx.recv().await?[..] != b"start" {
        return Err("expected start".into());
    }
    let sending = tokio::spawn(async move {
        for i in 0..MESSAGES {
            tx.send(format!("{me} {i} {PADDING}").as_bytes()).await?;
        }
        Ok::<_, sotto_tokio::ConnError>(tx)
    });
    // The next message expected from each other client.
    let mut next = [0u32; CLIENTS];
    for _ in 0..(CLIENTS - 1) as u32 * MESSAGES {
        let msg = rx.recv().await?;
        let text = std::str::from_utf8(&msg)?;
        let mut fields = text.split(' ');
        let (from, i) = (fields.next().ok_or("malformed")?, fields.next().ok_or("malformed")?);
        let (from, i): (usize, u32) = (from.parse()?, i.parse()?);
        if from == me || from >= CLIENTS || i != next[from] {
            return Err(
                format!("client {me}: got {text:?}, expected {} from {from}", next[from.min(CLIENTS - 1)]).into()
            );
        }
        next[from] += 1;
    }
    let _tx = sending.await??;
    let resumes = session.stats().session.conduit.resumes;
    println!(
        "client {me}: {} messages from the others, in order, over {} resumes",
        (CLIENTS - 1) as u32 * MESSAGES,
        resumes
    );
    session.close(0, "bye").await;
    Ok(resumes)
}

#[tokio::main]
async fn main() -> Result<()> {
    let seed = std::env::var("SOTTO_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    println!("seed {seed} (SOTTO_SEED={seed} reruns it)");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server_addr = listener.local_addr()?;
    let server = tokio::spawn(server(serve_sessions_tcp(listener, Config::default())?));

    // Kill the first 24 links through the proxy after 1 to 16 KiB each.
    let proxy =
        ChaosProxy::start(Endpoint::Tcp("127.0.0.1:0".parse()?), Endpoint::Tcp(server_addr), Chaos::kills(seed, 24))?;
    let Endpoint::Tcp(proxy_addr) = proxy.endpoint.clone() else { return Err("a TCP proxy".into()) };

    let clients: Vec<_> = (0..CLIENTS).map(|me| tokio::spawn(client(me, proxy_addr))).collect();
    for c in clients {
        c.await??;
    }
    println!("the proxy killed {} links; nothing was lost, duplicated or reordered", proxy.kills());
    drop(proxy);
    server.abort();
    Ok(())
}
