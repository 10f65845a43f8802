//! The early Hello over real sockets (docs/protocol.md, "Early Hello"): a new session's Hello
//! rides behind its ClientHello, the acceptor reads it in the base form, and an acceptor that
//! does not know the flag (emulated: a relay that closes a link whose ClientHello sets it)
//! costs one failed link, after which the initiator connects without it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sotto_adapter_tests::proxy::Endpoint;
use sotto_adapter_tests::sessions::{dial, listen, open_accept, session_config, Rt, Transport};
use sotto_adapter_tests::workload::within;
use sotto_proto::wire::{ClientHello, HELLO_LEN, LEN_PREFIX};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(20);

/// Both ends' early-frame counts: (the initiator's sent, the acceptor's received).
fn early_counts(client: &sotto_driver::SessionHandle, server: &sotto_driver::SessionHandle) -> (u64, u64) {
    (client.stats().session.conduit.early_frames_sent, server.stats().session.conduit.early_frames_received)
}

async fn exchange(client: &sotto_driver::SessionHandle, server: &sotto_driver::SessionHandle) {
    let mut pairs = within(LIMIT, "open", open_accept(client, server, 1)).await;
    let (mut x, mut y) = pairs.pop().expect("pair");
    x.send(Bytes::from_static(b"ping")).await.expect("send");
    assert_eq!(&within(LIMIT, "recv", y.recv()).await.expect("recv")[..], b"ping");
    y.send(Bytes::from_static(b"pong")).await.expect("send back");
    assert_eq!(&within(LIMIT, "recv back", x.recv()).await.expect("recv back")[..], b"pong");
}

#[test]
fn a_new_session_sends_its_hello_early_and_the_acceptor_reads_it() {
    for rt in [Rt::Tokio, Rt::Smol] {
        rt.block_on(async move {
            let config = session_config();
            assert!(config.protocol.early_hello, "on by default");
            let (acc, at) = listen(rt, Transport::Tcp, config).await;
            let client = dial(rt, at, config).await;
            let server = within(LIMIT, "accept", acc.accept()).await.expect("accept");
            assert_eq!(early_counts(&client, &server), (1, 1), "{rt:?}");
            exchange(&client, &server).await;
        });
    }
}

#[test]
fn with_early_hello_off_the_hello_follows_the_server_hello() {
    for rt in [Rt::Tokio, Rt::Smol] {
        rt.block_on(async move {
            let mut config = session_config();
            config.protocol.early_hello = false;
            let (acc, at) = listen(rt, Transport::Tcp, session_config()).await;
            let client = dial(rt, at, config).await;
            let server = within(LIMIT, "accept", acc.accept()).await.expect("accept");
            assert_eq!(early_counts(&client, &server), (0, 0), "{rt:?}");
            exchange(&client, &server).await;
        });
    }
}

/// A relay in front of the acceptor that plays an acceptor older than `EARLY`: a link whose
/// ClientHello sets the flag is closed unanswered (an unknown flag bit fails the hello);
/// others are relayed both ways. Returns its address and how many links it closed.
async fn old_acceptor_relay(upstream: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let closed = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&closed);
    tokio::spawn(async move {
        while let Ok((mut down, _)) = l.accept().await {
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let mut first = [0u8; LEN_PREFIX + HELLO_LEN];
                if down.read_exact(&mut first).await.is_err() {
                    return;
                }
                if ClientHello::decode(&first[LEN_PREFIX..]).is_ok_and(|h| h.early) {
                    count.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else { return };
                if up.write_all(&first).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
            });
        }
    });
    (addr, closed)
}

#[test]
fn an_acceptor_that_fails_an_early_hello_gets_a_plain_one_on_the_next_link() {
    Rt::Tokio.block_on(async move {
        let config = session_config();
        let (acc, at) = listen(Rt::Tokio, Transport::Tcp, config).await;
        let Endpoint::Tcp(upstream) = at else { panic!("tcp") };
        let (relay, closed) = old_acceptor_relay(upstream).await;
        let client = within(LIMIT, "connect", dial(Rt::Tokio, Endpoint::Tcp(relay), config)).await;
        let server = within(LIMIT, "accept", acc.accept()).await.expect("accept");
        assert_eq!(closed.load(Ordering::SeqCst), 1, "the early link was refused once");
        assert_eq!(early_counts(&client, &server), (1, 0), "tried once, never reached the acceptor");
        assert_eq!(client.stats().session.conduit.attaches, 1, "attached once, on the plain link");
        exchange(&client, &server).await;
    });
}
