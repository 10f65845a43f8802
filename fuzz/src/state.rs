//! `state_import`: arbitrary bytes imported as an exported [`Session`] state and as a
//! [`Conduit`] state (docs/state-format.md), under a configuration picked by the first byte.
//! Import must return a typed error or a state within the importer's limits, never panic.
//! What imports is exported again (that export imports and exports to the same bytes: the
//! format is canonical after one round) and then driven a little: a link attached, outputs
//! drained, sends and opens, timers fired.
//!
//! [`sample_states`] makes valid states (a session pair mid-stream) for the seed corpus.

use sotto_proto::session::{Incoming, Session, SessionConfig, ROOT};
use sotto_proto::{Conduit, ConduitConfig, Duration, Instant, LinkId, ResumeKey, Role};

/// The importing side's clock.
const NOW: Instant = Instant::from_nanos(1 << 40);

/// The configuration the seeds are exported under (selector 0): small enough that the
/// limits are reachable.
pub fn seed_config() -> SessionConfig {
    {
        let mut patched = SessionConfig::default();
        patched.conduit = {
            let mut patched = ConduitConfig::default();
            patched.max_frame_len = 2048;
            patched.replay_bytes = 16 << 10;
            patched.replay_frames = 32;
            patched
        };
        patched.initial_credit = 4 << 10;
        patched.max_connections = 6;
        patched.max_pending_opens = 3;
        patched.max_metadata = 64;
        patched
    }
}

/// The importing configuration for selector byte `sel`: the seeds' own, tighter limits, or
/// the defaults.
fn config_for(sel: u8) -> SessionConfig {
    let seed = seed_config();
    match sel % 3 {
        0 => seed,
        1 => {
            let mut patched = seed;
            patched.conduit = {
                let mut patched = seed.conduit;
                patched.max_frame_len = 256;
                patched.replay_bytes = 1024;
                patched.replay_frames = 4;
                patched.recovery_timeout = Duration::from_secs(5);
                patched
            };
            patched.initial_credit = 512;
            patched.max_credit = 1024;
            patched.max_connections = 2;
            patched.max_pending_opens = 1;
            patched.max_metadata = 8;
            patched.churn_budget = 2;
            patched
        }
        _ => SessionConfig::default(),
    }
}

/// The check: `data[0]` picks the configuration, the rest is the state.
pub fn run(data: &[u8]) {
    let Some((&sel, bytes)) = data.split_first() else { return };
    let cfg = config_for(sel);
    if let Ok(s) = Session::import(bytes, NOW, cfg) {
        let mut first = Vec::new();
        s.export(NOW, &mut first).expect("an imported session exports");
        let again = Session::import(&first, NOW, cfg).expect("an exported state imports");
        let mut second = Vec::new();
        again.export(NOW, &mut second).expect("and exports again");
        assert_eq!(first, second, "export(import(x)) is canonical");
        drive_session(s, cfg);
    }
    if let Ok(c) = Conduit::import(bytes, NOW, cfg.conduit) {
        let mut first = Vec::new();
        c.export(NOW, &mut first).expect("an imported conduit exports");
        let again = Conduit::import(&first, NOW, cfg.conduit).expect("an exported state imports");
        let mut second = Vec::new();
        again.export(NOW, &mut second).expect("and exports again");
        assert_eq!(first, second, "export(import(x)) is canonical");
        drive_conduit(c, cfg.conduit);
    }
}

fn check_limits(c: &Conduit, cfg: &ConduitConfig) {
    let st = c.stats();
    assert!(st.replay_frames <= u64::from(cfg.replay_frames), "ring frames within the limit");
    assert!(st.replay_bytes <= u64::from(cfg.replay_bytes), "ring bytes within the limit");
    assert!(c.items_acked() <= c.items_sent());
}

fn drive_session(mut s: Session, cfg: SessionConfig) {
    check_limits(s.conduit(), &cfg.conduit);
    assert!(s.connection_count() <= cfg.max_connections as usize);
    let mut buf = vec![0u8; cfg.conduit.max_frame_len as usize];
    let mut now = NOW;
    let link = s.link_up(now, ResumeKey([7; 16]));
    for round in 0..4 {
        let mut frames = 0;
        while s.poll_transmit(now, &mut buf).is_some() {
            frames += 1;
            assert!(frames < 10_000, "poll_transmit ends");
        }
        while s.poll_event().is_some() {}
        let _ = s.send(ROOT, b"after import");
        let _ = s.open(b"");
        let _ = s.release(ROOT, 16);
        if round == 1 {
            s.link_down(now, link);
        }
        now = s.poll_timeout().unwrap_or(now).max(now);
        s.handle_timeout(now);
        assert!(s.poll_timeout().is_none_or(|t| t > now) || s.is_ended(), "no deadline left behind");
    }
    check_limits(s.conduit(), &cfg.conduit);
    assert!(s.connection_count() <= cfg.max_connections as usize);
}

