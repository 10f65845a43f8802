//! Sending in bursts: `ConnSender::send_many` (a prefix of a slice under one lock, like a
//! short `write`) and the connection's `Sink` (messages staged until a flush, a full stage,
//! a close or a drop). Each test checks what reaches the peer, in order, and that an error
//! is reported where the API says, never swallowed. And the other end of a burst: a reader
//! handed a whole window yields once after giving credit back.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use sotto_adapter_tests::sessions::{conn_message, dial, listen, open_accept, session_config, Rt, Transport};
use sotto_adapter_tests::workload::within;
use sotto_tokio::{ConnError, Connection, SessionHandle};

const LIMIT: Duration = Duration::from_secs(20);

/// One connection between two tokio sessions over loopback TCP with `credit` bytes of
/// window; the sessions are kept alive with it.
async fn one_connection(credit: u32) -> (Connection, Connection, SessionHandle, SessionHandle) {
    let mut cfg = session_config();
    cfg.protocol.initial_credit = credit;
    let (acc, upstream) = listen(Rt::Tokio, Transport::Tcp, cfg).await;
    let a = dial(Rt::Tokio, upstream, cfg).await;
    let b = acc.accept().await.expect("accept");
    let (x, y) = open_accept(&a, &b, 1).await.pop().expect("pair");
    (x, y, a, b)
}

/// `n` messages from `rx`, within the limit.
async fn take(rx: &mut Connection, n: usize) -> Vec<Bytes> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(within(LIMIT, "message", rx.recv()).await.expect("message"));
    }
    v
}

/// Nothing arrives on `rx` for a while.
async fn nothing_arrives(rx: &mut Connection) {
    let got = tokio::time::timeout(Duration::from_millis(150), rx.recv()).await;
    assert!(got.is_err(), "nothing was due, got {got:?}");
}

#[tokio::test]
async fn send_many_queues_what_the_credit_allows_and_waits_for_the_rest() {
    let (mut x, mut y, _a, _b) = one_connection(16 << 10).await;
    let items: Vec<Bytes> = (0..40).map(|i| Bytes::from(vec![i as u8; 1024])).collect();
    let first = within(LIMIT, "first burst", x.send_many(&items)).await.expect("send_many");
    assert_eq!(first, 16, "16 KiB of credit takes 16 messages of 1 KiB");
    // The rest must wait for the reader: the call stays pending.
    let blocked = tokio::time::timeout(Duration::from_millis(150), x.send_many(&items[first..])).await;
    assert!(blocked.is_err(), "no credit left, yet send_many returned {blocked:?}");
    let reader = async { take(&mut y, 40).await };
    let writer = async {
        let mut at = first;
        while at < items.len() {
            let n = x.send_many(&items[at..]).await.expect("send_many");
            assert!(n >= 1, "a call that returns queued something");
            at += n;
        }
    };
    let (got, ()) = within(LIMIT, "the rest", futures::future::join(reader, writer)).await;
    assert_eq!(got, items, "every message once, in order");
}

#[tokio::test]
async fn send_many_reports_a_later_error_on_the_next_call() {
    let (mut x, mut y, _a, _b) = one_connection(16 << 10).await;
    let too_large = Bytes::from(vec![0u8; 64 << 10]);
    let items = [Bytes::from_static(b"a"), Bytes::from_static(b"b"), too_large, Bytes::from_static(b"c")];
    assert_eq!(x.send_many(&items[..0]).await, Ok(0), "an empty burst queues nothing");
    assert_eq!(x.send_many(&items).await, Ok(2), "the prefix before the message that cannot go");
    match x.send_many(&items[2..]).await {
        Err(ConnError::TooLarge { len, max }) => assert!(len == 64 << 10 && max < len, "{len} > {max}"),
        other => panic!("the too-large message must be reported, got {other:?}"),
    }
    assert_eq!(x.send_many(&items[3..]).await, Ok(1), "the connection still sends");
    let got = take(&mut y, 3).await;
    assert_eq!(got, [&b"a"[..], b"b", b"c"]);
    nothing_arrives(&mut y).await;
}

