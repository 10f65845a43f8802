//! TLS on both sides, on smol, with client certificates: `examples/tls.rs` on sotto-smol
//! and futures-rustls. The client's connector wraps each TCP connection in a TLS handshake,
//! the server runs the TLS handshake in the acceptor's link hook and names each client by
//! its certificate's SHA-256 fingerprint, and a resume binding lets a session be resumed
//! only by the certificate that opened it.
//!
//! ```sh
//! cargo run -p sotto-examples --example tls_smol
//! ```
//!
//! The certificates (a CA, the server's, the client's) are generated at start (rcgen). The
//! client reaches the server through a proxy that kills every link after a few KiB, so the
//! session resumes over fresh TLS links; the client sends 1000 numbered lines, checks each
//! echo, and the server prints who it served and how often the session resumed.

use std::error::Error;
use std::sync::Arc;

use futures::StreamExt;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use smol::net::TcpStream;
use sotto_adapter_tests::proxy::{Chaos, ChaosProxy, Endpoint};
use sotto_smol::{
    connect_session, serve_sessions_tcp_with, AcceptHooks, AcceptedLink, Config, PeerIdentity, SessionHandle,
};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// A certificate and its private key (PKCS#8 DER).
struct Issued {
    cert: CertificateDer<'static>,
    key: Vec<u8>,
}

impl Issued {
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()))
    }
}

/// A CA, and a certificate it issued for `name` (for `usage`).
fn issue(ca: &(rcgen::Certificate, KeyPair), name: &str, usage: ExtendedKeyUsagePurpose) -> Result<Issued> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![name.to_string()])?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, &ca.0, &ca.1)?;
    Ok(Issued { cert: cert.der().clone(), key: key.serialize_der() })
}

/// rustls on *ring* (nothing but a C compiler needed to build it; rustls 0.23.48 deprecates
/// it for lacking post-quantum key exchange).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The SHA-256 fingerprint of a link's client certificate: the peer's identity.
fn fingerprint(certs: Option<&[CertificateDer<'static>]>) -> Option<PeerIdentity> {
    let cert = certs?.first()?;
    Some(PeerIdentity::new(ring::digest::digest(&ring::digest::SHA256, cert.as_ref()).as_ref().to_vec()))
}

/// Echo every message of every connection of `session`.
async fn echo_session(session: SessionHandle) {
    while let Ok(incoming) = session.accept().await {
        let Ok(mut conn) = incoming.accept(b"echo").await else { continue };
        smol::spawn(async move {
            while let Some(msg) = conn.next().await {
                if conn.send(&msg).await.is_err() {
                    break;
                }
            }
        })
        .detach();
    }
}

fn main() -> Result<()> {
    smol::block_on(run())
}

async fn run() -> Result<()> {
    // Certificates: a CA, the server's (for "localhost"), the client's.
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "example CA");
    let ca = (ca_params.self_signed(&ca_key)?, ca_key);
    let server_cert = issue(&ca, "localhost", ExtendedKeyUsagePurpose::ServerAuth)?;
    let client_cert = issue(&ca, "client", ExtendedKeyUsagePurpose::ClientAuth)?;
    let mut roots = RootCertStore::empty();
    roots.add(ca.0.der().clone())?;
    let roots = Arc::new(roots);

    // The server: TLS in the link hook, client certificates required; a resume must come
    // with the certificate that opened the session.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), provider()).build()?;
    let server_tls = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server_cert.cert.clone()], server_cert.key())?;
    let tls_acceptor = futures_rustls::TlsAcceptor::from(Arc::new(server_tls));
    let hooks = AcceptHooks::new(move |link: AcceptedLink<TcpStream>| {
        let tls_acceptor = tls_acceptor.clone();
        async move {
            let tls = tls_acceptor.accept(link).await?;
            let who = fingerprint(tls.get_ref().1.peer_certificates());
            Ok((tls, who))
        }
    })
    .bind_resumes(|first, resuming| first.identity == resuming.identity);
    let listener = smol::net::TcpListener::bind("127.0.0.1:0").await?;
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
    let client_tls = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![client_cert.cert.clone()], client_cert.key())?;
    let connector = futures_rustls::TlsConnector::from(Arc::new(client_tls));
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
    smol::spawn(echo_session(server.clone())).detach();

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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