fn drive_conduit(mut c: Conduit, cfg: ConduitConfig) {
    check_limits(&c, &cfg);
    let mut buf = vec![0u8; cfg.max_frame_len as usize];
    let mut now = NOW;
    let link = c.link_up(now, ResumeKey([7; 16]));
    for round in 0..4 {
        let mut frames = 0;
        while c.poll_transmit(now, &mut buf).is_some() {
            frames += 1;
            assert!(frames < 10_000, "poll_transmit ends");
        }
        while c.poll_event().is_some() {}
        let _ = c.send(b"after import");
        if round == 1 {
            c.link_down(now, link);
        }
        now = c.poll_timeout().unwrap_or(now).max(now);
        c.handle_timeout(now);
    }
    check_limits(&c, &cfg);
}

/// A session pair over an in-memory link that delivers only when asked.
struct Pair {
    a: Session,
    b: Session,
    la: Option<LinkId>,
    lb: Option<LinkId>,
    to_a: Vec<Vec<u8>>,
    to_b: Vec<Vec<u8>>,
    now: Instant,
}

impl Pair {
    fn drain(&mut self) {
        let mut buf = vec![0u8; seed_config().conduit.max_frame_len as usize];
        while let Some(t) = self.a.poll_transmit(self.now, &mut buf) {
            self.to_b.push(buf[..t.len].to_vec());
        }
        while let Some(t) = self.b.poll_transmit(self.now, &mut buf) {
            self.to_a.push(buf[..t.len].to_vec());
        }
        while self.a.poll_event().is_some() {}
        while self.b.poll_event().is_some() {}
    }

    /// Deliver everything queued both ways, answering Opens and releasing data.
    fn exchange(&mut self) {
        for _ in 0..8 {
            self.drain();
            for (s, link, inbox) in [(&mut self.b, self.lb, &mut self.to_b), (&mut self.a, self.la, &mut self.to_a)] {
                let Some(link) = link else { continue };
                for m in inbox.drain(..) {
                    match s.handle_message(self.now, link, &m) {
                        Ok(Some(Incoming::Open { conn, .. })) => {
                            let _ = s.accept(conn, b"ok");
                        }
                        Ok(Some(Incoming::Data { conn, payload })) => {
                            let credit = s.credit_of(payload.len());
                            let _ = s.release(conn, credit as usize);
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// Valid exported states, named: fresh sessions of both roles, both sides of a pair
/// mid-stream (connections open, credit half spent, unacked items both ways, an Open not
/// answered yet), and raw conduit states. Each is prefixed with the selector byte of
/// [`seed_config`].
pub fn sample_states() -> Vec<(String, Vec<u8>)> {
    let cfg = seed_config();
    let mut out = Vec::new();
    let mut put = |name: &str, f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = vec![0u8];
        f(&mut v);
        out.push((name.to_string(), v));
    };
    let fresh_a = Session::new(Role::Initiator, cfg, b"client").expect("config");
    let fresh_b = Session::new(Role::Acceptor, cfg, b"server").expect("config");
    put("session-fresh-initiator", &|v| fresh_a.export(NOW, v).expect("export"));
    put("session-fresh-acceptor", &|v| fresh_b.export(NOW, v).expect("export"));

    let mut p = Pair { a: fresh_a, b: fresh_b, la: None, lb: None, to_a: Vec::new(), to_b: Vec::new(), now: NOW };
    p.la = Some(p.a.link_up(p.now, ResumeKey::ZERO));
    p.lb = Some(p.b.link_up(p.now, ResumeKey([1; 16])));
    p.exchange();
    assert!(p.a.is_ready() && p.b.is_ready(), "handshake");
    let c1 = p.a.open(b"one").expect("open");
    let _ = p.b.open(b"two").expect("open");
    p.exchange();
    for i in 0..6u8 {
        let _ = p.a.send(c1, &[i; 600]);
        let _ = p.b.send(ROOT, &[i; 100]);
    }
    let _ = p.a.open(b"pending");
    p.drain();
    // Half of A's frames arrive; nothing comes back yet.
    let half = p.to_b.len() / 2;
    let lb = p.lb.expect("link");
    for m in p.to_b.drain(..half) {
        let _ = p.b.handle_message(p.now, lb, &m);
    }
    p.now = p.now.saturating_add(Duration::from_millis(40));
    p.drain();
    put("session-busy-initiator", &|v| p.a.export(p.now, v).expect("export"));
    put("session-busy-acceptor", &|v| p.b.export(p.now, v).expect("export"));
    put("conduit-busy-initiator", &|v| p.a.conduit().export(p.now, v).expect("export"));
    put("conduit-busy-acceptor", &|v| p.b.conduit().export(p.now, v).expect("export"));
    out
}
