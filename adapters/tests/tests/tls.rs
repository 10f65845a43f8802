//! TLS on both sides, over real sockets, on both runtimes: the initiator's connector wraps a
//! TLS connect (tokio-rustls, futures-rustls), the acceptor runs the TLS handshake in its
//! link hook (`serve_sessions_tcp_with`), client certificates required, the certificate
//! naming the peer. Certificates are generated here (rcgen); rustls runs on `ring`.
//!
//! - sessions through a link-killing proxy lose, duplicate and reorder nothing;
//! - a TLS handshake that fails (a certificate from another CA) or stalls (silent, or cut
//!   short) costs only its own link and is charged to its source;
//! - a link hook that panics (in the call or in its future) fails only its link;
//! - a resume binding refuses a resume presenting a stolen key with another client's
//!   certificate (REJECTED, the live link untouched, the refusal logged at INFO) and accepts
//!   the legitimate client's.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcp};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sotto_adapter_tests::capture::{install, Capture};
use sotto_adapter_tests::proxy::{Chaos, Endpoint};
use sotto_adapter_tests::sessions::{exchange_all, open_accept, proxy_to, session_config, Rt};
use sotto_adapter_tests::workload::{eventually, exchange, seed, test_config, within};
use sotto_driver::{
    AcceptHooks, AcceptedLink, Acceptor, Config, PeerIdentity, SessionAcceptor, SessionHandle, StableConduit,
};
use sotto_proto::wire::{ClientHello, ServerHello, HELLO_LEN, LEN_PREFIX};
use sotto_proto::ResumeKey;
use tracing::Level;

const LIMIT: Duration = Duration::from_secs(30);

// ---- certificates ----

/// A certificate and its private key.
struct Cert {
    der: CertificateDer<'static>,
    key: Vec<u8>,
}

impl Cert {
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()))
    }
}

/// A CA, the server's certificate and two clients' from it, and one from another CA.
struct Pki {
    ca: CertificateDer<'static>,
    server: Cert,
    alice: Cert,
    mallory: Cert,
    outsider: Cert,
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    (p.self_signed(&key).expect("CA"), key)
}

fn issue(ca: &(rcgen::Certificate, KeyPair), name: &str, usage: ExtendedKeyUsagePurpose) -> Cert {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(vec![name.to_string()]).expect("params");
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![usage];
    let cert = p.signed_by(&key, &ca.0, &ca.1).expect("issue");
    Cert { der: cert.der().clone(), key: key.serialize_der() }
}

fn pki() -> Pki {
    let root = ca("sotto test CA");
    let other = ca("another CA");
    Pki {
        ca: root.0.der().clone(),
        server: issue(&root, "localhost", ExtendedKeyUsagePurpose::ServerAuth),
        alice: issue(&root, "alice", ExtendedKeyUsagePurpose::ClientAuth),
        mallory: issue(&root, "mallory", ExtendedKeyUsagePurpose::ClientAuth),
        outsider: issue(&other, "outsider", ExtendedKeyUsagePurpose::ClientAuth),
    }
}

/// rustls on *ring* (no cmake or nasm to build it). rustls 0.23.48 deprecates this provider
/// for lacking post-quantum key exchange, which these tests do not need.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(pki: &Pki) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.clone()).expect("root");
    Arc::new(roots)
}

/// The server's TLS: its certificate, client certificates from the CA required.
fn server_tls(pki: &Pki) -> Arc<ServerConfig> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(pki), provider()).build().expect("verifier");
    let c = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![pki.server.der.clone()], pki.server.key())
        .expect("server config");
    Arc::new(c)
}

/// A client's TLS, presenting `who`'s certificate.
fn client_tls(pki: &Pki, who: &Cert) -> Arc<ClientConfig> {
    let c = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots(pki))
        .with_client_auth_cert(vec![who.der.clone()], who.key())
        .expect("client config");
    Arc::new(c)
}

fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("name")
}

