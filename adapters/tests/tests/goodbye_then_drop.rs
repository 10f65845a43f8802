//! A suspected defect, checked over real sockets on both runtimes: the `chat` example once
//! hung before its server kept each session's handle until its relays finished. Suspicion:
//! dropping a `SessionHandle` after the peer's GOODBYE discards messages still queued on a
//! connection (or not yet handed to its reader). These tests show it does not: everything
//! the peer sent before its GOODBYE is read after the last handle is gone and the session's
//! task has exited, in order, then the end of the session.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use sotto_adapter_tests::sessions::{conn_message, dial, listen, open_accept, session_config, Rt, Transport};
use sotto_adapter_tests::workload::{eventually, sleep, within};
use sotto_proto::SessionEnd;
use sotto_tokio::ConnError;

const LIMIT: Duration = Duration::from_secs(30);
const MESSAGES: u64 = 600;

/// The client sends `MESSAGES` (one by one, then small ones in bursts that travel batched),
/// waits until the server's session holds them all, and closes with GOODBYE. The server has
/// read none of them; it waits for the GOODBYE, drops its only handle, waits for the
/// session's task to exit, and only then reads: every message, in order, then `Ended`.
async fn queued_messages_outlive_the_handle_run(rt: Rt) {
    let (acc, at) = listen(rt, Transport::Tcp, session_config()).await;
    let a = dial(rt, at, session_config()).await;
    let b = acc.accept().await.expect("accept");
    let (mut x, y) = open_accept(&a, &b, 1).await.pop().expect("pair");
    for i in 0..MESSAGES / 2 {
        x.send(conn_message(0, i)).await.expect("send");
    }
    let small: Vec<Bytes> = (MESSAGES / 2..MESSAGES).map(|i| Bytes::from(i.to_le_bytes().to_vec())).collect();
    let mut at = 0;
    while at < small.len() {
        at += x.send_many(&small[at..]).await.expect("send_many");
    }
    within(LIMIT, "flush", a.flush()).await.expect("the server's session holds everything");
    let end = within(LIMIT, "close", a.close(9, "bye")).await;
    assert_eq!(end, SessionEnd::LocalClose { code: 9 });
    let ended = within(LIMIT, "the GOODBYE arrives", b.closed()).await;
    assert!(matches!(ended, SessionEnd::PeerGoodbye { code: 9, .. }), "{ended:?}");
    let (_tx, mut rx) = y.split();
    drop(b);
    // The session's task exits (its drain bound is 500 ms in this configuration).
    sleep(Duration::from_millis(800)).await;
    for i in 0..MESSAGES / 2 {
        let got = within(LIMIT, "recv", rx.recv()).await.expect("queued before the GOODBYE");
        assert_eq!(got, conn_message(0, i), "message {i}");
    }
    for (i, want) in small.iter().enumerate() {
        let got = within(LIMIT, "recv", rx.recv()).await.expect("queued before the GOODBYE");
        assert_eq!(&got, want, "small message {i}");
    }
    let last = within(LIMIT, "the end", rx.recv()).await;
    assert!(matches!(last, Err(ConnError::Ended(SessionEnd::PeerGoodbye { code: 9, .. }))), "{last:?}");
    assert!(within(LIMIT, "stream end", rx.next()).await.is_none());
}

#[tokio::test]
async fn tokio_messages_queued_before_the_peers_goodbye_survive_dropping_the_session_handle() {
    queued_messages_outlive_the_handle_run(Rt::Tokio).await;
}

#[test]
fn smol_messages_queued_before_the_peers_goodbye_survive_dropping_the_session_handle() {
    smol::block_on(queued_messages_outlive_the_handle_run(Rt::Smol));
}

/// The same while the server's reader is busy: the handle is dropped as soon as the GOODBYE
/// ended the session, with the reader part-way through its queue (it took the queue into
/// its own buffer); the rest still comes, then the end. Twenty sessions in a row: the hang
/// the `chat` example showed was rare.
async fn reader_in_progress_run(rt: Rt) {
    let (acc, at) = listen(rt, Transport::Tcp, session_config()).await;
    for round in 0..20u32 {
        let a = dial(rt, at.clone(), session_config()).await;
        let b = acc.accept().await.expect("accept");
        let (mut x, y) = open_accept(&a, &b, 1).await.pop().expect("pair");
        let (_tx, mut rx) = y.split();
        for i in 0..100 {
            x.send(conn_message(round, i)).await.expect("send");
        }
        // Read a few: the reader now holds the rest of what was queued so far.
        for i in 0..3 {
            assert_eq!(within(LIMIT, "recv", rx.recv()).await.expect("message"), conn_message(round, i));
        }
        let end = within(LIMIT, "close", a.close(1, "round")).await;
        assert_eq!(end, SessionEnd::LocalClose { code: 1 });
        assert!(eventually(LIMIT, || b.ended().is_some()).await, "the GOODBYE ended the server's session");
        drop(b);
        for i in 3..100 {
            let got = within(LIMIT, "recv", rx.recv()).await.unwrap_or_else(|e| panic!("round {round}, {i}: {e}"));
            assert_eq!(got, conn_message(round, i), "round {round}, message {i}");
        }
        let last = within(LIMIT, "the end", rx.recv()).await;
        assert!(matches!(last, Err(ConnError::Ended(SessionEnd::PeerGoodbye { code: 1, .. }))), "{last:?}");
    }
}

#[tokio::test]
async fn tokio_a_reader_part_way_through_its_queue_gets_the_rest_after_the_handle_is_dropped() {
    reader_in_progress_run(Rt::Tokio).await;
}

#[test]
fn smol_a_reader_part_way_through_its_queue_gets_the_rest_after_the_handle_is_dropped() {
    smol::block_on(reader_in_progress_run(Rt::Smol));
}
