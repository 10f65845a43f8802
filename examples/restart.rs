//! A server restart under a client that carries on: the client sends numbered orders on a
//! connection; halfway through, the server dies (every link cut at once, as a crash would)
//! and a new server process takes its address, knowing nothing of the session, so the
//! client's resume is refused and the session is lost. The client's
//! [`ReconnectingSession`] starts a new session, opens the connection again and sends every
//! order the old server never acknowledged, then goes on. Both servers' logs together hold
//! every order, each in order. The orders the old server received in its last moments and
//! had not acknowledged yet (acknowledgments wait up to 25 ms, or 32 items) reach both:
//! delivery across a loss is at least once, and how many varies from run to run (the orders
//! carry numbers, so a receiver can drop repeats).
//!
//! ```sh
//! cargo run -p sotto-examples --example restart
//! ```

use std::collections::BTreeSet;
use std::error::Error;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use sotto_adapter_tests::proxy::{Chaos, ChaosProxy, Endpoint};
use sotto_tokio::{connect_reconnecting, serve_sessions_tcp, Config, ConnError, SessionAcceptor};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

const ORDERS: u64 = 2000;

/// A server: every order it receives goes into `log`, in order.
async fn server(acceptor: SessionAcceptor, log: Arc<Mutex<Vec<u64>>>) {
    while let Ok(session) = acceptor.accept().await {
        let log = Arc::clone(&log);
        tokio::spawn(async move {
            while let Ok(incoming) = session.accept().await {
                let Ok(mut conn) = incoming.accept(b"").await else { return };
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    while let Ok(order) = conn.recv().await {
                        let n = u64::from_le_bytes(order[..8].try_into().unwrap_or_default());
                        log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(n);
                    }
                });
            }
            // Keep the session (and its connections) until it is over.
            drop(session);
        });
    }
}

/// A server on a fresh port, and a proxy at `front` (any port if `None`) leading to it:
/// dropping the proxy cuts every link to the server at once.
async fn start_server(front: Option<SocketAddr>) -> Result<(ChaosProxy, SocketAddr, Arc<Mutex<Vec<u64>>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let log = Arc::default();
    tokio::spawn(server(serve_sessions_tcp(listener, Config::default())?, Arc::clone(&log)));
    let front = Endpoint::Tcp(front.unwrap_or("127.0.0.1:0".parse()?));
    let proxy = ChaosProxy::start(front, Endpoint::Tcp(addr), Chaos::kills(1, 0))?;
    let Endpoint::Tcp(front) = proxy.endpoint.clone() else { return Err("a TCP proxy".into()) };
    Ok((proxy, front, log))
}

/// How many orders are in `log`.
fn len(log: &Mutex<Vec<u64>>) -> usize {
    log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
}

/// The orders in `log`.
fn snapshot(log: &Mutex<Vec<u64>>) -> Vec<u64> {
    log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

#[tokio::main]
async fn main() -> Result<()> {
    let (old_proxy, front, old_log) = start_server(None).await?;
    let mut config = Config::default();
    config.dial.backoff_max = std::time::Duration::from_millis(200);
    let connector = move || tokio::net::TcpStream::connect(front);
    let mut client = connect_reconnecting(connector, config, b"order desk").await?;
    let mut conn = client.session().open(b"orders").await?;

    // The crash: once the old server has half the orders, every link to it is cut, and a
    // new server takes its address.
    let restart = {
        let old_log = Arc::clone(&old_log);
        tokio::spawn(async move {
            while len(&old_log) < (ORDERS / 2) as usize {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            drop(old_proxy);
            start_server(Some(front)).await
        })
    };

    let mut resent = 0;
    let mut next = 0;
    loop {
        // Send the orders (a burst of 50 every millisecond), then wait until the server
        // acknowledged every one.
        let sent = async {
            while next < ORDERS {
                conn.send(next.to_le_bytes()).await?;
                next += 1;
                if next % 50 == 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
            conn.flush_acked().await
        };
        match sent.await {
            Ok(()) => break,
            Err(ConnError::Ended(end)) => {
                // The session is lost: a new one, the connection opened again on it, and
                // every order the old server never acknowledged sent again.
                let renewal = client.renewed().await?;
                println!(
                    "session lost ({end}); a new session; {} orders the old server never acknowledged go again",
                    renewal.lost.messages.len()
                );
                for again in renewal.reopen().await? {
                    conn = again.conn;
                    for order in again.messages {
                        conn.send(order).await?;
                        resent += 1;
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    let (_proxy, _, new_log) = restart.await??;
    let old = snapshot(&old_log);
    let new = snapshot(&new_log);
    let in_order = |log: &[u64]| log.windows(2).all(|w| w[1] == w[0] + 1);
    if !in_order(&old) || !in_order(&new) {
        return Err("a server got orders out of order or twice".into());
    }
    let all: BTreeSet<u64> = old.iter().chain(&new).copied().collect();
    if all.len() as u64 != ORDERS || all.iter().next_back() != Some(&(ORDERS - 1)) {
        return Err(format!("{} of {ORDERS} orders reached a server", all.len()).into());
    }
    let both = old.len() + new.len() - all.len();
    println!(
        "{ORDERS} orders: the old server got {}, the new one {} ({resent} sent again); {both} reached both \
         (at least once across the restart), none was lost",
        old.len(),
        new.len()
    );
    client.session().close(0, "done").await;
    Ok(())
}