/// The identity the acceptor gives a link: its client certificate (DER).
fn identity_of(certs: Option<&[CertificateDer<'static>]>) -> Option<PeerIdentity> {
    certs.and_then(|c| c.first()).map(|c| PeerIdentity::new(c.as_ref().to_vec()))
}

// ---- the acceptor ----

/// Test switches in the acceptor's link hook.
#[derive(Default)]
struct HookSwitches {
    /// Panic in the next call of the hook (before its future exists).
    panic_in_call: AtomicBool,
    /// Panic in the next hook's future, when first polled.
    panic_in_future: AtomicBool,
    /// Hook calls so far.
    calls: AtomicUsize,
}

impl HookSwitches {
    fn check_call(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        assert!(!self.panic_in_call.swap(false, Ordering::SeqCst), "test: the link hook panics in its call");
    }
    fn check_future(&self) {
        assert!(!self.panic_in_future.swap(false, Ordering::SeqCst), "test: the link hook panics in its future");
    }
}

/// A session acceptor on `rt` running the TLS handshake in its link hook; resumes bound to
/// the first link's client certificate if `bind`.
async fn serve_tls(
    rt: Rt,
    config: Config,
    tls: Arc<ServerConfig>,
    bind: bool,
    sw: Arc<HookSwitches>,
) -> (SessionAcceptor, SocketAddr) {
    fn binding<X: Send + 'static, T: Send + 'static>(h: AcceptHooks<X, T>, bind: bool) -> AcceptHooks<X, T> {
        if bind {
            h.bind_resumes(|first, resuming| first.identity == resuming.identity)
        } else {
            h
        }
    }
    match rt {
        Rt::Tokio => {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = l.local_addr().expect("addr");
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            let hooks = AcceptHooks::new(move |link: AcceptedLink<tokio::net::TcpStream>| {
                sw.check_call();
                let (acceptor, sw) = (acceptor.clone(), Arc::clone(&sw));
                async move {
                    sw.check_future();
                    let s = acceptor.accept(link).await?;
                    let who = identity_of(s.get_ref().1.peer_certificates());
                    Ok((s, who))
                }
            });
            (sotto_tokio::serve_sessions_tcp_with(l, config, binding(hooks, bind)).expect("config"), addr)
        }
        Rt::Smol => {
            let l = smol::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = l.local_addr().expect("addr");
            let acceptor = futures_rustls::TlsAcceptor::from(tls);
            let hooks = AcceptHooks::new(move |link: AcceptedLink<smol::net::TcpStream>| {
                sw.check_call();
                let (acceptor, sw) = (acceptor.clone(), Arc::clone(&sw));
                async move {
                    sw.check_future();
                    let s = acceptor.accept(link).await?;
                    let who = identity_of(s.get_ref().1.peer_certificates());
                    Ok((s, who))
                }
            });
            (sotto_smol::serve_sessions_tcp_with(l, config, binding(hooks, bind)).expect("config"), addr)
        }
    }
}

/// A raw stable-conduit acceptor (the vox-compatible API) on `rt`, TLS in its link hook,
/// resumes bound to the first link's client certificate.
async fn serve_raw_tls(rt: Rt, config: Config, tls: Arc<ServerConfig>) -> (Acceptor, SocketAddr) {
    let bind = |first: &sotto_driver::LinkInfo, resuming: &sotto_driver::LinkInfo| first.identity == resuming.identity;
    match rt {
        Rt::Tokio => {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = l.local_addr().expect("addr");
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            let hooks = AcceptHooks::new(move |link: AcceptedLink<tokio::net::TcpStream>| {
                let acceptor = acceptor.clone();
                async move {
                    let s = acceptor.accept(link).await?;
                    let who = identity_of(s.get_ref().1.peer_certificates());
                    Ok((s, who))
                }
            })
            .bind_resumes(bind);
            (sotto_tokio::raw::serve_tcp_with(l, config, hooks).expect("config"), addr)
        }
        Rt::Smol => {
            let l = smol::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = l.local_addr().expect("addr");
            let acceptor = futures_rustls::TlsAcceptor::from(tls);
            let hooks = AcceptHooks::new(move |link: AcceptedLink<smol::net::TcpStream>| {
                let acceptor = acceptor.clone();
                async move {
                    let s = acceptor.accept(link).await?;
                    let who = identity_of(s.get_ref().1.peer_certificates());
                    Ok((s, who))
                }
            })
            .bind_resumes(bind);
            (sotto_smol::raw::serve_tcp_with(l, config, hooks).expect("config"), addr)
        }
    }
}

// ---- the initiator ----

/// The resume keys a client was issued, read from the plaintext inside its TLS links (what
/// a thief who got into the client's memory would have).
#[derive(Clone, Default)]
struct KeyLog(Arc<Mutex<Vec<ResumeKey>>>);

impl KeyLog {
    fn keys(&self) -> Vec<ResumeKey> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// A client's TLS stream, logging the ServerHello's key it reads first.
struct Logged<T> {
    io: T,
    head: Vec<u8>,
    log: KeyLog,
}

impl<T> Logged<T> {
    fn new(io: T, log: KeyLog) -> Self {
        Self { io, head: Vec::with_capacity(LEN_PREFIX + HELLO_LEN), log }
    }

    fn saw(&mut self, bytes: &[u8]) {
        let want = LEN_PREFIX + HELLO_LEN;
        if self.head.len() >= want {
            return;
        }
        let n = bytes.len().min(want - self.head.len());
        self.head.extend_from_slice(&bytes[..n]);
        if self.head.len() == want {
            if let Ok(h) = ServerHello::decode(&self.head[LEN_PREFIX..]) {
                if !h.rejected {
                    self.log.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(h.resume_key);
                }
            }
        }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Logged<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        let got = buf.filled()[before..].to_vec();
        this.saw(&got);
        r
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Logged<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<T: futures::io::AsyncRead + Unpin> futures::io::AsyncRead for Logged<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.saw(&buf[..n]);
        }
        r
    }
}

impl<T: futures::io::AsyncWrite + Unpin> futures::io::AsyncWrite for Logged<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
}

