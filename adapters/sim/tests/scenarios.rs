//! Scenarios on the simulated runtime: many tasks sharing one sender, slow readers on both
//! APIs, the acceptor's handshake deadline. Each runs the real driver on a clean net (or
//! with the fault it names), and fails with its seed on a hang.

use std::future::{poll_fn, Future};
use std::sync::Arc;
use std::time::Duration;

use futures::io::AsyncReadExt;
use sotto_driver::{connect, serve, Config, StableConduit};
use sotto_sim::fixture::{config, connection, sessions};
use sotto_sim::workload::{check, message};
use sotto_sim::{Faults, Net, Sim, SimOptions, SimRuntime};

/// Run `scenario` on a fresh simulation with a clean net; then everything must wind down.
fn simulate<F, Fut>(seed: u64, scenario: F) -> Result<Fut::Output, String>
where
    F: FnOnce(SimRuntime, Net) -> Fut,
    Fut: Future,
{
    let sim = Sim::new(SimOptions::new(seed));
    let rt = sim.runtime();
    let net = Net::new(&rt, seed, Faults::none());
    let out = sim.run(scenario(rt, net)).map_err(|s| format!("seed {seed}: {s}"))?;
    sim.run_to_quiescence().map_err(|s| format!("seed {seed}, winding down: {s}"))?;
    Ok(out)
}

fn each_seed<F, Fut>(name: &str, seeds: u64, scenario: F)
where
    F: Fn(SimRuntime, Net) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    for seed in 1..=seeds {
        if let Err(e) = simulate(seed, &scenario).and_then(|r| r) {
            panic!("{name}, seed {seed}: {e}");
        }
    }
}

