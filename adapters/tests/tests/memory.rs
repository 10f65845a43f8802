//! Issue 13, item 3: a session's buffers follow its live data. Over loopback TCP, both ends
//! of a session carry 4 MiB each way, then go idle: each end's buffers (replay ring, read and
//! write buffer, as `SessionStats::buffer_bytes` reports them) grew during the burst and come
//! back to their idle size once the link has been quiet for the driver's shrink delay.

use std::time::Duration;

use bytes::Bytes;
use futures::future::join;
use sotto_adapter_tests::sessions::{dial, listen, open_accept, session_config, Rt, Transport};
use sotto_adapter_tests::workload::{eventually, within};
use sotto_driver::SessionHandle;

const LIMIT: Duration = Duration::from_secs(20);
const BURST: usize = 4 << 20;
const MESSAGE: usize = 16 << 10;

fn buffers(s: &SessionHandle) -> u64 {
    s.stats().buffer_bytes
}

#[test]
fn session_buffers_grow_with_a_burst_and_shrink_back_when_idle() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut config = session_config();
        // A window that lets the burst fill the ring, not only the credit.
        config.protocol.initial_credit = 1 << 20;
        config.protocol.max_credit = 1 << 20;
        let (acc, upstream) = listen(Rt::Tokio, Transport::Tcp, config).await;
        let a = dial(Rt::Tokio, upstream, config).await;
        let b = acc.accept().await.expect("accept");
        let mut pairs = within(LIMIT, "open", open_accept(&a, &b, 1)).await;
        let (mut x, mut y) = pairs.pop().expect("pair");
        // Idle: settled after the handshake.
        let idle = |s: &SessionHandle| buffers(s) < 64 << 10;
        assert!(eventually(LIMIT, || idle(&a) && idle(&b)).await, "idle sizes: {} {}", buffers(&a), buffers(&b));
        let (idle_a, idle_b) = (buffers(&a), buffers(&b));

        let payload = Bytes::from(vec![0x5a; MESSAGE]);
        // Sampled by both halves (the read buffer's reported size moves as frames are split
        // off it, so more samples see more of its peak).
        let (peak_a, peak_b) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
        let sample = || {
            peak_a.set(peak_a.get().max(buffers(&a)));
            peak_b.set(peak_b.get().max(buffers(&b)));
        };
        let send = async {
            for _ in 0..BURST / MESSAGE {
                x.send(payload.clone()).await.expect("send");
                sample();
            }
        };
        let recv = async {
            let mut got = 0;
            while got < BURST {
                got += y.recv().await.expect("recv").len();
                sample();
            }
        };
        within(LIMIT, "burst", join(send, recv)).await;
        let (peak_a, peak_b) = (peak_a.get(), peak_b.get());
        eprintln!("buffers idle {idle_a} / {idle_b}, peak during the burst {peak_a} / {peak_b}");
        assert!(peak_a > idle_a + (256 << 10), "the sender's ring grew: {idle_a} -> {peak_a}");
        // The receiver's read buffer is allocated again for the burst (it held none while idle)
        // and grows only as far as the reads fill it: how far depends on how far the reader
        // falls behind, and the reported size also falls as frames are split off it, so a
        // fixed growth is timing (a loaded full-suite run sampled only +5 KiB once). The sizes
        // it reaches are the read buffer's own tests (`read_buffer.rs`).
        assert!(peak_b > idle_b, "the receiver's read buffer was allocated for the burst: {idle_b} -> {peak_b}");

        assert!(
            eventually(LIMIT, || buffers(&a) <= idle_a && buffers(&b) <= idle_b).await,
            "after the burst, idle again: {} (was {idle_a}) and {} (was {idle_b})",
            buffers(&a),
            buffers(&b)
        );
        // And the session still works, growing again as needed.
        x.send(payload.clone()).await.expect("send after shrink");
        assert_eq!(y.recv().await.expect("recv after shrink").len(), MESSAGE);
    });
}

/// An idle session holds no read or write buffer once the shrink delay has passed, and keeps
/// holding none while keepalive PINGs and PONGs are written: a frame written while idle gets
/// a write buffer only for as long as it takes to write it. Each of those buffers is 4 KiB
/// or more when held (the read buffer's first chunk, the write buffer's first size with this
/// config), so `buffer_bytes` under 4 KiB means neither is; what is left is the replay ring's
/// bookkeeping.
#[test]
fn an_idle_session_holds_no_io_buffers_across_keepalives() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut config = session_config();
        config.protocol.ping_interval = Duration::from_millis(200);
        config.protocol.min_ping_interval = Duration::from_millis(50);
        let (acc, upstream) = listen(Rt::Tokio, Transport::Tcp, config).await;
        let a = dial(Rt::Tokio, upstream, config).await;
        let b = acc.accept().await.expect("accept");
        let mut pairs = within(LIMIT, "open", open_accept(&a, &b, 1)).await;
        let (mut x, mut y) = pairs.pop().expect("pair");
        x.send(Bytes::from_static(b"hello")).await.expect("send");
        assert_eq!(&y.recv().await.expect("recv")[..], b"hello");
        // Idle: no write buffer (its first size is over 1 KiB), and the read buffer at most
        // its first room (512 B), which the read waiting for the next bytes reserves again.
        assert!(config.write_buffer_min() > 1024);
        let none = |s: &SessionHandle| buffers(s) <= 512;
        assert!(eventually(LIMIT, || none(&a) && none(&b)).await, "idle: {} / {}", buffers(&a), buffers(&b));
        let pings = |s: &SessionHandle| s.stats().session.conduit.pings_sent;
        let (pa, pb) = (pings(&a), pings(&b));
        assert!(
            eventually(LIMIT, || pings(&a) >= pa + 3 && pings(&b) >= pb + 3).await,
            "keepalive PINGs while idle: {pa} -> {}, {pb} -> {}",
            pings(&a),
            pings(&b)
        );
        assert!(eventually(LIMIT, || none(&a) && none(&b)).await, "after PINGs: {} / {}", buffers(&a), buffers(&b));
        // Written to again, the session grows what it needs.
        x.send(Bytes::from_static(b"again")).await.expect("send after idle");
        assert_eq!(&y.recv().await.expect("recv after idle")[..], b"again");
    });
}
