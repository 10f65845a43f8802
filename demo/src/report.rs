//! The demo's final report: what was sent and delivered, what went wrong (nothing, we hope),
//! how often the link died and how fast the session came back. Printed as text, or as JSON
//! through `facet-json`.

use facet::Facet;

/// Percentiles of a latency, in milliseconds.
#[derive(Debug, Default, Facet)]
pub(crate) struct Latency {
    /// What is measured.
    pub(crate) definition: String,
    /// How many samples.
    pub(crate) samples: u64,
    /// Median, ms.
    pub(crate) p50_ms: f64,
    /// 99th percentile, ms.
    pub(crate) p99_ms: f64,
    /// Largest, ms.
    pub(crate) max_ms: f64,
}

impl Latency {
    /// Percentiles of `samples` (seconds).
    pub(crate) fn of(definition: &str, mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples[i.min(samples.len() - 1)] * 1e3
        };
        Self {
            definition: definition.to_string(),
            samples: samples.len() as u64,
            p50_ms: pick(0.5),
            p99_ms: pick(0.99),
            max_ms: pick(1.0),
        }
    }
}

/// One direction's traffic.
#[derive(Debug, Default, Facet)]
pub(crate) struct Direction {
    /// Messages sent (accepted by `send`).
    pub(crate) sent: u64,
    /// Distinct messages delivered, checked.
    pub(crate) delivered: u64,
}

/// The restart mode: the acceptor process replaced by a new one, again and again.
#[cfg_attr(not(unix), allow(dead_code))]
#[derive(Debug, Default, Facet)]
pub(crate) struct Restarts {
    /// Seconds between handoffs.
    pub(crate) every_s: f64,
    /// Handoffs done (each to a new process).
    pub(crate) handoffs: u64,
    /// Acceptor processes run, the first included.
    pub(crate) acceptor_processes: u64,
    /// Sessions the new processes adopted, over all handoffs.
    pub(crate) sessions_moved: u64,
    /// Open connections that moved with them, over all handoffs.
    pub(crate) connections_moved: u64,
    /// The library's handoff, per handoff.
    pub(crate) handoff_time: Latency,
    /// The whole replacement as the demo sees it, per handoff.
    pub(crate) takeover_time: Latency,
    /// The initiator's resumes after a handoff (not after a kill).
    pub(crate) resume_after_handoff: Latency,
    /// The longest any session stayed frozen during a handoff, ms.
    pub(crate) longest_freeze_ms: f64,
}

/// The whole run.
#[derive(Debug, Default, Facet)]
pub(crate) struct Report {
    /// Seconds of traffic (the drain after it is not counted).
    pub(crate) seconds: f64,
    /// Virtual connections, each carrying traffic both ways.
    pub(crate) connections: u32,
    /// Messages sent, both directions.
    pub(crate) sent: u64,
    /// Distinct messages delivered and checked, both directions.
    pub(crate) delivered: u64,
    /// Sent but never delivered (must be 0).
    pub(crate) lost: u64,
    /// Delivered more than once (must be 0).
    pub(crate) duplicated: u64,
    /// Delivered after a later message of the same connection (must be 0).
    pub(crate) reordered: u64,
    /// Delivered with wrong contents (must be 0).
    pub(crate) corrupted: u64,
    /// Initiator (tokio) to acceptor (smol).
    pub(crate) initiator_to_acceptor: Direction,
    /// Acceptor (smol) to initiator (tokio).
    pub(crate) acceptor_to_initiator: Direction,
    /// Payload megabytes delivered per second, both directions.
    pub(crate) throughput_mb_s: f64,
    /// Messages delivered per second, both directions.
    pub(crate) throughput_msgs_s: f64,
    /// Links the proxy killed.
    pub(crate) link_kills: u64,
    /// Kills that cut a frame in half.
    pub(crate) kills_mid_frame: u64,
    /// Links the session resumed on (initiator's count).
    pub(crate) resumes: u64,
    /// Frames sent again after a resume, both sides.
    pub(crate) frames_replayed: u64,
    /// Link-level duplicate frames the conduits discarded, both sides.
    pub(crate) duplicate_frames_discarded: u64,
    /// Kill to the first message delivered over the next link.
    pub(crate) resume_latency: Latency,
    /// Kill to the initiator's new link completing its handshake.
    pub(crate) relink_latency: Latency,
    /// How each side's session ended.
    pub(crate) initiator_end: String,
    /// How the acceptor's session ended.
    pub(crate) acceptor_end: String,
    /// Every receiver saw its connection's final message within the drain deadline.
    pub(crate) complete: bool,
    /// The restart mode's handoffs (absent in the default mode).
    #[facet(skip_serializing_if = Option::is_none)]
    pub(crate) restarts: Option<Restarts>,
    /// Nothing lost, duplicated, reordered or corrupted, and complete.
    pub(crate) ok: bool,
}

