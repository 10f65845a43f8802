//! TLS on both sides, on tokio, with client certificates: the client's connector wraps each
//! TCP connection in a TLS handshake (tokio-rustls), the server runs the TLS handshake in the
//! acceptor's link hook and names each client by its certificate's SHA-256 fingerprint, and
//! a resume binding lets a session be resumed only by the certificate that opened it.
//!
//! ```sh
//! cargo run -p sotto-examples --example tls
//! ```
//!
//! The certificates (a CA, the server's, the client's) are generated at start (rcgen). The
//! client reaches the server through a proxy that kills every link after a few KiB, so the
//! session resumes over fresh TLS links; the client sends 1000 numbered lines, checks each
//! echo, and the server prints who it served and how often the session resumed.

use std::sync::Arc;

use futures::StreamExt;
use rustls::pki_types::ServerName;
use sotto_adapter_tests::proxy::{Chaos, ChaosProxy, Endpoint};
use sotto_tokio::{
    connect_session, serve_sessions_tcp_with, AcceptHooks, AcceptedLink, Config, PeerIdentity, SessionHandle,
};
use tokio::net::TcpStream;

#[path = "tls_setup.rs"]
mod tls_setup;
use tls_setup::{fingerprint, hex, Result};

/// Echo every message of every connection of `session`.
async fn echo_session(session: SessionHandle) {
    while let Ok(incoming) = session.accept().await {
        let Ok(mut conn) = incoming.accept(b"echo").await else { continue };
        tokio::spawn(async move {
            while let Some(msg) = conn.next().await {
                if conn.send(&msg).await.is_err() {
                    break;
                }
            }
        });
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    // Certificates (a CA, the server's for "localhost", the client's) and both sides' TLS
    // configurations: the server requires a client certificate.
    let (server_tls, client_tls) = tls_setup::configs()?;

    // The server: TLS in the link hook; a resume must come with the certificate that opened
    // the session.
    let tls_acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_tls));
    let hooks = AcceptHooks::new(move |link: AcceptedLink<TcpStream>| {
        let tls_acceptor = tls_acceptor.clone();
        async move {
            let tls = tls_acceptor.accept(link).await?;
            let who = fingerprint(tls.get_ref().1.peer_certificates()).map(PeerIdentity::new);
            Ok((tls, who))
        }
    })
    .bind_resumes(|first, resuming| first.identity == resuming.identity);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = serve_sessions_tcp_with(listener, Config::default(), hooks)?;

    // A proxy that kills the client's first six links, each after 24..48 KiB (past its TLS
    // handshake and the first TLS record after it, which carries the ServerHello).
    let mut chaos = Chaos::kills(7, 6);
    chaos.first_min = 24 << 10;
    chaos.budget = (24 << 10, 48 << 10);
    let proxy = ChaosProxy::start(Endpoint::Tcp("127.0.0.1:0".parse()?), Endpoint::Tcp(addr), chaos)?;
    let Endpoint::Tcp(via) = proxy.endpoint.clone() else { return Err("the proxy listens on TCP".into()) };

    // The client: the connector dials and runs the TLS handshake; every redial does it anew.
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls));
    let client = connect_session(
        move || {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(via).await?;
                tcp.set_nodelay(true)?;
                connector.connect(ServerName::try_from("localhost").map_err(std::io::Error::other)?, tcp).await
            }
        },
        Config::default(),
    )
    .await?;
    let server = acceptor.accept().await?;
    let who = server.peer_identity().ok_or("the client presented no certificate")?;
    println!(
        "server: session from {} (certificate SHA-256 {})",
        server.peer_addr().map_or_else(|| "?".into(), |a| a.to_string()),
        hex(who.as_bytes())
    );
    tokio::spawn(echo_session(server.clone()));

    let mut conn = client.open(b"hello").await?;
    for i in 0..1000 {
        let line = format!("line {i} {}", "-".repeat(200));
        conn.send(line.as_bytes()).await?;
        let back = conn.recv().await?;
        if back != line.as_bytes() {
            return Err(format!("line {i}: got {:?} back", String::from_utf8_lossy(&back)).into());
        }
    }
    println!(
        "client: 1000 lines echoed over TLS; the proxy killed {} links, the session resumed {} times (each over a new TLS link, same certificate)",
        proxy.kills(),
        client.stats().session.conduit.resumes
    );
    if server.peer_identity().as_ref() != Some(&who) {
        return Err("the session changed hands".into());
    }
    client.close(0, "done").await;
    Ok(())
}
