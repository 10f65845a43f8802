//! The handoff's faults (issue 17): a peer at the other end of the handoff socket that is
//! hostile, buggy, slow or dead. Each test names the fault; the outcome is always "the
//! session stays where it was, or ends with a reason": never two owners, never a lost
//! message. Sender-side faults are played by a fake receiver, receiver-side ones by a fake
//! sender, both speaking the frames of `sotto_proto::handoff` on a real Unix socket.
#![cfg(unix)]

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use sotto_adapter_tests::sessions::{dial, exchange_all, listen, open_accept, session_config, Rt, Transport};
use sotto_adapter_tests::workload::within;
use sotto_driver::handoff::{receive_listener, HandoffConfig, HandoffError, ListenerFamily, Refusal};
use sotto_driver::{Connection, SessionAcceptor, SessionHandle};
use sotto_proto::handoff::{self, Ack, Frame, Offer, HEADER_LEN};

const LIMIT: Duration = Duration::from_secs(20);

/// Read one frame's bytes (header and body) from `s`.
fn read_frame(s: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let mut f = vec![0u8; HEADER_LEN];
    s.read_exact(&mut f)?;
    let len = handoff::body_len(&f, u32::MAX).map_err(std::io::Error::other)?;
    f.resize(HEADER_LEN + len, 0);
    s.read_exact(&mut f[HEADER_LEN..])?;
    Ok(f)
}

/// What a fake receiver does with the first offer.
#[derive(Clone, Copy)]
enum Fake {
    WrongToken,
    WrongCorrelation,
    Refuse,
    NeverAnswer,
    CrashMidOffer,
}

/// A fake receiver on a thread; returns the raw frames it read after the offer (a REVOKE).
fn fake_receiver(mut s: UnixStream, fake: Fake) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    std::thread::spawn(move || {
        if let Fake::CrashMidOffer = fake {
            let mut part = [0u8; HEADER_LEN + 10];
            let _ = s.read_exact(&mut part);
            return Vec::new();
        }
        let Ok(f) = read_frame(&mut s) else { return Vec::new() };
        let Ok(Frame::Offer(o)) = handoff::decode(&f, u32::MAX) else { panic!("an offer first") };
        let (mut corr, mut token, mut refusal) = (o.corr, o.token, None);
        match fake {
            Fake::WrongToken => token[0] ^= 1,
            Fake::WrongCorrelation => corr += 1,
            Fake::Refuse => refusal = Some(Refusal::Full),
            Fake::NeverAnswer => {}
            Fake::CrashMidOffer => unreachable!(),
        }
        if !matches!(fake, Fake::NeverAnswer) {
            let mut out = Vec::new();
            Frame::Ack(Ack { corr, token, refusal, reason: "fake" }).encode(&mut out);
            s.write_all(&out).expect("ack");
        }
        let mut after = Vec::new();
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        while let Ok(f) = read_frame(&mut s) {
            after.push(f);
        }
        after
    })
}

/// A session on a tokio session acceptor with one connection carrying traffic both ways.
async fn one_session() -> (SessionAcceptor, SessionHandle, SessionHandle, Vec<(Connection, Connection)>) {
    let (acc, to) = listen(Rt::Tokio, Transport::Tcp, session_config()).await;
    let a = dial(Rt::Tokio, to, session_config()).await;
    let b = acc.accept().await.expect("accept");
    let pairs = within(LIMIT, "open", open_accept(&a, &b, 1)).await;
    let pairs = within(LIMIT, "exchange", exchange_all(pairs, 50)).await;
    (acc, a, b, pairs)
}

/// Hand the session off to a fake receiver playing `fake`: the handoff fails, the session
/// stays, served over the same link as before (no link change either side), nothing lost.
async fn sender_keeps_the_session(fake: Fake, timeout: Duration) -> (Vec<HandoffError>, Vec<Vec<u8>>) {
    let (acc, a, b, pairs) = one_session().await;
    let (mine, theirs) = UnixStream::pair().expect("socketpair");
    let peer = fake_receiver(theirs, fake);
    let mut config = HandoffConfig::default();
    config.ack_timeout = timeout;
    let report = within(LIMIT, "hand off", acc.hand_off(mine, None, config)).await;
    println!("{report:?}");
    assert_eq!((report.offered, report.handed_off, report.kept), (1, 0, 1), "the session stays: {report:?}");
    assert_eq!(acc.stats().endpoint.sessions_released, 0, "its keys still route here");
    // Still served, over the same link, with nothing lost or duplicated.
    let pairs = within(LIMIT, "exchange after the failed handoff", exchange_all(pairs, 200)).await;
    let after = peer.join().expect("fake receiver");
    assert_eq!((a.stats().link_downs, b.stats().link_downs), (0, 0), "no link change");
    assert!(b.stats().link_established && !a.stats().link_established.eq(&false));
    drop(pairs);
    (report.failures, after)
}

