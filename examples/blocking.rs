//! Embedding the sans-IO core (`sotto-proto`) in a plain blocking program: two threads,
//! `std::net` sockets, no async runtime. This is the contract every driver follows:
//!
//! 1. feed an input (`handle_message` for each frame read, `handle_timeout` when the
//!    deadline from `poll_timeout` has passed, or a command such as `send` or `close`);
//! 2. then drain every output before the next input: frames (`poll_transmit`, here through
//!    `WriteBatch`, which length-prefixes them for a byte stream), events (`poll_event`:
//!    drop a link, the session ended) and the next deadline (`poll_timeout`).
//!
//! The initiator sends 2000 numbered items and cuts its TCP link three times along the way;
//! each time it dials again and the conduit resumes: what the acceptor had not received is
//! replayed, so it receives every item exactly once and in order.
//!
//! ```sh
//! cargo run -p sotto-examples --example blocking
//! ```

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant as StdInstant};

use sotto_proto::stream::{FrameSplitter, WriteBatch};
use sotto_proto::{Conduit, ConduitConfig, Event, Instant, LinkId, ResumeKey, Role};

const ITEMS: u64 = 2000;

/// Why a link's loop returned.
#[derive(Debug, PartialEq)]
enum LinkEnd {
    /// The link is gone (the peer closed it, or the conduit asked to drop it): attach another.
    Lost,
    /// The session is over.
    Ended,
}

/// One side of the session over one TCP link: the run loop.
struct Side {
    conduit: Conduit,
    origin: StdInstant,
    write: WriteBatch<Vec<u8>>,
    split: FrameSplitter,
}

impl Side {
    fn new(role: Role) -> Self {
        let cfg = ConduitConfig::default();
        let conduit = Conduit::new(role, cfg).expect("the default config is valid");
        let write = WriteBatch::new(vec![0; conduit.max_transmit_len() + 4]);
        Self { conduit, origin: StdInstant::now(), write, split: FrameSplitter::new(cfg.max_frame_len) }
    }

    /// The core's clock: nanoseconds since this side started.
    fn now(&self) -> Instant {
        Instant::from_nanos(self.origin.elapsed().as_nanos() as u64)
    }

    /// Step 2 of the contract: write every frame owed, then act on every event.
    fn drain(&mut self, stream: &mut TcpStream, link: LinkId) -> Option<LinkEnd> {
        loop {
            let now = self.now();
            let fill = self.write.fill(&mut self.conduit, now);
            if !self.write.is_empty() && stream.write_all(self.write.pending()).is_err() {
                return Some(LinkEnd::Lost);
            }
            let n = self.write.pending().len();
            self.write.consume(n);
            if !fill.more {
                break;
            }
        }
        let mut end = None;
        while let Some(event) = self.conduit.poll_event() {
            match event {
                Event::DropLink { link: l, .. } if l == link => end = end.or(Some(LinkEnd::Lost)),
                Event::Ended(how) => {
                    println!("{:?}: session ended: {how}", self.conduit.role());
                    end = Some(LinkEnd::Ended);
                }
                _ => {}
            }
        }
        end
    }