#[tokio::test]
async fn sink_stages_until_flushed_and_keeps_order_across_sizes() {
    let (mut x, mut y, _a, _b) = one_connection(256 << 10).await;
    // Empty, small and large messages, interleaved; the third large one takes the stage
    // past its 64 KiB.
    let large = |i: u8| Bytes::from(vec![i; 30 << 10]);
    let items: Vec<Bytes> = vec![
        Bytes::new(),
        conn_message(1, 0),
        conn_message(1, 1),
        large(1),
        conn_message(1, 2),
        large(2),
        conn_message(1, 3),
        large(3),
        conn_message(1, 4),
        conn_message(1, 5),
    ];
    for item in &items[..8] {
        within(LIMIT, "feed", x.feed(item.clone())).await.expect("feed");
    }
    nothing_arrives(&mut y).await;
    // The stage is full: feeding the next message queues the eight before it.
    for item in &items[8..] {
        within(LIMIT, "feed", x.feed(item.clone())).await.expect("feed");
    }
    assert_eq!(take(&mut y, 8).await, items[..8], "queued as the stage filled, in order");
    nothing_arrives(&mut y).await;
    within(LIMIT, "flush", x.flush()).await.expect("flush");
    assert_eq!(take(&mut y, 2).await, items[8..], "the flush sends the rest");
}

#[tokio::test]
async fn sink_fed_without_flushing_queues_itself_as_the_stage_fills() {
    let (x, y, _a, _b) = one_connection(256 << 10).await;
    let (mut tx, _xr) = x.split();
    let (_yt, mut rx) = y.split();
    let n = 2000u64;
    let writer = async {
        for i in 0..n {
            tx.feed(conn_message(2, i)).await.expect("feed");
        }
    };
    let reader = async {
        // At most one stage (256 messages) can be held back without a flush.
        for i in 0..n - 256 {
            assert_eq!(rx.recv().await.expect("message"), conn_message(2, i), "message {i}");
        }
    };
    within(LIMIT, "feeding past many stages", futures::future::join(writer, reader)).await;
    within(LIMIT, "flush", tx.flush()).await.expect("flush");
    for i in n - 256..n {
        assert_eq!(within(LIMIT, "rest", rx.recv()).await.expect("message"), conn_message(2, i));
    }
}

#[tokio::test]
async fn sink_drops_only_the_too_large_message_and_says_so() {
    let (mut x, mut y, _a, _b) = one_connection(16 << 10).await;
    x.feed(Bytes::from_static(b"before")).await.expect("feed");
    x.feed(Bytes::from(vec![0u8; 64 << 10])).await.expect("staged: checked at the flush");
    match x.flush().await {
        Err(ConnError::TooLarge { len, .. }) => assert_eq!(len, 64 << 10),
        other => panic!("the flush must report the too-large message, got {other:?}"),
    }
    x.feed(Bytes::from_static(b"after")).await.expect("feed");
    x.flush().await.expect("flush");
    assert_eq!(take(&mut y, 2).await, [&b"before"[..], b"after"]);
    nothing_arrives(&mut y).await;
}

#[tokio::test]
async fn closing_delivers_staged_messages_before_the_close() {
    let (mut x, mut y, _a, _b) = one_connection(256 << 10).await;
    for i in 0..5 {
        x.feed(conn_message(3, i)).await.expect("feed");
    }
    within(LIMIT, "close", x.close(b"done")).await;
    for i in 0..5 {
        assert_eq!(within(LIMIT, "staged", y.recv()).await.expect("staged message"), conn_message(3, i));
    }
    assert_eq!(within(LIMIT, "close", y.recv()).await, Err(ConnError::PeerClosed(Bytes::from_static(b"done"))));
    // The same through the Sink's own close.
    let (mut x2, mut y2, _a2, _b2) = one_connection(256 << 10).await;
    x2.feed(Bytes::from_static(b"staged")).await.expect("feed");
    within(LIMIT, "sink close", SinkExt::close(&mut x2)).await.expect("close");
    assert_eq!(&within(LIMIT, "staged", y2.next()).await.expect("message")[..], b"staged");
    // The Sink's close is a half-close: the peer's stream ends.
    assert_eq!(within(LIMIT, "end", y2.recv()).await, Err(ConnError::PeerFinished));
}

#[tokio::test]
async fn dropping_a_sink_queues_what_it_staged() {
    let (x, mut y, _a, _b) = one_connection(256 << 10).await;
    let (mut tx, _xr) = x.split();
    for i in 0..5 {
        tx.feed(conn_message(4, i)).await.expect("feed");
    }
    drop(tx);
    for i in 0..5 {
        assert_eq!(within(LIMIT, "staged", y.recv()).await.expect("staged message"), conn_message(4, i));
    }
    nothing_arrives(&mut y).await;
}