/// An initiator on `rt` whose connector dials `to` and runs a TLS handshake over it.
async fn connect_tls(rt: Rt, to: SocketAddr, tls: Arc<ClientConfig>, config: Config, log: KeyLog) -> SessionHandle {
    match rt {
        Rt::Tokio => {
            let connector = tokio_rustls::TlsConnector::from(tls);
            sotto_tokio::connect_session(
                move || {
                    let (connector, log) = (connector.clone(), log.clone());
                    async move {
                        let tcp = tokio::net::TcpStream::connect(to).await?;
                        tcp.set_nodelay(true)?;
                        Ok(Logged::new(connector.connect(localhost(), tcp).await?, log))
                    }
                },
                config,
            )
            .await
            .expect("connect")
        }
        Rt::Smol => {
            let connector = futures_rustls::TlsConnector::from(tls);
            sotto_smol::connect_session(
                move || {
                    let (connector, log) = (connector.clone(), log.clone());
                    async move {
                        let tcp = smol::net::TcpStream::connect(to).await?;
                        tcp.set_nodelay(true)?;
                        Ok(Logged::new(connector.connect(localhost(), tcp).await?, log))
                    }
                },
                config,
            )
            .await
            .expect("connect")
        }
    }
}

/// A raw initiator on `rt` whose connector dials `to` and runs a TLS handshake over it.
async fn connect_raw_tls(rt: Rt, to: SocketAddr, tls: Arc<ClientConfig>, config: Config, log: KeyLog) -> StableConduit {
    match rt {
        Rt::Tokio => {
            let connector = tokio_rustls::TlsConnector::from(tls);
            sotto_tokio::raw::connect(
                move || {
                    let (connector, log) = (connector.clone(), log.clone());
                    async move {
                        let tcp = tokio::net::TcpStream::connect(to).await?;
                        tcp.set_nodelay(true)?;
                        Ok(Logged::new(connector.connect(localhost(), tcp).await?, log))
                    }
                },
                config,
            )
            .await
            .expect("connect")
        }
        Rt::Smol => {
            let connector = futures_rustls::TlsConnector::from(tls);
            sotto_smol::raw::connect(
                move || {
                    let (connector, log) = (connector.clone(), log.clone());
                    async move {
                        let tcp = smol::net::TcpStream::connect(to).await?;
                        tcp.set_nodelay(true)?;
                        Ok(Logged::new(connector.connect(localhost(), tcp).await?, log))
                    }
                },
                config,
            )
            .await
            .expect("connect")
        }
    }
}

