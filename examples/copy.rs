//! A connection as a byte stream, with `tokio::io::copy`: the client copies 4 MiB from a
//! reader into a connection, the server copies the connection into a buffer, and checks
//! that every byte arrived, in order. A connection is tokio's `AsyncRead + AsyncWrite` (and
//! `futures::io`'s): no compat layer; `shutdown` is a half-close (the server's copy sees the
//! end, and the server could still answer on the same connection).
//!
//! ```sh
//! cargo run -p sotto-examples --example copy
//! ```

use std::error::Error;

use sotto_tokio::{connect_session, serve_sessions_tcp, Config};
use tokio::io::AsyncWriteExt;

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// A deterministic payload, so the receiver can check it.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8).collect()
}

#[tokio::main]
async fn main() -> Result<()> {
    const LEN: usize = 4 << 20;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = serve_sessions_tcp(listener, Config::default())?;

    // Server: take the first connection of the first session and read it to its end.
    let server = tokio::spawn(async move {
        let session = acceptor.accept().await?;
        let mut conn = session.accept().await?.accept(b"").await?;
        let mut received = Vec::with_capacity(LEN);
        let copied = tokio::io::copy(&mut conn, &mut received).await?;
        Ok::<_, Box<dyn Error + Send + Sync>>((copied, received))
    });

    let client = connect_session(move || tokio::net::TcpStream::connect(addr), Config::default()).await?;
    let mut conn = client.open(b"upload").await?;
    let data = payload(LEN);
    let sent = tokio::io::copy(&mut &data[..], &mut conn).await?;
    conn.shutdown().await?; // finishes our side: the server's copy sees the end

    let (copied, received) = server.await??;
    println!("sent {sent} bytes, the server copied {copied}");
    if received != data {
        return Err("the bytes received differ from the bytes sent".into());
    }
    println!("all {LEN} bytes arrived in order");
    client.close(0, "done").await;
    Ok(())
}
