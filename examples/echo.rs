//! An echo server and client on tokio, over TCP.
//!
//! ```sh
//! cargo run -p sotto-examples --example echo -- server 127.0.0.1:7000   # runs until killed
//! cargo run -p sotto-examples --example echo -- client 127.0.0.1:7000   # sends, checks, exits
//! cargo run -p sotto-examples --example echo                            # both, on loopback
//! ```
//!
//! The server echoes every message of every connection of every session; the client opens
//! one connection, sends 100 numbered lines and checks that each comes back, in order.

use std::error::Error;
use std::net::SocketAddr;

use futures::StreamExt;
use sotto_tokio::{connect_session, serve_sessions_tcp, Config, Connection, SessionAcceptor, SessionHandle};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// Serve sessions until the acceptor ends: every session in its own task, every connection
/// in its own task, echoing each message back.
async fn serve(acceptor: SessionAcceptor) {
    while let Ok(session) = acceptor.accept().await {
        tokio::spawn(serve_session(session));
    }
}

async fn serve_session(session: SessionHandle) {
    while let Ok(incoming) = session.accept().await {
        let Ok(conn) = incoming.accept(b"echo").await else { continue };
        tokio::spawn(echo(conn));
    }
}

async fn echo(mut conn: Connection) {
    while let Some(msg) = conn.next().await {
        if conn.send(&msg).await.is_err() {
            break;
        }
    }
}

/// Open one connection, send numbered lines, check the echoes.
async fn client(addr: SocketAddr) -> Result<()> {
    let session = connect_session(move || tokio::net::TcpStream::connect(addr), Config::default()).await?;
    let mut conn = session.open(b"hello").await?;
    println!("connected; the server said {:?}", String::from_utf8_lossy(conn.peer_metadata()));
    for i in 0..100 {
        let line = format!("line {i}");
        conn.send(line.as_bytes()).await?;
        let back = conn.recv().await?;
        if back != line.as_bytes() {
            return Err(format!("sent {line:?}, got {:?} back", String::from_utf8_lossy(&back)).into());
        }
    }
    println!("100 lines echoed");
    session.close(0, "done").await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["server", addr] => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            println!("echo server on {}", listener.local_addr()?);
            serve(serve_sessions_tcp(listener, Config::default())?).await;
            Ok(())
        }
        ["client", addr] => client(addr.parse()?).await,
        [] => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            tokio::spawn(serve(serve_sessions_tcp(listener, Config::default())?));
            client(addr).await
        }
        _ => Err("usage: echo [server ADDR | client ADDR]".into()),
    }
}
