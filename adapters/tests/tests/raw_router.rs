//! The raw (vox-compatible) acceptor routes through the core endpoint, as the session
//! acceptor does, over real sockets (tokio, loopback TCP): guessed resume keys are answered
//! REJECTED and charged to the TCP peer's IP, a source over its failure budget is refused
//! unread while another source is still served, and the counters come from the endpoint.

use std::net::SocketAddr;
use std::time::Duration;

use sotto_adapter_tests::workload::{test_config, within};
use sotto_proto::wire::{ClientHello, ServerHello, HELLO_LEN, LEN_PREFIX};
use sotto_proto::ResumeKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIMIT: Duration = Duration::from_secs(20);

/// Connect from `from` (a loopback address) to `to`, present a resume with a key nobody
/// issued, and return everything the acceptor wrote before closing the link.
async fn guess_from(from: &str, to: SocketAddr) -> Vec<u8> {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(format!("{from}:0").parse().expect("addr")).expect("bind");
    let mut s = socket.connect(to).await.expect("connect");
    let hello =
        ClientHello { resume_key: Some(ResumeKey([0x5a; 16])), last_received: None, ext: true, early: false }.encode();
    let mut out = (HELLO_LEN as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&hello);
    // The acceptor may close a refused link before the hello is written: that is its answer.
    let _ = s.write_all(&out).await;
    let mut reply = Vec::new();
    let _ = within(LIMIT, "the acceptor's answer", s.read_to_end(&mut reply)).await;
    reply
}

#[tokio::test]
async fn raw_acceptor_charges_guessed_keys_to_the_peer_ip_and_refuses_only_that_source() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let mut config = test_config();
    config.acceptor.failure_budget = 2;
    config.acceptor.failure_period = Duration::from_secs(60);
    let acc = sotto_tokio::raw::serve_tcp(l, config).expect("config");

    let mut rejected = Vec::with_capacity(LEN_PREFIX + HELLO_LEN);
    rejected.extend_from_slice(&(HELLO_LEN as u32).to_le_bytes());
    rejected.extend_from_slice(&ServerHello::rejected().encode());
    for n in 0..2 {
        assert_eq!(guess_from("127.0.0.1", addr).await, rejected, "guess {n} is answered REJECTED");
    }
    // The budget is spent: the next link from that IP is closed unread, with no reply.
    assert_eq!(guess_from("127.0.0.1", addr).await, Vec::<u8>::new(), "refused unread");
    // Another source is still answered (each TCP peer IP has a budget of its own).
    assert_eq!(guess_from("127.0.0.2", addr).await, rejected, "another source is served");

    let st = acc.stats();
    assert_eq!((st.rejected, st.refused), (3, 1), "{st:?}");
    assert_eq!((st.endpoint.rejected, st.endpoint.links_refused), (3, 1), "from the endpoint: {st:?}");
    assert_eq!(st.links, 4, "{st:?}");
}

#[tokio::test]
async fn raw_acceptor_sessions_are_counted_live_by_the_endpoint_and_freed_when_they_end() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let acc = sotto_tokio::raw::serve_tcp(l, test_config()).expect("config");
    let client =
        sotto_tokio::raw::connect(move || tokio::net::TcpStream::connect(addr), test_config()).await.expect("connect");
    let server = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    client.send(bytes::Bytes::from_static(b"hi")).await.expect("send");
    assert_eq!(&within(LIMIT, "recv", server.recv()).await.expect("recv")[..], b"hi");
    let st = acc.stats();
    assert_eq!((st.sessions, st.endpoint.sessions_created, st.endpoint.sessions_live), (1, 1, 1), "{st:?}");
    within(LIMIT, "close", client.close(0, "bye")).await;
    drop(server);
    let freed = sotto_adapter_tests::workload::eventually(LIMIT, || acc.stats().endpoint.sessions_live == 0).await;
    assert!(freed, "the ended session's slot is freed: {:?}", acc.stats());
}