/// Run `f` on a thread of its own (blocking sockets), waiting for it on any executor.
async fn on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let h = std::thread::spawn(f);
    assert!(eventually(LIMIT, || h.is_finished()).await, "the blocking client finished");
    h.join().expect("the blocking client did not panic")
}

/// A blocking TLS client (certificate of `tls`) to `addr` that presents `key` in a
/// ClientHello and returns what the acceptor answered before closing (or the TLS error).
fn tls_resume(addr: SocketAddr, tls: Arc<ClientConfig>, key: ResumeKey) -> Result<Vec<u8>, std::io::Error> {
    let tcp = StdTcp::connect(addr)?;
    tcp.set_read_timeout(Some(LIMIT))?;
    let conn = rustls::ClientConnection::new(tls, localhost()).map_err(std::io::Error::other)?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let hello = ClientHello { resume_key: Some(key), last_received: None, ext: true, early: false }.encode();
    let mut out = (hello.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&hello);
    s.write_all(&out)?;
    s.flush()?;
    let mut reply = vec![0u8; LEN_PREFIX + HELLO_LEN];
    s.read_exact(&mut reply)?;
    Ok(reply)
}

// ---- the scenarios ----

/// Sessions over TLS through a proxy that kills links mid-stream: every message arrives
/// exactly once and in order, each side knows the other's identity.
async fn tls_through_link_killing_proxy(rt: Rt) {
    let seed = seed();
    println!("{rt:?}: seed {seed} (SOTTO_SEED reproduces)");
    let pki = pki();
    let (acc, addr) = serve_tls(rt, session_config(), server_tls(&pki), true, Arc::default()).await;
    let mut chaos = Chaos::kills(seed, 6);
    // Each link is killed after 24..48 KiB: past its TLS handshake, the session's hellos and
    // the first TLS record after them (up to 16 KiB, which carries the ServerHello and the
    // start of the replay: a kill inside it costs the initiator its ServerHello, so it only
    // redials; a first link cut there would leave an orphan session at the acceptor), so
    // the kills land mid-stream.
    chaos.first_min = 24 << 10;
    chaos.budget = (24 << 10, 48 << 10);
    let proxy = proxy_to(Endpoint::Tcp(addr), chaos);
    let Endpoint::Tcp(paddr) = proxy.endpoint.clone() else { unreachable!("TCP") };
    let a = connect_tls(rt, paddr, client_tls(&pki, &pki.alice), session_config(), KeyLog::default()).await;
    let b = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    assert_eq!(b.peer_identity(), Some(PeerIdentity::new(pki.alice.der.as_ref().to_vec())), "alice's certificate");
    assert!(b.peer_addr().is_some(), "the peer address survives the link hook");
    let pairs = within(LIMIT, "open", open_accept(&a, &b, 3)).await;
    let pairs = within(Duration::from_secs(90), "exchange through the kills", exchange_all(pairs, 400)).await;
    let kills = proxy.kills();
    println!("{rt:?}: {kills} kills, acceptor {:?}", acc.stats());
    assert!(kills >= 3, "the proxy killed links mid-stream ({kills})");
    let ast = a.stats();
    assert!(ast.session.conduit.resumes >= 3, "seed {seed}: the session resumed over new TLS links: {ast:?}");
    assert_eq!(b.peer_identity(), Some(PeerIdentity::new(pki.alice.der.as_ref().to_vec())), "still alice");
    drop(pairs);
}

