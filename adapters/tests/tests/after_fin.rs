//! Bad input on a half-closed connection, over real sockets on both runtimes: a peer that
//! sends data after its own end of stream (`Fin`) breaks the session protocol. The peer here
//! is written on the raw stable conduit, speaking the session protocol by hand as a lying
//! acceptor would: the initiator's application reads what came before the `Fin`, then the
//! end of stream; its session answers `ProtocolError` (code 11, `AfterFin`) and ends, the
//! handle reporting the typed violation (`protocol_failure`) and the log saying it (WARN).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use sotto_adapter_tests::capture::install;
use sotto_adapter_tests::sessions::{session_config, Rt};
use sotto_adapter_tests::workload::{eventually, test_config, within};
use sotto_driver::{Acceptor, ConnError, SessionHandle, StableConduit};
use sotto_proto::conduit::goodbye_code;
use sotto_proto::session::message::{HelloBody, Message, PROTOCOL_VERSION};
use sotto_proto::session::{Parity, SessionFailure, SessionViolation};
use sotto_proto::SessionEnd;
use tracing::Level;

const LIMIT: Duration = Duration::from_secs(20);

/// Runs `$body(Rt)` as a tokio test and as a smol test, in a module named `$name`.
macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn tokio() {
                super::$name(super::Rt::Tokio).await;
            }
            #[test]
            fn smol() {
                smol::block_on(super::$name(super::Rt::Smol));
            }
        }
    };
}

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

/// The next message other than a credit grant.
async fn next_not_credit(c: &StableConduit) -> Vec<u8> {
    loop {
        let item = next(c).await;
        if !matches!(Message::decode(&item), Ok(Message::Credit { .. })) {
            return item;
        }
    }
}

async fn raw_listen(rt: Rt) -> (Acceptor, SocketAddr) {
    match rt {
        Rt::Tokio => {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = l.local_addr().expect("addr");
            (sotto_tokio::raw::serve_tcp(l, test_config()).expect("config"), addr)
        }
        Rt::Smol => {
            let l = smol::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = l.local_addr().expect("addr");
            (sotto_smol::raw::serve_tcp(l, test_config()).expect("config"), addr)
        }
    }
}

async fn connect(rt: Rt, addr: SocketAddr) -> SessionHandle {
    match rt {
        Rt::Tokio => sotto_tokio::connect_session(move || tokio::net::TcpStream::connect(addr), session_config()).await,
        Rt::Smol => sotto_smol::connect_session(move || smol::net::TcpStream::connect(addr), session_config()).await,
    }
    .expect("connect")
}

async fn data_after_the_peers_end_of_stream_is_a_typed_protocol_violation(rt: Rt) {
    let capture = install();
    let _turn = capture.exclusive(Level::INFO);
    let (acceptor, addr) = raw_listen(rt).await;
    // The lying acceptor: the session handshake, the Open accepted, then data, its end of
    // stream, and data after it.
    let liar = async {
        let c = acceptor.accept().await.expect("a session");
        let hello = next(&c).await;
        let Ok(Message::Hello(body)) = Message::decode(&hello) else { panic!("not a Hello: {hello:02x?}") };
        assert_eq!(body.version, PROTOCOL_VERSION);
        let ours = HelloBody {
            version: PROTOCOL_VERSION,
            parity: Parity::Even,
            root_credit: 1 << 16,
            max_connections: 16,
            metadata: b"",
        };
        c.send(encode(&Message::HelloYourself(ours))).await.expect("HelloYourself");
        // Version 4: no LetsGo; the next message is the Open.
        let open = next_not_credit(&c).await;
        let Ok(Message::Open { conn, .. }) = Message::decode(&open) else { panic!("not an Open: {open:02x?}") };
        c.send(encode(&Message::Accept { conn, credit: 1 << 16, metadata: b"" })).await.expect("Accept");
        c.send(encode(&Message::Data { conn, payload: b"last words" })).await.expect("Data");
        c.send(encode(&Message::Fin { conn })).await.expect("Fin");
        c.send(encode(&Message::Data { conn, payload: b"after the end" })).await.expect("Data after Fin");
        // The initiator's answer: ProtocolError with the violation's code and reason.
        let answer = next_not_credit(&c).await;
        let violation = SessionViolation::AfterFin;
        assert_eq!(
            Message::decode(&answer),
            Ok(Message::ProtocolError { code: violation.code(), reason: violation.reason() }),
            "{answer:02x?}"
        );
        let end = within(LIMIT, "the initiator's GOODBYE", c.closed()).await;
        assert_eq!(end, SessionEnd::PeerGoodbye { code: goodbye_code::PROTOCOL_ERROR });
        c
    };
    let client = async {
        let a = connect(rt, addr).await;
        let mut x = a.open(b"").await.expect("open");
        assert_eq!(&within(LIMIT, "the data", x.recv()).await.expect("message")[..], b"last words");
        // The end of stream, then the violation ends the session: no message after the Fin
        // reaches the application.
        let after = within(LIMIT, "the end of stream", x.recv()).await;
        assert!(matches!(after, Err(ConnError::PeerFinished | ConnError::Ended(_))), "{after:?}");
        let end = within(LIMIT, "the session's end", a.closed()).await;
        assert_eq!(end, SessionEnd::LocalClose { code: goodbye_code::PROTOCOL_ERROR });
        assert_eq!(a.protocol_failure(), Some(SessionFailure::Violation(SessionViolation::AfterFin)));
        assert!(matches!(x.recv().await, Err(ConnError::PeerFinished | ConnError::Ended(_))));
        assert!(x.send(b"more").await.is_err(), "the session is over");
        a
    };
    let (_c, a) = within(LIMIT, "the whole exchange", futures::future::join(liar, client)).await;
    let logged = |capture: &sotto_adapter_tests::capture::Capture| capture.events_with("broke the session protocol");
    assert!(eventually(LIMIT, || logged(capture).len() == 1).await, "{:?}", capture.events());
    let e = &logged(capture)[0];
    assert_eq!(e.level, Level::WARN);
    assert_eq!(e.fields.get("code").map(String::as_str), Some("11"), "{e:?}");
    let spans = capture.spans_where("sotto_session", "session", &a.id().0.to_string());
    assert_eq!(spans.len(), 1, "{spans:?}");
    assert_eq!(e.span, Some(spans[0].0), "logged in the initiator's session span: {e:?}");
}
on_both!(data_after_the_peers_end_of_stream_is_a_typed_protocol_violation);

/// A well-behaved session ends with no protocol failure to report.
async fn a_closed_session_reports_no_protocol_failure(rt: Rt) {
    let (acc, upstream) =
        sotto_adapter_tests::sessions::listen(rt, sotto_adapter_tests::sessions::Transport::Tcp, session_config())
            .await;
    let a = sotto_adapter_tests::sessions::dial(rt, upstream, session_config()).await;
    let b = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    assert_eq!(a.protocol_failure(), None);
    within(LIMIT, "close", b.close(0x100, "done")).await;
    assert_eq!(within(LIMIT, "closed", a.closed()).await, SessionEnd::PeerGoodbye { code: 0x100 });
    assert_eq!((a.protocol_failure(), b.protocol_failure()), (None, None));
}
on_both!(a_closed_session_reports_no_protocol_failure);
