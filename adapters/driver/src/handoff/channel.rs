//! The handoff socket, read and written blocking (on a thread of the handoff's own): whole
//! frames with deadlines, and the listening socket's descriptor passed with `SCM_RIGHTS`
//! (through rustix's safe `sendmsg`/`recvmsg`: the crate has no unsafe code).

use std::io::{self, IoSlice, IoSliceMut, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{
    recvmsg, send, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use sotto_proto::handoff::{self, Frame, ListenerFamily, HEADER_LEN};

use super::HandoffError;

/// Bytes read at a time within a frame body.
const READ_CHUNK: usize = 256 << 10;

/// One end of the handoff socket.
pub(crate) struct Channel {
    sock: UnixStream,
    /// The longest frame body this end reads.
    max_body: u32,
    buf: Vec<u8>,
}

impl Channel {
    pub(crate) fn new(sock: UnixStream, max_body: u32) -> io::Result<Self> {
        sock.set_nonblocking(false)?;
        Ok(Self { sock, max_body, buf: Vec::new() })
    }

    /// Write one frame (already encoded) within `timeout`, all of it. Without blocking
    /// writes: a blocking write call of a large frame lasts as long as the peer keeps
    /// reading a little within each socket timeout, so a slow receiver could stretch the
    /// write (and the session's freeze) without end.
    pub(crate) fn write(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), HandoffError> {
        let deadline = deadline_in(timeout.max(Duration::from_millis(1)));
        let mut at = 0;
        while at < bytes.len() {
            match send(&self.sock, &bytes[at..], SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
                Ok(0) => return Err(HandoffError::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => at += n,
                Err(Errno::INTR) => {}
                Err(e) if e == Errno::AGAIN || e == Errno::WOULDBLOCK => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(HandoffError::AckTimeout);
                    }
                    let wait = Timespec::try_from(left).unwrap_or(Timespec { tv_sec: i64::MAX, tv_nsec: 0 });
                    match poll(&mut [PollFd::new(&self.sock, PollFlags::OUT)], Some(&wait)) {
                        Ok(_) | Err(Errno::INTR) => {}
                        Err(e) => return Err(HandoffError::Io(e.into())),
                    }
                }
                Err(e) => return Err(HandoffError::Io(e.into())),
            }
        }
        Ok(())
    }

    /// Encode and write `frame`.
    pub(crate) fn send(&mut self, frame: &Frame<'_>, timeout: Duration) -> Result<(), HandoffError> {
        let mut out = Vec::new();
        frame.encode(&mut out);
        self.write(&out, timeout)
    }

    /// Read one whole frame by `deadline` (`on_timeout` if it does not come), checked
    /// strictly; any descriptor sent along is closed unread.
    pub(crate) fn read(
        &mut self,
        deadline: Instant,
        on_timeout: fn() -> HandoffError,
    ) -> Result<Frame<'_>, HandoffError> {
        let mut header = [0u8; HEADER_LEN];
        self.read_exact(&mut header, deadline, on_timeout, true)?;
        let len = handoff::body_len(&header, self.max_body)?;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.extend_from_slice(&header);
        // Grown as the bytes arrive, not to the announced length at once: a peer that
        // announces a large frame and sends little costs little.
        let mut r = Ok(());
        while buf.len() < HEADER_LEN + len && r.is_ok() {
            let at = buf.len();
            let chunk = (HEADER_LEN + len - at).min(READ_CHUNK);
            buf.resize(at + chunk, 0);
            r = self.read_exact(&mut buf[at..], deadline, on_timeout, false);
        }
        self.buf = buf;
        r?;
        Ok(handoff::decode(&self.buf, self.max_body)?)
    }

    /// Read exactly `out.len()` bytes by `deadline`; a clean end of stream before the first
    /// byte of a frame is [`HandoffError::PeerClosed`], within one [`HandoffError::Truncated`].
    fn read_exact(
        &mut self,
        out: &mut [u8],
        deadline: Instant,
        on_timeout: fn() -> HandoffError,
        frame_start: bool,
    ) -> Result<(), HandoffError> {
        let mut at = 0;
        while at < out.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(on_timeout());
            }
            self.sock.set_read_timeout(Some(left))?;
            match self.sock.read(&mut out[at..]) {
                Ok(0) if at == 0 && frame_start => return Err(HandoffError::PeerClosed),
                Ok(0) => return Err(HandoffError::Truncated),
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(on_timeout()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Send a LISTENER frame with `fd` attached (`SCM_RIGHTS`).
    pub(crate) fn send_listener(
        &mut self,
        fd: &OwnedFd,
        family: ListenerFamily,
        timeout: Duration,
    ) -> Result<(), HandoffError> {
        let mut out = Vec::new();
        Frame::Listener(family).encode(&mut out);
        self.sock.set_write_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let fds = [fd.as_fd()];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(HandoffError::Io(io::Error::other("no room for the descriptor")));
        }
        // The descriptor rides with the first byte; the rest of the frame follows plainly.
        let sent = loop {
            match sendmsg(&self.sock, &[IoSlice::new(&out)], &mut control, SendFlags::NOSIGNAL) {
                Ok(n) => break n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(timed(e.into(), HandoffError::AckTimeout)),
            }
        };
        self.write(&out[sent..], timeout)
    }

    /// Read a LISTENER frame by `deadline` and the descriptor that came with it, which must
    /// be a listening stream socket.
    pub(crate) fn recv_listener(&mut self, deadline: Instant) -> Result<(OwnedFd, ListenerFamily), HandoffError> {
        let mut header = [0u8; HEADER_LEN];
        let mut fds: Vec<OwnedFd> = Vec::new();
        let mut at = 0;
        while at < HEADER_LEN {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(HandoffError::PeerSilent);
            }
            self.sock.set_read_timeout(Some(left))?;
            let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let got =
                recvmsg(&self.sock, &mut [IoSliceMut::new(&mut header[at..])], &mut control, RecvFlags::CMSG_CLOEXEC);
            for msg in control.drain() {
                if let RecvAncillaryMessage::ScmRights(received) = msg {
                    fds.extend(received);
                }
            }
            match got {
                Ok(r) if r.bytes == 0 => {
                    return Err(if at == 0 { HandoffError::PeerClosed } else { HandoffError::Truncated })
                }
                Ok(r) => at += r.bytes,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    let e: io::Error = e.into();
                    return Err(if is_timeout(&e) { HandoffError::PeerSilent } else { e.into() });
                }
            }
        }
        let len = handoff::body_len(&header, self.max_body)?;
        let mut frame = header.to_vec();
        frame.resize(HEADER_LEN + len, 0);
        self.read_exact(&mut frame[HEADER_LEN..], deadline, || HandoffError::PeerSilent, false)?;
        let family = match handoff::decode(&frame, self.max_body)? {
            Frame::Listener(family) => family,
            _ => return Err(HandoffError::UnexpectedFrame("a LISTENER frame was expected")),
        };
        if fds.len() != 1 {
            return Err(HandoffError::NoDescriptor);
        }
        let Some(fd) = fds.pop() else { return Err(HandoffError::NoDescriptor) };
        match rustix::net::sockopt::socket_type(&fd) {
            Ok(rustix::net::SocketType::STREAM) => {}
            Ok(_) => return Err(HandoffError::NotListening),
            Err(_) => return Err(HandoffError::NotASocket),
        }
        if !rustix::net::sockopt::socket_acceptconn(&fd).unwrap_or(false) {
            return Err(HandoffError::NotListening);
        }
        Ok((fd, family))
    }
}

/// The instant `timeout` from now; a timeout too long for the clock (`Duration::MAX` as
/// "no limit") is a year.
pub(crate) fn deadline_in(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout).unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

fn timed(e: io::Error, on_timeout: HandoffError) -> HandoffError {
    if is_timeout(&e) {
        on_timeout
    } else {
        HandoffError::Io(e)
    }
}