/// A TLS handshake that fails (a certificate from another CA) or stalls (silent, or cut
/// short after some bytes) costs only its own link, counted and charged to its source; a
/// live session goes on, and a new one opens.
async fn failed_and_stalled_handshakes(rt: Rt) {
    let pki = pki();
    let mut config = session_config();
    config.acceptor.first_byte_timeout = Duration::from_millis(300);
    config.protocol.handshake_timeout = Duration::from_secs(1);
    let (acc, addr) = serve_tls(rt, config, server_tls(&pki), false, Arc::default()).await;
    let alice = client_tls(&pki, &pki.alice);
    let a = connect_tls(rt, addr, Arc::clone(&alice), session_config(), KeyLog::default()).await;
    let b = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    let pairs = within(LIMIT, "open", open_accept(&a, &b, 1)).await;

    // A client with a certificate from another CA: the server's handshake fails.
    let outsider = client_tls(&pki, &pki.outsider);
    let refused = on_thread(move || tls_resume(addr, outsider, ResumeKey([7; 16]))).await;
    assert!(refused.is_err(), "the outsider's handshake failed: {refused:?}");
    assert!(eventually(LIMIT, || acc.stats().link_hook_failures == 1).await, "{:?}", acc.stats());
    // A silent link and one that stops half-way through its TLS ClientHello.
    let silent = StdTcp::connect(addr).expect("connect");
    let mut stalled = StdTcp::connect(addr).expect("connect");
    stalled.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).expect("a TLS record header and a byte");
    let pairs = within(LIMIT, "exchange while handshakes stall", exchange_all(pairs, 100)).await;
    assert!(
        eventually(LIMIT, || {
            let ep = acc.stats().endpoint;
            ep.first_byte_expired == 1 && ep.handshakes_expired == 2 && ep.pending_links == 0
        })
        .await,
        "the silent link missed its first-byte deadline, the stalled one its handshake deadline: {:?}",
        acc.stats()
    );
    let st = acc.stats();
    assert_eq!(st.endpoint.pending_failed, 1, "the failed handshake charged its source: {st:?}");
    assert_eq!(st.summary.refused.link_hook_failed, 1, "the summary counts the failed hook: {st:?}");
    assert_eq!(st.summary.refused.handshake_timeout, 1, "the stalled one, not a hook failure: {st:?}");
    assert_eq!(st.sessions, 1, "no session for a failed handshake");
    drop((silent, stalled));

    // The session goes on, and a new client is served as before.
    let pairs = within(LIMIT, "exchange after", exchange_all(pairs, 100)).await;
    let c = connect_tls(rt, addr, alice, session_config(), KeyLog::default()).await;
    let d = within(LIMIT, "accept a new session", acc.accept()).await.expect("accept");
    let more = within(LIMIT, "open on the new session", open_accept(&c, &d, 1)).await;
    within(LIMIT, "exchange on the new session", exchange_all(more, 50)).await;
    assert_eq!(b.stats().link_downs, 0, "the live session's link was never touched");
    drop(pairs);
}

/// Failed handshakes count against their source's failure budget: once it is spent, the
/// source's next link is refused before the hook runs.
async fn failed_handshakes_spend_their_source_budget(rt: Rt) {
    let pki = pki();
    let mut config = session_config();
    config.acceptor.failure_budget = 2;
    config.acceptor.failure_period = Duration::from_secs(60);
    let sw = Arc::new(HookSwitches::default());
    let (acc, addr) = serve_tls(rt, config, server_tls(&pki), false, Arc::clone(&sw)).await;
    for _ in 0..2 {
        let outsider = client_tls(&pki, &pki.outsider);
        let r = on_thread(move || tls_resume(addr, outsider, ResumeKey([7; 16]))).await;
        assert!(r.is_err(), "the outsider's handshake failed");
    }
    assert!(eventually(LIMIT, || acc.stats().link_hook_failures == 2).await, "{:?}", acc.stats());
    assert_eq!(acc.stats().summary.refused.link_hook_failed, 2, "{:?}", acc.stats());
    let refused_before = acc.stats().endpoint.links_refused;
    let alice = client_tls(&pki, &pki.alice);
    let r = on_thread(move || tls_resume(addr, alice, ResumeKey([7; 16]))).await;
    assert!(r.is_err(), "the spent source's link was closed unread: {r:?}");
    assert!(eventually(LIMIT, || acc.stats().endpoint.links_refused == refused_before + 1).await, "{:?}", acc.stats());
    assert_eq!(sw.calls.load(Ordering::SeqCst), 2, "the refused link never reached the hook");
}