/// 16 tasks send 25 messages each through one shared `ConnSender` (`poll_send` takes
/// `&self`), against a 2 KiB window; the reader checks every task's messages arrive once
/// and in that task's order.
async fn shared_sender(rt: SimRuntime, net: Net) -> Result<(), String> {
    const TASKS: u32 = 16;
    const EACH: u32 = 25;
    let (a, b, _acceptor) = sessions(&rt, &net, config()).await?;
    let (ca, cb) = connection(&a, &b).await?;
    let (tx, _ra) = ca.split();
    let (_tb, mut rb) = cb.split();
    let tx = Arc::new(tx);
    let senders: Vec<_> = (0..TASKS)
        .map(|t| {
            let tx = Arc::clone(&tx);
            rt.spawn_app(async move {
                for s in 0..EACH {
                    let m = message(t, s, 100);
                    poll_fn(|cx| tx.poll_send(cx, &m)).await.map_err(|e| format!("task {t} send {s}: {e}"))?;
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    let mut next = vec![0u32; TASKS as usize];
    for n in 0..TASKS * EACH {
        let m = rb.recv().await.map_err(|e| format!("recv after {n}: {e}"))?;
        let t = u32::from_le_bytes([m[0], m[1], m[2], m[3]]);
        let slot = next.get_mut(t as usize).ok_or_else(|| format!("unknown task {t}"))?;
        check(t, *slot, &m)?;
        *slot += 1;
    }
    for s in senders {
        s.await?;
    }
    drop((a, b));
    Ok(())
}

#[test]
fn many_tasks_sharing_one_sender_each_deliver_in_order_without_hanging() {
    each_seed("shared sender", 10, shared_sender);
}

/// A configuration for the slow-reader scenarios: a 400 ms pong timeout (pings every
/// 200 ms), small inbound queues.
fn slow_config() -> Config {
    let mut c = config();
    c.protocol.ping_interval = std::time::Duration::from_millis(200);
    c.protocol.pong_timeout = std::time::Duration::from_millis(400);
    c.protocol.replay_frames = 256;
    c.protocol.replay_bytes = 256 << 10;
    c.buffers.inbound_items = 64;
    c.buffers.inbound_bytes = 32 << 10;
    c.protocol.initial_credit = 32 << 10;
    c.protocol.max_credit = 32 << 10;
    c
}

/// Raw pair on `net`: (initiator, acceptor's conduit, acceptor).
async fn raw_pair(
    rt: &SimRuntime,
    net: &Net,
    cfg: Config,
) -> Result<(StableConduit, StableConduit, sotto_driver::Acceptor), String> {
    let acceptor = serve(rt.clone(), net.listener(), cfg).map_err(|e| format!("serve: {e}"))?;
    let dial = net.clone();
    let a = connect(rt.clone(), move || dial.dial(), cfg).await.map_err(|e| format!("connect: {e}"))?;
    let b = acceptor.accept().await.map_err(|e| format!("accept: {e}"))?;
    Ok((a, b, acceptor))
}

/// The pace of a slow reader: it takes `burst` bytes, then pauses 200 ms (half the pong
/// timeout), for `total` bytes.
const BURST: usize = 1 << 20;
const PAUSE: Duration = Duration::from_millis(200);
const TOTAL: usize = 4 << 20;
const ITEM: usize = 900;

/// A raw reader that keeps reading, at any pace, never costs its link: the sender sends
/// `TOTAL` bytes at full speed, the reader pauses 200 ms after every `BURST`; no link may
/// go down.
async fn slow_raw_reader(rt: SimRuntime, net: Net) -> Result<(), String> {
    let (a, b, _acceptor) = raw_pair(&rt, &net, slow_config()).await?;
    let a = Arc::new(a);
    let n = (TOTAL / ITEM) as u32;
    let sender = {
        let a = Arc::clone(&a);
        rt.spawn_app(async move {
            for s in 0..n {
                a.send(message(0, s, ITEM - 8)).await.map_err(|e| format!("send {s}: {e:?}"))?;
            }
            Ok::<_, String>(())
        })
    };
    let mut taken = 0;
    for s in 0..n {
        let m = b.recv().await.map_err(|e| format!("recv {s}: {e:?}"))?;
        check(0, s, &m)?;
        taken += m.len();
        if taken >= BURST {
            taken = 0;
            rt.sleep(PAUSE).await;
        }
    }
    sender.await?;
    let downs = (a.stats().link_downs, b.stats().link_downs);
    if downs != (0, 0) {
        return Err(format!("links went down (initiator, acceptor): {downs:?}"));
    }
    a.close(0, "done").await;
    Ok(())
}

#[test]
fn a_raw_reader_pausing_half_the_pong_timeout_never_costs_its_link() {
    each_seed("slow raw reader", 3, slow_raw_reader);
}

/// A raw reader that takes one item every 5 ms (far slower than the sender) for 1.5 s: the
/// inbound queue stays full, so the driver reads the link only in steps; no link may go
/// down, every item arrives once and in order.
async fn steady_slow_raw_reader(rt: SimRuntime, net: Net) -> Result<(), String> {
    const N: u32 = 300;
    let (a, b, _acceptor) = raw_pair(&rt, &net, slow_config()).await?;
    let a = Arc::new(a);
    let sender = {
        let a = Arc::clone(&a);
        rt.spawn_app(async move {
            for s in 0..N {
                a.send(message(0, s, ITEM - 8)).await.map_err(|e| format!("send {s}: {e:?}"))?;
            }
            Ok::<_, String>(())
        })
    };
    for s in 0..N {
        rt.sleep(Duration::from_millis(5)).await;
        let m = b.recv().await.map_err(|e| format!("recv {s}: {e:?}"))?;
        check(0, s, &m)?;
    }
    sender.await?;
    let downs = (a.stats().link_downs, b.stats().link_downs);
    if downs != (0, 0) {
        return Err(format!("links went down (initiator, acceptor): {downs:?}"));
    }
    a.close(0, "done").await;
    Ok(())
}

#[test]
fn a_steady_slow_raw_reader_never_costs_its_link() {
    each_seed("steady slow raw reader", 3, steady_slow_raw_reader);
}

/// The same steady slow reader on a session connection.
async fn steady_slow_session_reader(rt: SimRuntime, net: Net) -> Result<(), String> {
    const N: u32 = 300;
    let (a, b, _acceptor) = sessions(&rt, &net, slow_config()).await?;
    let (ca, cb) = connection(&a, &b).await?;
    let (mut tx, _ra) = ca.split();
    let (_tb, mut rb) = cb.split();
    let sender = rt.spawn_app(async move {
        for s in 0..N {
            tx.send(message(0, s, ITEM - 8)).await.map_err(|e| format!("send {s}: {e}"))?;
        }
        Ok::<_, String>(tx)
    });
    for s in 0..N {
        rt.sleep(Duration::from_millis(5)).await;
        let m = rb.recv().await.map_err(|e| format!("recv {s}: {e}"))?;
        check(0, s, &m)?;
    }
    let mut tx = sender.await?;
    tx.close_with(&[]).await;
    let downs = (a.stats().link_downs, b.stats().link_downs);
    if downs != (0, 0) {
        return Err(format!("links went down (initiator, acceptor): {downs:?}"));
    }
    Ok(())
}

#[test]
fn a_steady_slow_session_reader_never_costs_its_link() {
    each_seed("steady slow session reader", 3, steady_slow_session_reader);
}

/// The same reader on a session connection: no link may go down.
async fn slow_session_reader(rt: SimRuntime, net: Net) -> Result<(), String> {
    let (a, b, _acceptor) = sessions(&rt, &net, slow_config()).await?;
    let (ca, cb) = connection(&a, &b).await?;
    let (mut tx, _ra) = ca.split();
    let (_tb, mut rb) = cb.split();
    let n = (TOTAL / ITEM) as u32;
    let sender = rt.spawn_app(async move {
        for s in 0..n {
            tx.send(message(0, s, ITEM - 8)).await.map_err(|e| format!("send {s}: {e}"))?;
        }
        Ok::<_, String>(tx)
    });
    let mut taken = 0;
    for s in 0..n {
        let m = rb.recv().await.map_err(|e| format!("recv {s}: {e}"))?;
        check(0, s, &m)?;
        taken += m.len();
        if taken >= BURST {
            taken = 0;
            rt.sleep(PAUSE).await;
        }
    }
    let mut tx = sender.await?;
    tx.close_with(&[]).await;
    let downs = (a.stats().link_downs, b.stats().link_downs);
    if downs != (0, 0) {
        return Err(format!("links went down (initiator, acceptor): {downs:?}"));
    }
    Ok(())
}

#[test]
fn a_session_reader_pausing_half_the_pong_timeout_never_costs_its_link() {
    each_seed("slow session reader", 3, slow_session_reader);
}

/// A raw acceptor written as vox users write it, `recv` then `send(..).await` in one loop,
/// echoes `ECHOES` items sent at full speed: every echo must come back, in order, with no
/// link going down.
async fn echo_loop(rt: SimRuntime, net: Net) -> Result<(), String> {
    const ECHOES: u32 = 2000;
    let mut cfg = slow_config();
    cfg.protocol.replay_frames = 32;
    let (a, b, _acceptor) = raw_pair(&rt, &net, cfg).await?;
    let echo = rt.spawn_app(async move {
        for _ in 0..ECHOES {
            let m = b.recv().await.map_err(|e| format!("echo recv: {e:?}"))?;
            b.send(m).await.map_err(|e| format!("echo send: {e:?}"))?;
        }
        Ok::<_, String>(b)
    });
    let a = Arc::new(a);
    let sender = {
        let a = Arc::clone(&a);
        rt.spawn_app(async move {
            for s in 0..ECHOES {
                a.send(message(0, s, 200)).await.map_err(|e| format!("send {s}: {e:?}"))?;
            }
            Ok::<_, String>(())
        })
    };
    for s in 0..ECHOES {
        let m = a.recv().await.map_err(|e| format!("echo {s}: {e:?}"))?;
        check(0, s, &m)?;
    }
    sender.await?;
    let b = echo.await?;
    let downs = (a.stats().link_downs, b.stats().link_downs);
    if downs != (0, 0) {
        return Err(format!("links went down (initiator, acceptor): {downs:?}"));
    }
    a.close(0, "done").await;
    Ok(())
}

#[test]
fn a_raw_echo_loop_in_one_task_never_stalls_or_blames_its_link() {
    each_seed("echo loop", 3, echo_loop);
}

/// A link that never sends its hello is closed by the acceptor at the handshake deadline
/// (1 s), not later: the dialer's end sees the end of the stream by then.
async fn silent_link(rt: SimRuntime, net: Net) -> Result<(), String> {
    let cfg = config();
    let _acceptor =
        sotto_driver::serve_sessions(rt.clone(), net.session_listener(), cfg).map_err(|e| format!("serve: {e}"))?;
    let mut s = net.dial().await.map_err(|e| format!("dial: {e}"))?;
    let start = rt.elapsed();
    let mut buf = [0u8; 64];
    let read = s.read(&mut buf).await;
    let waited = rt.elapsed() - start;
    if !matches!(read, Ok(0) | Err(_)) {
        return Err(format!("the acceptor wrote to a link that sent nothing: {read:?}"));
    }
    let deadline: Duration = cfg.protocol.handshake_timeout;
    if waited < deadline || waited > deadline + Duration::from_millis(20) {
        return Err(format!("closed after {waited:?}, the deadline is {deadline:?}"));
    }
    Ok(())
}

#[test]
fn the_session_acceptor_closes_a_silent_link_at_its_handshake_deadline() {
    each_seed("silent link", 5, silent_link);
}

/// The same for the raw acceptor.
async fn silent_raw_link(rt: SimRuntime, net: Net) -> Result<(), String> {
    let cfg = config();
    let _acceptor = serve(rt.clone(), net.listener(), cfg).map_err(|e| format!("serve: {e}"))?;
    let mut s = net.dial().await.map_err(|e| format!("dial: {e}"))?;
    let start = rt.elapsed();
    let mut buf = [0u8; 64];
    let read = s.read(&mut buf).await;
    let waited = rt.elapsed() - start;
    if !matches!(read, Ok(0) | Err(_)) {
        return Err(format!("the acceptor wrote to a link that sent nothing: {read:?}"));
    }
    let deadline: Duration = cfg.protocol.handshake_timeout;
    if waited < deadline || waited > deadline + Duration::from_millis(20) {
        return Err(format!("closed after {waited:?}, the deadline is {deadline:?}"));
    }
    Ok(())
}

#[test]
fn the_raw_acceptor_closes_a_silent_link_at_its_handshake_deadline() {
    each_seed("silent raw link", 5, silent_raw_link);
}

/// A raw stable conduit (link handshake, no session handshake) against the session
/// acceptor: the acceptor evicts the session at its handshake deadline and never announces
/// it; the raw side learns that its link is gone by then plus `slack`.
async fn no_session_hello(rt: SimRuntime, net: Net, slack: Duration) -> Result<(), String> {
    let cfg = config();
    let acceptor =
        sotto_driver::serve_sessions(rt.clone(), net.session_listener(), cfg).map_err(|e| format!("serve: {e}"))?;
    let dial = net.clone();
    let mut raw_cfg = cfg;
    raw_cfg.protocol.recovery_timeout = Duration::from_millis(100);
    raw_cfg.dial.connect_timeout = Duration::from_millis(100);
    let start = rt.elapsed();
    let c = connect(rt.clone(), move || dial.dial(), raw_cfg).await.map_err(|e| format!("connect: {e}"))?;
    let mut down_at = None;
    while c.ended().is_none() {
        match c.next_event().await {
            Some(sotto_driver::ConduitEvent::LinkDown { .. }) if down_at.is_none() => {
                down_at = Some(rt.elapsed() - start)
            }
            Some(_) => {}
            None => break,
        }
    }
    let down = down_at.ok_or("the link never went down")?;
    let deadline: Duration = cfg.protocol.handshake_timeout;
    if down > deadline + slack {
        return Err(format!("link down after {down:?}; deadline {deadline:?}"));
    }
    if acceptor.stats().sessions != 0 {
        return Err("a session without a session handshake was announced".into());
    }
    Ok(())
}

#[test]
fn a_link_without_a_session_handshake_is_dropped_and_never_announced() {
    let slack = config().protocol.drain_timeout + Duration::from_millis(20);
    each_seed("no session hello", 3, |rt, net| no_session_hello(rt, net, slack));
}

/// The link of a session the endpoint expired is closed at the deadline: nothing is owed
/// on it. Today it stays open a further `drain_timeout` (1.2 s with a 1 s deadline and a
/// 200 ms drain timeout).
#[test]
fn a_link_without_a_session_handshake_is_closed_at_the_deadline() {
    each_seed("no session hello, strict", 3, |rt, net| no_session_hello(rt, net, Duration::from_millis(20)));
}