fn revoked(after: &[Vec<u8>]) -> bool {
    after.iter().any(|f| matches!(handoff::decode(f, u32::MAX), Ok(Frame::Revoke { .. })))
}

#[tokio::test]
async fn ack_with_a_wrong_token_leaves_the_session_with_the_sender_and_revokes_the_token() {
    let (failures, after) = sender_keeps_the_session(Fake::WrongToken, Duration::from_secs(2)).await;
    assert!(matches!(failures[..], [HandoffError::TokenMismatch]), "{failures:?}");
    assert!(revoked(&after), "the token is revoked");
}

#[tokio::test]
async fn ack_with_a_wrong_correlation_id_leaves_the_session_with_the_sender_and_revokes_the_token() {
    let (failures, after) = sender_keeps_the_session(Fake::WrongCorrelation, Duration::from_secs(2)).await;
    assert!(matches!(failures[..], [HandoffError::CorrelationMismatch]), "{failures:?}");
    assert!(revoked(&after), "the token is revoked");
}

#[tokio::test]
async fn refused_offer_leaves_the_session_with_the_sender() {
    let (failures, after) = sender_keeps_the_session(Fake::Refuse, Duration::from_secs(2)).await;
    assert!(matches!(failures[..], [HandoffError::Refused { refusal: Refusal::Full, .. }]), "{failures:?}");
    assert!(!revoked(&after), "a refusal needs no revocation");
    assert!(
        after.iter().any(|f| matches!(handoff::decode(f, u32::MAX), Ok(Frame::Done { offers: 1 }))),
        "the protocol goes on after a refusal"
    );
}

#[tokio::test]
async fn peer_that_never_answers_misses_the_ack_deadline_and_the_session_stays() {
    let (failures, after) = sender_keeps_the_session(Fake::NeverAnswer, Duration::from_millis(200)).await;
    assert!(matches!(failures[..], [HandoffError::AckTimeout]), "{failures:?}");
    assert!(revoked(&after), "the token is revoked");
}

#[tokio::test]
async fn peer_that_crashes_mid_transfer_leaves_the_session_with_the_sender() {
    let (failures, _) = sender_keeps_the_session(Fake::CrashMidOffer, Duration::from_secs(2)).await;
    assert!(
        matches!(failures[..], [HandoffError::PeerClosed | HandoffError::Io(_) | HandoffError::Truncated]),
        "{failures:?}"
    );
}

/// An offer with real state: captured from a real sender by a fake receiver that refuses
/// it (so the session stays with that sender).
async fn captured_offer() -> (Vec<u8>, SessionAcceptor, SessionHandle) {
    let (acc, a, _b, pairs) = one_session().await;
    let (mine, mut theirs) = UnixStream::pair().expect("socketpair");
    let capture = std::thread::spawn(move || {
        let f = read_frame(&mut theirs).expect("offer");
        let Ok(Frame::Offer(o)) = handoff::decode(&f, u32::MAX) else { panic!("an offer") };
        let mut out = Vec::new();
        Frame::Ack(Ack { corr: o.corr, token: o.token, refusal: Some(Refusal::NotAccepting), reason: "" })
            .encode(&mut out);
        theirs.write_all(&out).expect("ack");
        f
    });
    let report = within(LIMIT, "hand off", acc.hand_off(mine, None, HandoffConfig::default())).await;
    assert_eq!(report.kept, 1);
    drop(pairs);
    (capture.join().expect("capture"), acc, a)
}