/// A link hook that panics, in its call or in its future, fails only that link.
async fn panicking_hook(rt: Rt) {
    let pki = pki();
    let sw = Arc::new(HookSwitches::default());
    let (acc, addr) = serve_tls(rt, session_config(), server_tls(&pki), false, Arc::clone(&sw)).await;
    let alice = client_tls(&pki, &pki.alice);
    let a = connect_tls(rt, addr, Arc::clone(&alice), session_config(), KeyLog::default()).await;
    let b = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    let pairs = within(LIMIT, "open", open_accept(&a, &b, 1)).await;
    for (n, switch) in [&sw.panic_in_call, &sw.panic_in_future].into_iter().enumerate() {
        switch.store(true, Ordering::SeqCst);
        let c = client_tls(&pki, &pki.alice);
        let r = on_thread(move || tls_resume(addr, c, ResumeKey([7; 16]))).await;
        assert!(r.is_err(), "the link whose hook panicked was closed: {r:?}");
        assert!(eventually(LIMIT, || acc.stats().link_hook_panics == n as u64 + 1).await, "{:?}", acc.stats());
    }
    let pairs = within(LIMIT, "exchange after the panics", exchange_all(pairs, 100)).await;
    let c = connect_tls(rt, addr, alice, session_config(), KeyLog::default()).await;
    let d = within(LIMIT, "accept after the panics", acc.accept()).await.expect("accept");
    within(LIMIT, "a new session works", exchange_all(open_accept(&c, &d, 1).await, 20)).await;
    let st = acc.stats();
    assert_eq!(st.endpoint.pending_failed, 2, "each panic charged its source: {st:?}");
    assert_eq!(st.summary.refused.link_hook_failed, 2, "the summary counts both panicking hooks: {st:?}");
    assert_eq!((st.link_hook_panics, st.link_hook_failures), (2, 0), "{st:?}");
    drop(pairs);
}

