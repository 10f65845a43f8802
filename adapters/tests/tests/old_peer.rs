//! A version-3 initiator (half-close) against an acceptor of session protocol version 2,
//! written here on the raw conduit as such an acceptor behaves: it refuses the version-3
//! Hello (Sorry, code 1); `connect_session` starts a version-2 session, which works, and
//! `finish` falls back to a full close (the old acceptor sees a Close).

use std::time::Duration;

use bytes::Bytes;
use sotto_adapter_tests::workload::{test_config, within};
use sotto_proto::session::message::{HelloBody, Message, PROTOCOL_VERSION};
use sotto_proto::session::{refusal, Parity};
use sotto_tokio::raw::StableConduit;
use sotto_tokio::ConnError;

const LIMIT: Duration = Duration::from_secs(20);

fn encode(m: &Message<'_>) -> Bytes {
    let mut out = vec![0u8; m.encoded_len()];
    let n = m.encode(&mut out).expect("fits");
    out.truncate(n);
    Bytes::from(out)
}

/// The next session message on `c`, owned.
async fn next(c: &StableConduit) -> Vec<u8> {
    within(LIMIT, "a session message", c.recv()).await.expect("item").to_vec()
}

#[tokio::test]
async fn a_version_2_acceptor_gets_a_version_2_session_and_a_close_for_finish() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let acceptor = sotto_tokio::raw::serve_tcp(l, test_config()).expect("config");
    let old_acceptor = async {
        // First session: the version-3 Hello is refused, as a version-2 acceptor does.
        let c = acceptor.accept().await.expect("first session");
        let hello = next(&c).await;
        let Ok(Message::Hello(body)) = Message::decode(&hello) else { panic!("not a Hello: {hello:02x?}") };
        assert_eq!(body.version, PROTOCOL_VERSION, "the initiator announces its newest version first");
        c.send(encode(&Message::Sorry { code: refusal::VERSION, reason: "version" })).await.expect("Sorry");
        let _ = c.close(3, "session protocol error").await;
        // Second session: version 2, which it speaks.
        let c = acceptor.accept().await.expect("second session");
        let hello = next(&c).await;
        let Ok(Message::Hello(body)) = Message::decode(&hello) else { panic!("not a Hello: {hello:02x?}") };
        assert_eq!(body.version, 2, "the retry speaks version 2");
        let ours =
            HelloBody { version: 2, parity: Parity::Even, root_credit: 1 << 16, max_connections: 16, metadata: b"" };
        c.send(encode(&Message::HelloYourself(ours))).await.expect("HelloYourself");
        assert_eq!(Message::decode(&next(&c).await), Ok(Message::LetsGo));
        let open = next(&c).await;
        let Ok(Message::Open { conn, .. }) = Message::decode(&open) else { panic!("not an Open: {open:02x?}") };
        c.send(encode(&Message::Accept { conn, credit: 1 << 16, metadata: b"" })).await.expect("Accept");
        // Echo data until the connection's Close (credit grants are skipped).
        let mut closed = false;
        while !closed {
            let item = next(&c).await;
            match Message::decode(&item) {
                Ok(Message::Data { conn: k, payload }) if k == conn => {
                    c.send(encode(&Message::Data { conn, payload })).await.expect("echo");
                }
                Ok(Message::Close { conn: k, .. }) if k == conn => closed = true,
                Ok(Message::Credit { .. }) => {}
                other => panic!("unexpected from the version-2 session: {other:?}"),
            }
        }
        c
    };
    let client = async {
        let a = sotto_tokio::connect_session(move || tokio::net::TcpStream::connect(addr), test_config())
            .await
            .expect("connect after the version fallback");
        let mut x = a.open(b"").await.expect("open");
        x.send(b"ping").await.expect("send");
        assert_eq!(&within(LIMIT, "echo", x.recv()).await.expect("echo")[..], b"ping");
        x.finish().await.expect("finish falls back to a close");
        assert_eq!(within(LIMIT, "after the close", x.recv()).await, Err(ConnError::Closed));
        a
    };
    let (_old, _a) = within(LIMIT, "the whole exchange", futures::future::join(old_acceptor, client)).await;
}