    /// Run one link until it is lost or the session ends. `on_item` sees every delivered
    /// item; `before_read` may issue commands (send, close) and says whether to cut the link.
    fn run_link(
        &mut self,
        mut stream: TcpStream,
        link: LinkId,
        mut on_item: impl FnMut(&[u8]),
        mut before_read: impl FnMut(&mut Conduit, Instant) -> bool,
    ) -> LinkEnd {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            let now = self.now();
            if before_read(&mut self.conduit, now) {
                // Cut the link abruptly, as a network failure would.
                let _ = stream.shutdown(std::net::Shutdown::Both);
                self.conduit.link_down(self.now(), link);
                return LinkEnd::Lost;
            }
            if let Some(end) = self.drain(&mut stream, link) {
                if end == LinkEnd::Lost {
                    self.conduit.link_down(self.now(), link);
                }
                return end;
            }
            // Wait for bytes, at most until the conduit's next deadline (and 10 ms, so that
            // `before_read` runs often).
            let wait = self
                .conduit
                .poll_timeout()
                .map_or(Duration::from_millis(10), |at| {
                    Duration::from_nanos(at.as_nanos().saturating_sub(now.as_nanos()))
                })
                .clamp(Duration::from_micros(100), Duration::from_millis(10));
            stream.set_read_timeout(Some(wait)).expect("a non-zero timeout");
            match stream.read(&mut chunk) {
                Ok(0) => {
                    self.conduit.link_down(self.now(), link);
                    return LinkEnd::Lost;
                }
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    let now = self.now();
                    let Ok(run) = self.split.complete(&buf, usize::MAX) else {
                        self.conduit.link_down(now, link); // not framed: drop the link
                        return LinkEnd::Lost;
                    };
                    for msg in self.split.messages(&buf[..run.len]) {
                        // Step 1: one input per frame; errors are reported as events too.
                        if let Ok(Some(item)) = self.conduit.handle_message(now, link, msg) {
                            on_item(item);
                        }
                    }
                    buf.drain(..run.len);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    // Step 1: the deadline may have passed.
                    self.conduit.handle_timeout(self.now());
                }
                Err(_) => {
                    self.conduit.link_down(self.now(), link);
                    return LinkEnd::Lost;
                }
            }
        }
    }
}

/// The acceptor: one session, a new link for every TCP connection; checks every item.
fn acceptor(listener: TcpListener) -> u64 {
    let mut side = Side::new(Role::Acceptor);
    let mut expected = 0u64;
    let mut links = 0u8;
    loop {
        let (stream, _) = listener.accept().expect("accept");
        links += 1;
        // The acceptor issues the resume key; a real one draws it from the OS random source
        // (the adapters use getrandom): it is the session's bearer token.
        let link = side.conduit.link_up(side.now(), ResumeKey([links; 16]));
        let end = side.run_link(
            stream,
            link,
            |item| {
                let n = u64::from_le_bytes(item.try_into().expect("8-byte items"));
                assert_eq!(n, expected, "every item exactly once, in order");
                expected += 1;
            },
            |_, _| false,
        );
        if end == LinkEnd::Ended {
            return expected;
        }
    }
}

/// The initiator: sends the items, cuts its link after every 500 sent, redials; closes when
/// everything was acknowledged.
fn initiator(addr: std::net::SocketAddr) -> u64 {
    let mut side = Side::new(Role::Initiator);
    let mut next = 0u64;
    let mut links = 0;
    let mut closed = false;
    loop {
        let stream = TcpStream::connect(addr).expect("connect");
        links += 1;
        let link = side.conduit.link_up(side.now(), ResumeKey::ZERO); // ZERO: resume if we can
        let mut cut_at = next + 500;
        let end = side.run_link(
            stream,
            link,
            |_| {},
            |conduit, now| {
                // Send up to 100 items per turn, as an application producing them over time
                // would (`send` says `WouldBlock` when the replay ring is full).
                let turn_end = (next + 100).min(ITEMS);
                while next < turn_end && conduit.send(&next.to_le_bytes()).is_ok() {
                    next += 1;
                }
                if next == ITEMS && conduit.unacked() == 0 && !closed {
                    conduit.close(now, 0, "done"); // GOODBYE: the acceptor's session ends too
                    closed = true;
                }
                let cut = next >= cut_at && next < ITEMS;
                if cut {
                    cut_at = u64::MAX;
                }
                cut
            },
        );
        if end == LinkEnd::Ended {
            println!("initiator: {next} items sent over {links} links, {} resumes", side.conduit.stats().resumes);
            return next;
        }
    }
}

fn main() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let acceptor = std::thread::spawn(move || acceptor(listener));
    let sent = initiator(addr);
    let received = acceptor.join().expect("the acceptor thread");
    assert_eq!((sent, received), (ITEMS, ITEMS));
    println!("acceptor: all {received} items received exactly once, in order");
}
