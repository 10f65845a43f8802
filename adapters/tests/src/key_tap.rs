//! A TCP relay (tokio) that records the resume key of every ServerHello the acceptor sends
//! through it, and can cut every link through it at once: how a test learns the keys a
//! session was issued, to present an old one later.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use sotto_proto::wire::{ServerHello, HELLO_LEN, LEN_PREFIX};
use sotto_proto::ResumeKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// A running relay; dropping it stops accepting (links already relayed live on until cut).
#[derive(Debug)]
pub struct KeyTap {
    /// Where to dial to reach the upstream through the relay.
    pub addr: SocketAddr,
    keys: Arc<Mutex<Vec<ResumeKey>>>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl KeyTap {
    /// Relay to `upstream` (call inside a tokio runtime).
    pub async fn start(upstream: SocketAddr) -> Self {
        Self::start_from(upstream, None).await
    }

    /// Relay to `upstream`, dialing it from the address `from` (for instance 127.0.0.2, a
    /// second source on loopback) when given.
    pub async fn start_from(upstream: SocketAddr, from: Option<std::net::IpAddr>) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let keys = Arc::new(Mutex::new(Vec::new()));
        let links = Arc::new(Mutex::new(Vec::new()));
        let (k, ls) = (Arc::clone(&keys), Arc::clone(&links));
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = l.accept().await {
                let Ok(server) = dial_from(upstream, from).await else { continue };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let task = tokio::spawn(relay(client, server, Arc::clone(&k)));
                lock(&ls).push(task.abort_handle());
            }
        })
        .abort_handle();
        Self { addr, keys, links, accept }
    }

    /// The keys issued so far, in order (rejections record none).
    #[must_use]
    pub fn keys(&self) -> Vec<ResumeKey> {
        lock(&self.keys).clone()
    }

    /// Cut every link relayed so far (both ends see the connection close).
    pub fn cut(&self) {
        for l in lock(&self.links).drain(..) {
            l.abort();
        }
    }
}

impl Drop for KeyTap {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// Connect to `to`, from the address `from` if given.
pub async fn dial_from(to: SocketAddr, from: Option<std::net::IpAddr>) -> std::io::Result<TcpStream> {
    let Some(from) = from else { return TcpStream::connect(to).await };
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn relay(client: TcpStream, server: TcpStream, keys: Arc<Mutex<Vec<ResumeKey>>>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async move {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
        let _ = sw.shutdown().await;
    };
    let down = async move {
        let mut hello = [0u8; LEN_PREFIX + HELLO_LEN];
        if sr.read_exact(&mut hello).await.is_err() {
            return;
        }
        if let Ok(h) = ServerHello::decode(&hello[LEN_PREFIX..]) {
            if !h.rejected {
                lock(&keys).push(h.resume_key);
            }
        }
        if cw.write_all(&hello).await.is_err() {
            return;
        }
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
}

/// Open a plain TCP connection to `addr`, send a ClientHello presenting `key` (with no
/// position), and return everything the acceptor wrote before closing it.
pub async fn resume_with(addr: SocketAddr, key: ResumeKey) -> Vec<u8> {
    let hello =
        sotto_proto::wire::ClientHello { resume_key: Some(key), last_received: None, ext: true, early: false }.encode();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut out = (hello.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&hello);
    s.write_all(&out).await.expect("write hello");
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply).await;
    reply
}
