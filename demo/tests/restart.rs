//! The demo's restart mode, run as a user runs it (the built binary): the acceptor process is
//! replaced again and again under the chaos proxy's link kills and full traffic both ways,
//! and nothing is lost, duplicated or reordered. Its acceptor processes do not outlive it.
#![cfg(unix)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEMO: &str = env!("CARGO_BIN_EXE_sotto-demo");

/// The number after `"key": ` in the report (keys are unique in it).
fn number(json: &str, key: &str) -> f64 {
    let pat = format!("\"{key}\": ");
    let at = json.find(&pat).unwrap_or_else(|| panic!("no {key} in the report:\n{json}")) + pat.len();
    let rest = &json[at..];
    let end = rest.find([',', '\n', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().unwrap_or_else(|e| panic!("{key}: {e}"))
}

fn boolean(json: &str, key: &str) -> bool {
    let pat = format!("\"{key}\": ");
    let at = json.find(&pat).unwrap_or_else(|| panic!("no {key} in the report:\n{json}")) + pat.len();
    json[at..].starts_with("true")
}

/// The seed fixes the proxy's kill times; the handoffs' timing against the traffic is the
/// machine's (a failure shows what happened, not a replayable schedule).
#[test]
fn acceptor_replaced_four_times_a_second_under_chaos_loses_duplicates_and_reorders_nothing() {
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    println!("seed {seed}");
    let out = Command::new(DEMO)
        .args(["--secs", "5", "--restart-every", "0.25", "--conns", "2", "--json", "--seed", &seed.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .expect("run the demo");
    let json = String::from_utf8_lossy(&out.stdout);
    println!("{json}");
    assert!(out.status.success(), "the demo failed ({}), seed {seed}", out.status);
    for key in ["lost", "duplicated", "reordered", "corrupted"] {
        assert_eq!(number(&json, key), 0.0, "{key}, seed {seed}");
    }
    assert!(boolean(&json, "complete"), "every FIN arrived, seed {seed}");
    assert!(boolean(&json, "ok"), "seed {seed}");
    let handoffs = number(&json, "handoffs");
    assert!(handoffs >= 2.0, "{handoffs} handoffs in 5 s at four a second, seed {seed}");
    assert_eq!(number(&json, "acceptor_processes"), handoffs + 1.0);
    assert_eq!(number(&json, "sessions_moved"), handoffs, "the session moved at every handoff");
    assert_eq!(number(&json, "connections_moved"), 2.0 * handoffs, "with both its connections");
    assert!(number(&json, "sent") > 0.0 && number(&json, "link_kills") > 0.0, "traffic and kills, seed {seed}");
}

#[test]
fn restart_every_must_be_a_positive_number() {
    for bad in ["0", "-1", "x", "nan"] {
        let out = Command::new(DEMO).args(["--restart-every", bad]).output().expect("run the demo");
        assert_eq!(out.status.code(), Some(2), "--restart-every {bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--restart-every"), "--restart-every {bad}");
    }
}

/// Processes whose parent is `pid` (Linux: from /proc).
#[cfg(target_os = "linux")]
fn children_of(pid: u32) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
        // pid (comm) state ppid ...: comm may hold spaces, so read after its last ')'.
        let Some(after) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        if after.split_whitespace().nth(1).and_then(|s| s.parse::<u32>().ok()) == Some(pid) {
            v.push(p);
        }
    }
    v
}

/// Whether `pid` still runs (a zombie nobody reaped has exited).
#[cfg(target_os = "linux")]
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next().map(|st| st != "Z")))
        .unwrap_or(false)
}

#[cfg(target_os = "linux")]
#[test]
fn acceptor_processes_exit_when_the_demo_is_killed() {
    let mut demo = Command::new(DEMO)
        .args(["--secs", "60", "--restart-every", "1", "--conns", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run the demo");
    let deadline = Instant::now() + Duration::from_secs(20);
    let children = loop {
        let c = children_of(demo.id());
        if !c.is_empty() || Instant::now() > deadline {
            break c;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!children.is_empty(), "the demo started an acceptor process");
    demo.kill().expect("kill the demo");
    let _ = demo.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    while children.iter().any(|c| running(*c)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<u32> = children.iter().copied().filter(|c| running(*c)).collect();
    assert!(left.is_empty(), "acceptor processes {left:?} outlived the demo");
}