impl Report {
    /// The report as text.
    pub(crate) fn text(&self) -> String {
        let mut s = String::new();
        let mut line = |l: String| {
            s.push_str(&l);
            s.push('\n');
        };
        let acceptor = match &self.restarts {
            None => "smol acceptor".to_string(),
            Some(r) => format!("smol acceptor process (replaced every {:.1} s)", r.every_s),
        };
        line(format!(
            "sotto demo: {:.1} s, {} connections both ways, {acceptor} <- chaos proxy <- tokio initiator",
            self.seconds, self.connections
        ));
        line(format!("  sent          {:>12}", self.sent));
        line(format!(
            "  delivered     {:>12}   ({} initiator->acceptor, {} acceptor->initiator)",
            self.delivered, self.initiator_to_acceptor.delivered, self.acceptor_to_initiator.delivered
        ));
        line(format!("  lost          {:>12}", self.lost));
        line(format!("  duplicated    {:>12}", self.duplicated));
        line(format!("  reordered     {:>12}", self.reordered));
        line(format!("  corrupted     {:>12}", self.corrupted));
        line(format!("  throughput    {:>12.1} MB/s, {:.0} msgs/s", self.throughput_mb_s, self.throughput_msgs_s));
        line(format!("  link kills    {:>12}   ({} mid-frame)", self.link_kills, self.kills_mid_frame));
        line(format!(
            "  resumes       {:>12}   ({} frames replayed, {} duplicate frames discarded)",
            self.resumes, self.frames_replayed, self.duplicate_frames_discarded
        ));
        for l in [&self.resume_latency, &self.relink_latency] {
            line(format!(
                "  {:<13} p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms  ({} samples)",
                if std::ptr::eq(l, &self.resume_latency) { "resume" } else { "relink" },
                l.p50_ms,
                l.p99_ms,
                l.max_ms,
                l.samples
            ));
            line(format!("                ({})", l.definition));
        }
        if let Some(r) = &self.restarts {
            line(format!(
                "  handoffs      {:>12}   ({} acceptor processes; {} sessions and {} connections moved)",
                r.handoffs, r.acceptor_processes, r.sessions_moved, r.connections_moved
            ));
            for (name, l) in [
                ("handoff", &r.handoff_time),
                ("takeover", &r.takeover_time),
                ("after handoff", &r.resume_after_handoff),
            ] {
                line(format!("  {name:<13} p50 {:.2} ms, max {:.2} ms  ({} samples)", l.p50_ms, l.max_ms, l.samples));
                line(format!("                ({})", l.definition));
            }
            line(format!(
                "  freeze        max {:.2} ms  (the longest a session stayed frozen in a handoff)",
                r.longest_freeze_ms
            ));
        }
        line(format!("  ended         initiator {}, acceptor {}", self.initiator_end, self.acceptor_end));
        line(format!("  result        {}", if self.ok { "OK" } else { "FAILED" }));
        s
    }
}