/// A2 for the sending side: `send` and `send_many` raced against short timeouts (a small
/// window, so they often wait for credit) neither lose nor duplicate a message: a cancelled
/// call queued nothing, and the same messages are offered again.
#[tokio::test]
async fn a2_cancelled_sends_lose_and_duplicate_nothing() {
    let (x, y, _a, _b) = one_connection(4 << 10).await;
    let (mut tx, _xr) = x.split();
    let (_yt, mut rx) = y.split();
    let n = 3000u64;
    let writer = async {
        let (mut i, mut cancelled) = (0u64, 0u32);
        while i < n {
            let short = Duration::from_micros(50);
            if i % 2 == 0 {
                match tokio::time::timeout(short, tx.send(conn_message(5, i))).await {
                    Ok(r) => {
                        r.expect("send");
                        i += 1;
                    }
                    Err(_) => cancelled += 1,
                }
            } else {
                let burst: Vec<Bytes> = (i..n.min(i + 5)).map(|k| conn_message(5, k)).collect();
                match tokio::time::timeout(short, tx.send_many(&burst)).await {
                    Ok(r) => i += r.expect("send_many") as u64,
                    Err(_) => cancelled += 1,
                }
            }
        }
        cancelled
    };
    let reader = async {
        for i in 0..n {
            let got = rx.recv().await.expect("message");
            assert_eq!(got, conn_message(5, i), "message {i}: lost, duplicated or out of order");
        }
    };
    let (cancelled, ()) = within(LIMIT, "cancelled sends", futures::future::join(writer, reader)).await;
    println!("{cancelled} sends cancelled while waiting");
    let extra = tokio::time::timeout(Duration::from_millis(150), rx.recv()).await;
    assert!(extra.is_err(), "a cancelled send went out after all: {extra:?}");
}

/// Counts its wake-ups.
struct WakeCount(std::sync::atomic::AtomicUsize);

impl futures::task::ArcWake for WakeCount {
    fn wake_by_ref(arc_self: &std::sync::Arc<Self>) {
        arc_self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A burst received whole: the reader yields once (`Pending`, its task already woken) right
/// after the message whose credit release queued a grant to the peer, then goes on; every
/// message arrives once, in order. (The yield lets the driver send the grant while the rest
/// is read; see `ConnReceiver::recv`.)
#[tokio::test]
async fn a_reader_yields_once_after_giving_credit_back() {
    // 4096 messages of 16 B spend a 64 KiB window (16 credit each). The reader gives credit
    // back every quarter window (1024 messages); the core sends a grant once half the
    // window is owed: after message 2048, with 2048 still queued (a backlog: a yield), and
    // after message 4096, with none (no yield).
    const N: u64 = 4096;
    let (mut x, y, _a, _b) = one_connection(64 << 10).await;
    let items: Vec<Bytes> = (0..N).map(|i| Bytes::from(format!("{i:016}"))).collect();
    let mut at = 0;
    while at < items.len() {
        at += within(LIMIT, "send_many", x.send_many(&items[at..])).await.expect("send_many");
    }
    // All of it reaches the peer's queue (loopback).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_yt, mut yr) = y.split();
    let count = std::sync::Arc::new(WakeCount(std::sync::atomic::AtomicUsize::new(0)));
    let waker = futures::task::waker(std::sync::Arc::clone(&count));
    let mut cx = std::task::Context::from_waker(&waker);
    let (mut got, mut yields, mut waits) = (0u64, 0, 0);
    while got < N {
        let before = count.0.load(std::sync::atomic::Ordering::SeqCst);
        match yr.poll_recv(&mut cx) {
            std::task::Poll::Ready(m) => {
                assert_eq!(m.expect("message"), items[got as usize], "message {got}");
                got += 1;
            }
            std::task::Poll::Pending if count.0.load(std::sync::atomic::Ordering::SeqCst) > before => yields += 1,
            std::task::Poll::Pending => {
                waits += 1;
                assert!(waits < 100, "messages stopped arriving at {got}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    assert_eq!(waits, 0, "the whole burst was queued before reading");
    assert_eq!(yields, 1, "one grant queued with messages still waiting");
}