/// Alice's session resumes over a new TLS link (her certificate: accepted); Mallory, with
/// Alice's current key but her own certificate, is answered REJECTED when resumes are bound
/// to the first link's identity, and Alice's live link is not touched. Without the binding,
/// the same stolen key takes the session.
async fn stolen_key(rt: Rt, bind: bool) {
    let capture = install();
    let _turn = capture.exclusive(Level::INFO);
    let pki = pki();
    let (acc, addr) = serve_tls(rt, session_config(), server_tls(&pki), bind, Arc::default()).await;
    // A proxy that kills Alice's first link after 16 KiB, to make her resume.
    let mut chaos = Chaos::kills(seed(), 1);
    chaos.first_min = 16 << 10;
    chaos.budget = (16 << 10, 16 << 10);
    let proxy = proxy_to(Endpoint::Tcp(addr), chaos);
    let Endpoint::Tcp(paddr) = proxy.endpoint.clone() else { unreachable!("TCP") };
    let log = KeyLog::default();
    let a = connect_tls(rt, paddr, client_tls(&pki, &pki.alice), session_config(), log.clone()).await;
    let b = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    let mut pairs = within(LIMIT, "open", open_accept(&a, &b, 1)).await;
    while proxy.kills() == 0 {
        pairs = within(LIMIT, "exchange until the kill", exchange_all(pairs, 100)).await;
    }
    assert!(
        eventually(LIMIT, || log.keys().len() >= 2 && a.stats().link_established).await,
        "alice resumed with her own certificate"
    );
    let pairs = within(LIMIT, "exchange after alice's resume", exchange_all(pairs, 50)).await;
    assert_eq!(acc.stats().endpoint.resumes_routed, 1, "{:?}", acc.stats());
    let stolen = *log.keys().last().expect("a key");
    let (a_before, b_before) = (a.stats(), b.stats());

    let mallory = client_tls(&pki, &pki.mallory);
    println!("{rt:?}: keys {:?}, presenting {stolen:?}", log.keys());
    let reply = on_thread(move || tls_resume(addr, mallory, stolen)).await;
    println!("{rt:?}: reply {reply:?}, acceptor {:?}", acc.stats());
    let st = acc.stats();
    if bind {
        let reply = reply.expect("mallory's TLS handshake succeeds (her certificate is from the CA)");
        assert_eq!(&reply[LEN_PREFIX..], &ServerHello::rejected().encode()[..], "REJECTED, as an unknown key");
        assert_eq!(st.resumes_refused_by_binding, 1, "{st:?}");
        assert_eq!(st.endpoint.rejected, 1, "counted as a refused resume: {st:?}");
        assert_binding_refusal_logged(capture).await;
        let pairs = within(LIMIT, "exchange after the refused resume", exchange_all(pairs, 50)).await;
        let (a_after, b_after) = (a.stats(), b.stats());
        assert_eq!(b_after.link_downs, b_before.link_downs, "the acceptor's live link was not touched");
        assert_eq!(a_after.link_downs, a_before.link_downs, "alice's link never went down");
        assert_eq!(b.peer_identity(), Some(PeerIdentity::new(pki.alice.der.as_ref().to_vec())));
        drop(pairs);
    } else {
        // The stolen key reaches the session, which takes Mallory's link in place of
        // Alice's (here the session then ends: Mallory presents no position, as a peer that
        // lost its state would).
        assert!(reply.is_ok(), "mallory's resume is answered: {reply:?}");
        assert_eq!(st.resumes_refused_by_binding, 0);
        assert!(capture.events_with(BINDING_REFUSAL).is_empty(), "no binding, no refusal logged");
        assert!(
            eventually(LIMIT, || b.stats().link_downs > b_before.link_downs).await,
            "the stolen key took alice's live link down: {:?}",
            b.stats()
        );
        drop(pairs);
    }
}

/// The raw stable-conduit acceptor runs the same hooks: items over TLS through a proxy that
/// kills links arrive exactly once and in order, and a stolen key presented with another
/// client's certificate is REJECTED.
async fn raw_acceptor_over_tls(rt: Rt) {
    let capture = install();
    let _turn = capture.exclusive(Level::INFO);
    let seed = seed();
    println!("{rt:?}: seed {seed} (SOTTO_SEED reproduces)");
    let pki = pki();
    let (acc, addr) = serve_raw_tls(rt, test_config(), server_tls(&pki)).await;
    let mut chaos = Chaos::kills(seed, 4);
    chaos.first_min = 8 << 10;
    chaos.budget = (2 << 10, 24 << 10);
    let proxy = proxy_to(Endpoint::Tcp(addr), chaos);
    let Endpoint::Tcp(paddr) = proxy.endpoint.clone() else { unreachable!("TCP") };
    let log = KeyLog::default();
    let a = connect_raw_tls(rt, paddr, client_tls(&pki, &pki.alice), test_config(), log.clone()).await;
    let b = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    within(Duration::from_secs(90), "exchange through the kills", exchange(&a, &b, 2000)).await;
    let kills = proxy.kills();
    println!("{rt:?}: {kills} kills, acceptor {:?}", acc.stats());
    assert!(kills >= 2, "the proxy killed links mid-stream ({kills})");
    assert!(acc.stats().resumes >= 2, "the conduit resumed over new TLS links: {:?}", acc.stats());
    assert!(eventually(LIMIT, || a.stats().link_established).await, "linked");
    let stolen = *log.keys().last().expect("a key");
    let mallory = client_tls(&pki, &pki.mallory);
    let reply = on_thread(move || tls_resume(addr, mallory, stolen)).await.expect("mallory's handshake succeeds");
    assert_eq!(&reply[LEN_PREFIX..], &ServerHello::rejected().encode()[..], "REJECTED, as an unknown key");
    assert_eq!(acc.stats().resumes_refused_by_binding, 1, "{:?}", acc.stats());
    assert_binding_refusal_logged(capture).await;
    within(LIMIT, "exchange after the refused resume", exchange(&a, &b, 100)).await;
}