/// A fake sender writes `frames` to a real receiver; returns its result and the ACKs.
async fn to_real_receiver(
    frames: Vec<Vec<u8>>,
    close_after: bool,
) -> (Result<String, HandoffError>, Vec<Vec<u8>>, SessionAcceptor) {
    let (acc, _) = listen(Rt::Tokio, Transport::Tcp, session_config()).await;
    let (mine, mut theirs) = UnixStream::pair().expect("socketpair");
    let sender = std::thread::spawn(move || {
        let mut acks = Vec::new();
        for f in frames {
            theirs.write_all(&f).expect("write");
            if matches!(handoff::decode(&f, u32::MAX), Ok(Frame::Offer(_))) {
                acks.push(read_frame(&mut theirs).expect("ack"));
            }
        }
        if close_after {
            drop(theirs);
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
        acks
    });
    let mut config = HandoffConfig::default();
    config.idle_timeout = Duration::from_secs(2);
    let got = within(LIMIT, "receive", acc.receive_handoff(mine, config)).await.map(|r| format!("{r:?}"));
    (got, sender.join().expect("fake sender"), acc)
}

fn refusal_of(ack: &[u8]) -> Option<Refusal> {
    match handoff::decode(ack, u32::MAX) {
        Ok(Frame::Ack(a)) => a.refusal,
        other => panic!("an ACK expected: {other:?}"),
    }
}

fn with_state(offer: &[u8], f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let Ok(Frame::Offer(o)) = handoff::decode(offer, u32::MAX) else { panic!("an offer") };
    let mut state = o.state.to_vec();
    f(&mut state);
    let mut out = Vec::new();
    Frame::Offer(Offer { state: &state, ..o }).encode(&mut out);
    out
}

fn done() -> Vec<u8> {
    let mut out = Vec::new();
    Frame::Done { offers: 1 }.encode(&mut out);
    out
}

#[tokio::test]
async fn state_from_a_newer_format_version_is_refused_and_nothing_is_adopted() {
    let (offer, _old, _client) = captured_offer().await;
    // The state's header: magic "SOTS", then the version (u16 LE).
    let newer = with_state(&offer, |s| s[4] = 2);
    let (got, acks, acc) = to_real_receiver(vec![newer, done()], false).await;
    assert!(got.is_ok(), "{got:?}");
    assert_eq!(refusal_of(&acks[0]), Some(Refusal::UnsupportedState));
    assert_eq!(acc.stats().endpoint.sessions_live, 0, "nothing adopted");
}

#[tokio::test]
async fn corrupt_state_is_refused_and_nothing_is_adopted() {
    let (offer, _old, _client) = captured_offer().await;
    let truncated = with_state(&offer, |s| s.truncate(s.len() / 2));
    let bad_magic = with_state(&offer, |s| s[0] ^= 0xff);
    let (got, acks, acc) = to_real_receiver(vec![truncated, bad_magic, done()], false).await;
    assert!(got.is_ok(), "{got:?}");
    assert_eq!(refusal_of(&acks[0]), Some(Refusal::BadState));
    assert_eq!(refusal_of(&acks[1]), Some(Refusal::BadState));
    assert_eq!(acc.stats().endpoint.sessions_live, 0, "nothing adopted");
}

#[tokio::test]
async fn state_over_the_receivers_limits_is_refused() {
    let (offer, _old, _client) = captured_offer().await;
    let mut small = session_config();
    // The offered connection's receive window is the sender's initial credit.
    small.protocol.initial_credit /= 2;
    let (acc, _) = listen(Rt::Tokio, Transport::Tcp, small).await;
    let (mine, mut theirs) = UnixStream::pair().expect("socketpair");
    let sender = std::thread::spawn(move || {
        theirs.write_all(&offer).expect("offer");
        let ack = read_frame(&mut theirs).expect("ack");
        theirs.write_all(&done()).expect("done");
        ack
    });
    let got = within(LIMIT, "receive", acc.receive_handoff(mine, HandoffConfig::default())).await;
    assert!(got.is_ok(), "{got:?}");
    assert_eq!(refusal_of(&sender.join().expect("sender")), Some(Refusal::OverLimit));
    assert_eq!(acc.stats().endpoint.sessions_live, 0);
}

#[tokio::test]
async fn a_revoked_offer_is_given_up_by_the_receiver_so_the_session_has_one_owner() {
    let (offer, _old, _client) = captured_offer().await;
    let Ok(Frame::Offer(o)) = handoff::decode(&offer, u32::MAX) else { panic!("an offer") };
    let mut revoke = Vec::new();
    Frame::Revoke { corr: o.corr, token: o.token }.encode(&mut revoke);
    let (got, acks, acc) = to_real_receiver(vec![offer.clone(), revoke, done()], false).await;
    assert_eq!(refusal_of(&acks[0]), None, "adopted first");
    let got = got.expect("received");
    assert!(got.contains("adopted: 0") && got.contains("revoked: 1"), "{got}");
    let ep = acc.stats().endpoint;
    assert_eq!((ep.sessions_adopted, ep.sessions_live), (1, 0), "adopted, then given up: {ep:?}");
}

#[tokio::test]
async fn sender_that_crashes_mid_offer_leaves_the_receiver_with_nothing_adopted() {
    let (offer, _old, _client) = captured_offer().await;
    let half = offer[..offer.len() / 2].to_vec();
    let (acc, _) = listen(Rt::Tokio, Transport::Tcp, session_config()).await;
    let (mine, mut theirs) = UnixStream::pair().expect("socketpair");
    std::thread::spawn(move || {
        theirs.write_all(&half).expect("half an offer");
        // Crash: the socket closes mid-frame.
    });
    let got = within(LIMIT, "receive", acc.receive_handoff(mine, HandoffConfig::default())).await;
    assert!(matches!(got, Err(HandoffError::Truncated)), "{got:?}");
    assert_eq!(acc.stats().endpoint.sessions_live, 0);
}

#[tokio::test]
async fn malformed_frames_end_the_receive_with_a_typed_error() {
    for (bytes, what) in [
        (b"XXXX\x01\x01\0\0\0\0\0\0".to_vec(), "bad magic"),
        (b"SOHF\x09\x01\0\0\0\0\0\0".to_vec(), "newer protocol"),
        (b"SOHF\x01\x09\0\0\0\0\0\0".to_vec(), "unknown kind"),
        (b"SOHF\x01\x01\0\0\xff\xff\xff\xff".to_vec(), "longer than the receiver's limit"),
    ] {
        let (acc, _) = listen(Rt::Tokio, Transport::Tcp, session_config()).await;
        let (mine, mut theirs) = UnixStream::pair().expect("socketpair");
        theirs.write_all(&bytes).expect("write");
        eprintln!("{what}");
        let got = within(LIMIT, what, acc.receive_handoff(mine, HandoffConfig::default())).await;
        assert!(matches!(got, Err(HandoffError::Frame(_))), "{what}: {got:?}");
        assert_eq!(acc.stats().endpoint.sessions_live, 0);
        drop(theirs);
    }
}

#[tokio::test]
async fn a_descriptor_that_is_not_a_socket_is_refused_by_the_receiver() {
    let (acc, _) = listen(Rt::Tokio, Transport::Tcp, session_config()).await;
    let (mine, theirs) = UnixStream::pair().expect("socketpair");
    let file: OwnedFd = std::fs::File::open("/dev/null").expect("a file").into();
    let recv = std::thread::spawn(move || receive_listener(&theirs, LIMIT).map(|_| ()));
    let report =
        within(LIMIT, "hand off", acc.hand_off(mine, Some((file, ListenerFamily::Tcp)), HandoffConfig::default()))
            .await;
    assert!(report.listener_sent);
    let got = recv.join().expect("receiver");
    assert!(matches!(got, Err(HandoffError::NotASocket)), "{got:?}");
    // A socket that is not listening is refused too.
    let (acc, _) = listen(Rt::Tokio, Transport::Tcp, session_config()).await;
    let (mine, theirs) = UnixStream::pair().expect("socketpair");
    let (not_listening, _other) = UnixStream::pair().expect("socketpair");
    let recv = std::thread::spawn(move || receive_listener(&theirs, LIMIT).map(|_| ()));
    let report = within(
        LIMIT,
        "hand off",
        acc.hand_off(mine, Some((not_listening.into(), ListenerFamily::Unix)), HandoffConfig::default()),
    )
    .await;
    assert!(report.listener_sent);
    let got = recv.join().expect("receiver");
    assert!(matches!(got, Err(HandoffError::NotListening)), "{got:?}");
}

#[tokio::test]
async fn an_adopted_session_reaches_the_application_only_once_the_sender_let_it_go() {
    // A sender that takes the receiver's ACK too late keeps the session, serves it on and
    // revokes it: until the sender's next frame the receiver's application must not have
    // it (it could read the messages that moved with it, which the sender's reads too).
    let (offer, _old, _client) = captured_offer().await;
    let Ok(Frame::Offer(o)) = handoff::decode(&offer, u32::MAX) else { panic!("an offer") };
    let mut revoke = Vec::new();
    Frame::Revoke { corr: o.corr, token: o.token }.encode(&mut revoke);
    let (acc, _) = listen(Rt::Tokio, Transport::Tcp, session_config()).await;
    let (mine, mut theirs) = UnixStream::pair().expect("socketpair");
    let sender = std::thread::spawn(move || {
        theirs.write_all(&offer).expect("offer");
        let ack = read_frame(&mut theirs).expect("ack");
        // The ACK came "late": the sender revokes, a while later.
        std::thread::sleep(Duration::from_millis(500));
        theirs.write_all(&revoke).expect("revoke");
        theirs.write_all(&done()).expect("done");
        ack
    });
    let receive = acc.receive_handoff(mine, HandoffConfig::default());
    let accept = tokio::time::timeout(Duration::from_millis(1500), acc.accept());
    let (got, accepted) = within(LIMIT, "receive and accept", async { tokio::join!(receive, accept) }).await;
    assert_eq!(refusal_of(&sender.join().expect("sender")), None, "adopted first");
    let got = format!("{:?}", got.expect("received"));
    assert!(got.contains("revoked: 1"), "{got}");
    assert!(accepted.is_err(), "the application got a session its sender revoked: {accepted:?}");
}

#[tokio::test]
async fn an_adopted_session_is_accepted_once_the_sender_says_done() {
    let (offer, _old, _client) = captured_offer().await;
    let (got, acks, acc) = to_real_receiver(vec![offer, done()], false).await;
    assert_eq!(refusal_of(&acks[0]), None, "adopted");
    assert!(got.expect("received").contains("adopted: 1"));
    let b = within(LIMIT, "accept", acc.accept()).await.expect("the adopted session");
    assert_eq!(b.adopted_connections().len(), 1, "its connection came along");
}

#[tokio::test]
async fn mutated_application_sections_are_refused_or_adopted_never_a_panic() {
    // The receiver parses the sender's application section (moving::read_app): random
    // mutations of a real one, each a typed refusal or an adoption. A panic would end the
    // receiver's thread (the receive would fail with PeerClosed).
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1;
    let seed = std::env::var("SOTTO_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(seed);
    println!("seed {seed} (rerun with SOTTO_SEED={seed})");
    let mut x = seed;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (offer, _old, _client) = captured_offer().await;
    let Ok(Frame::Offer(o)) = handoff::decode(&offer, u32::MAX) else { panic!("an offer") };
    let n = 300;
    let mut frames = Vec::new();
    for i in 0..n {
        let mut app = o.app.to_vec();
        match rnd() % 4 {
            0 => app.truncate(rnd() as usize % (app.len() + 1)),
            1 => {
                let at = rnd() as usize % (app.len() + 1);
                let extra: Vec<u8> = (0..1 + rnd() % 8).map(|_| rnd() as u8).collect();
                app.splice(at..at, extra);
            }
            _ => {
                for _ in 0..1 + rnd() % 4 {
                    let at = rnd() as usize % app.len();
                    app[at] = if rnd() % 2 == 0 { rnd() as u8 } else { 0xff };
                }
            }
        }
        let mut out = Vec::new();
        Frame::Offer(Offer { corr: i + 1, app: &app, ..o }).encode(&mut out);
        frames.push(out);
    }
    let mut last = Vec::new();
    Frame::Done { offers: n as u32 }.encode(&mut last);
    frames.push(last);
    let (got, acks, _acc) = to_real_receiver(frames, false).await;
    let got = got.expect("the receiver survived every section");
    assert_eq!(acks.len(), n as usize, "every offer answered");
    assert!(got.contains("done: true"), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_reading_a_large_offer_slowly_cannot_stretch_the_freeze_past_the_ack_timeout() {
    // The socket's write timeout bounds each write call; a receiver that reads a chunk now
    // and then (each read in time to wake the writer) kept the sender writing a large OFFER,
    // the session frozen, for as long as it liked. The whole write now counts against the
    // offer's deadline.
    let (acc, to) = listen(Rt::Tokio, Transport::Tcp, session_config()).await;
    let a = dial(Rt::Tokio, to, session_config()).await;
    let b = acc.accept().await.expect("accept");
    let pairs = within(LIMIT, "open", open_accept(&a, &b, 4)).await;
    // About 1 MB the server's application has not read: it moves in the OFFER.
    let chunk = vec![7u8; 10 << 10];
    let mut keep = Vec::new();
    for (mut c, s) in pairs {
        for _ in 0..25 {
            within(LIMIT, "send", c.send(&chunk[..])).await.expect("send");
        }
        keep.push((c, s));
    }
    assert!(
        sotto_adapter_tests::workload::eventually(LIMIT, || b.stats().queued_messages == 100).await,
        "delivered, unread"
    );
    let (mine, mut theirs) = UnixStream::pair().expect("socketpair");
    let slow = std::thread::spawn(move || {
        let _ = theirs.set_read_timeout(Some(Duration::from_secs(5)));
        let mut buf = vec![0u8; 160 << 10];
        // 160 KiB every 300 ms: each read wakes the writer well within its 400 ms timeout.
        while let Ok(n) = theirs.read(&mut buf) {
            if n == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let mut config = HandoffConfig::default();
    config.ack_timeout = Duration::from_millis(400);
    let report = within(LIMIT, "hand off", acc.hand_off(mine, None, config)).await;
    println!("{report:?}");
    assert_eq!((report.offered, report.handed_off), (1, 0), "{report:?}");
    assert!(matches!(report.failures[..], [HandoffError::AckTimeout]), "{report:?}");
    assert!(
        report.longest_freeze < Duration::from_millis(1000),
        "frozen for {:?} with a 400 ms ack timeout",
        report.longest_freeze
    );
    drop(keep);
    let _ = slow.join();
}

/// A receiver that takes the listener, reads the whole offer and then closes the socket
/// without a word: to the sender the offer's outcome is unknown (the receiver may have
/// adopted the session and lost its ACK) and its REVOKE cannot be sent.
fn receiver_that_vanishes_after_the_offer(mut s: UnixStream, takes_listener: bool) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        if takes_listener {
            let _listener = receive_listener(&s, LIMIT).expect("the listener");
        }
        let f = read_frame(&mut s).expect("the whole offer");
        assert!(matches!(handoff::decode(&f, u32::MAX), Ok(Frame::Offer(_))), "an offer");
    })
}

#[tokio::test]
async fn unknown_outcome_after_the_listener_moved_ends_the_senders_copy_so_the_session_has_one_owner() {
    // The listener went to the receiver: every resume lands there, so the sender's copy must
    // not be served on beside one the receiver may hold.
    let (acc, a, b, pairs) = one_session().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
    let (mine, theirs) = UnixStream::pair().expect("socketpair");
    let peer = receiver_that_vanishes_after_the_offer(theirs, true);
    let passed = Some((OwnedFd::from(listener), ListenerFamily::Tcp));
    let report = within(LIMIT, "hand off", acc.hand_off(mine, passed, HandoffConfig::default())).await;
    peer.join().expect("receiver");
    println!("{report:?}");
    assert!(report.listener_sent && report.broken, "{report:?}");
    assert_eq!((report.offered, report.handed_off, report.uncertain, report.kept), (1, 0, 1, 0), "{report:?}");
    assert_eq!(b.ended(), Some(sotto_proto::SessionEnd::HandedOff), "the sender's copy ended");
    assert_eq!(acc.stats().endpoint.sessions_released, 1, "its keys no longer route here");
    drop((a, pairs));

    // Without a listener passed, resumes still come here: the same fault leaves the session
    // with the sender, served on over the same link.
    let (acc, a, b, pairs) = one_session().await;
    let (mine, theirs) = UnixStream::pair().expect("socketpair");
    let peer = receiver_that_vanishes_after_the_offer(theirs, false);
    let report = within(LIMIT, "hand off", acc.hand_off(mine, None, HandoffConfig::default())).await;
    peer.join().expect("receiver");
    assert_eq!((report.offered, report.handed_off, report.uncertain, report.kept), (1, 0, 0, 1), "{report:?}");
    assert_eq!(b.ended(), None);
    let pairs = within(LIMIT, "exchange after the failed handoff", exchange_all(pairs, 200)).await;
    assert_eq!((a.stats().link_downs, b.stats().link_downs), (0, 0), "no link change");
    drop(pairs);
}