/// What the acceptor logs when its resume binding refuses a resume.
const BINDING_REFUSAL: &str = "refused by the resume binding";

/// The acceptor logged one resume refused by its binding: INFO, with the link's peer.
async fn assert_binding_refusal_logged(capture: &'static Capture) {
    let lines = || capture.events_with(BINDING_REFUSAL);
    assert!(eventually(LIMIT, || lines().len() == 1).await, "{:?}", capture.events());
    let e = &lines()[0];
    assert_eq!(e.level, Level::INFO, "{e:?}");
    assert!(e.fields.get("peer").is_some_and(|p| p.starts_with("127.0.0.1:")), "{e:?}");
    assert!(e.fields.contains_key("source"), "{e:?}");
}

#[test]
fn raw_acceptor_runs_the_tls_hook_and_binds_resumes_tokio() {
    Rt::Tokio.block_on(raw_acceptor_over_tls(Rt::Tokio));
}

#[test]
fn raw_acceptor_runs_the_tls_hook_and_binds_resumes_smol() {
    Rt::Smol.block_on(raw_acceptor_over_tls(Rt::Smol));
}

#[test]
fn tls_sessions_through_a_link_killing_proxy_lose_nothing_tokio() {
    Rt::Tokio.block_on(tls_through_link_killing_proxy(Rt::Tokio));
}

#[test]
fn tls_sessions_through_a_link_killing_proxy_lose_nothing_smol() {
    Rt::Smol.block_on(tls_through_link_killing_proxy(Rt::Smol));
}

#[test]
fn failed_or_stalled_tls_handshakes_cost_only_their_links_tokio() {
    Rt::Tokio.block_on(failed_and_stalled_handshakes(Rt::Tokio));
}

#[test]
fn failed_or_stalled_tls_handshakes_cost_only_their_links_smol() {
    Rt::Smol.block_on(failed_and_stalled_handshakes(Rt::Smol));
}

#[test]
fn failed_tls_handshakes_spend_their_source_failure_budget_tokio() {
    Rt::Tokio.block_on(failed_handshakes_spend_their_source_budget(Rt::Tokio));
}

#[test]
fn failed_tls_handshakes_spend_their_source_failure_budget_smol() {
    Rt::Smol.block_on(failed_handshakes_spend_their_source_budget(Rt::Smol));
}

#[test]
fn a_panicking_link_hook_fails_only_its_link_tokio() {
    Rt::Tokio.block_on(panicking_hook(Rt::Tokio));
}

#[test]
fn a_panicking_link_hook_fails_only_its_link_smol() {
    Rt::Smol.block_on(panicking_hook(Rt::Smol));
}

#[test]
fn resume_binding_refuses_a_stolen_key_with_another_certificate_tokio() {
    Rt::Tokio.block_on(stolen_key(Rt::Tokio, true));
}

#[test]
fn resume_binding_refuses_a_stolen_key_with_another_certificate_smol() {
    Rt::Smol.block_on(stolen_key(Rt::Smol, true));
}

#[test]
fn without_a_resume_binding_a_stolen_key_takes_the_session_tokio() {
    Rt::Tokio.block_on(stolen_key(Rt::Tokio, false));
}

#[test]
fn without_a_resume_binding_a_stolen_key_takes_the_session_smol() {
    Rt::Smol.block_on(stolen_key(Rt::Smol, false));
}
