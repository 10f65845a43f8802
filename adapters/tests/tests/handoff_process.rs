//! The restart with the new acceptor in a separate process (issue 17): this test binary runs
//! the old acceptor and the clients, and re-executes itself as the new acceptor's process
//! (`child_new_acceptor`, which does nothing unless `SOTTO_HANDOFF_CHILD` names the control
//! socket). The listener and every live session move over the control socket. Client to
//! server: every message reaches exactly one server application, in order (the old one's
//! ledger followed by the child's, which it prints). Server to client: messages the old
//! application sent and the client had not acknowledged (it acknowledges lazily) move with
//! the sessions and arrive exactly once, in order, from the new process.
#![cfg(unix)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use sotto_adapter_tests::sessions::{conn_message, session_config};
use sotto_adapter_tests::workload::{eventually, unix_path, within};
use sotto_driver::handoff::{receive_listener, HandoffConfig, ListenerFamily};
use sotto_driver::{Config, Connection};

const LIMIT: Duration = Duration::from_secs(30);
const CLIENTS: u32 = 4;
const MSGS: u64 = 200;

fn server_config() -> Config {
    let mut c = session_config();
    c.acceptor.max_sessions = 64;
    c
}

/// Clients acknowledge lazily, so what the server sent them is still unacknowledged (in the
/// old process's replay rings) when the sessions move.
fn client_config() -> Config {
    let mut c = session_config();
    c.protocol.ack_delay = Duration::from_secs(10);
    c.protocol.ack_every = 1 << 20;
    c
}

/// Index and tag of a `conn_message`.
fn parse(m: &[u8]) -> (u64, u32) {
    let mut i = [0u8; 8];
    i.copy_from_slice(&m[..8]);
    let mut t = [0u8; 4];
    t.copy_from_slice(&m[8..12]);
    (u64::from_le_bytes(i), u32::from_le_bytes(t))
}

/// The new acceptor's process: take the listener and the sessions, record what arrives on
/// every adopted connection, print it as `got <tag> <i>` lines, exit when every connection
/// has ended (the clients close them).
#[tokio::test]
async fn child_new_acceptor() {
    let Ok(path) = std::env::var("SOTTO_HANDOFF_CHILD") else { return };
    let control = std::os::unix::net::UnixStream::connect(&path).expect("control socket");
    let (fd, _) = receive_listener(&control, LIMIT).expect("listener");
    let l = std::net::TcpListener::from(fd);
    l.set_nonblocking(true).expect("nonblocking");
    let acc = Arc::new(
        sotto_tokio::serve_sessions_tcp(tokio::net::TcpListener::from_std(l).expect("listener"), server_config())
            .expect("config"),
    );
    let app = {
        let acc = Arc::clone(&acc);
        tokio::spawn(async move {
            let mut readers = Vec::new();
            for _ in 0..CLIENTS {
                let s = acc.accept().await.expect("adopted session");
                for mut c in s.adopted_connections() {
                    readers.push(tokio::spawn(async move {
                        let mut got = Vec::new();
                        while let Ok(m) = c.recv().await {
                            got.push(parse(&m));
                        }
                        got
                    }));
                }
                std::mem::forget(s);
            }
            readers
        })
    };
    let report = acc.receive_handoff(control, HandoffConfig::default()).await.expect("received");
    assert_eq!(report.adopted, u64::from(CLIENTS));
    let readers = within(LIMIT, "adopted sessions", app).await.expect("app");
    for r in readers {
        for (i, tag) in within(LIMIT, "connections end", r).await.expect("reader") {
            println!("got {tag} {i}");
        }
    }
}

#[tokio::test]
async fn restart_into_a_separate_process_moves_every_session_and_the_listener() {
    if std::env::var("SOTTO_HANDOFF_CHILD").is_ok() {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let passed: OwnedFd = listener.try_clone().expect("dup").into();
    listener.set_nonblocking(true).expect("nonblocking");
    let old = sotto_tokio::serve_sessions_tcp(tokio::net::TcpListener::from_std(listener).expect("l"), server_config())
        .expect("config");

    // Clients, each with one connection; the old application records what it reads, and
    // sends MSGS messages to each client, which stay unacknowledged.
    let old_ledger: Arc<Mutex<HashMap<u32, Vec<u64>>>> = Arc::default();
    let mut clients = Vec::new();
    let mut client_conns: Vec<(u32, Connection)> = Vec::new();
    let mut server_conns = Vec::new();
    for tag in 0..CLIENTS {
        let c = sotto_tokio::connect_session(move || tokio::net::TcpStream::connect(addr), client_config())
            .await
            .expect("connect");
        let s = old.accept().await.expect("accept");
        let answer = async { s.accept().await.expect("incoming").accept(b"ok").await.expect("answer") };
        let (opened, server_side) = futures::future::join(c.open(format!("c{tag}").as_bytes()), answer).await;
        client_conns.push((tag, opened.expect("open")));
        server_conns.push((tag, server_side));
        clients.push(c);
        std::mem::forget(s);
    }
    for (tag, c) in &mut server_conns {
        for i in 0..MSGS {
            c.send(conn_message(*tag, i)).await.expect("server send");
        }
    }
    let readers: Vec<_> = server_conns
        .into_iter()
        .map(|(tag, c)| {
            let ledger = Arc::clone(&old_ledger);
            tokio::spawn(async move {
                let (_tx, mut rx) = c.split();
                while let Ok(m) = rx.recv().await {
                    let (i, t) = parse(&m);
                    assert_eq!(t, tag);
                    ledger.lock().expect("ledger").entry(tag).or_default().push(i);
                }
            })
        })
        .collect();
    // The clients send, paced, through the restart; and read what the server sent.
    let traffic = join_all(client_conns.into_iter().map(|(tag, c)| async move {
        let (mut tx, mut rx) = c.split();
        let send = async {
            for i in 0..MSGS {
                tx.send(conn_message(tag, i)).await.expect("client send");
                if i % 4 == 3 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            tx
        };
        let recv = async {
            for i in 0..MSGS {
                let m = rx.recv().await.expect("server message");
                assert_eq!(m, conn_message(tag, i), "conn {tag}: server message {i} lost, duplicated or reordered");
            }
        };
        let (tx, ()) = futures::future::join(send, recv).await;
        (tx, rx)
    }));
    let traffic = tokio::spawn(traffic);
    assert!(eventually(LIMIT, || old_ledger.lock().expect("ledger").values().map(Vec::len).sum::<usize>() >= 40).await);

    // The new process.
    let path = unix_path("handoff-control");
    let control = UnixListener::bind(&path).expect("bind control");
    let exe = std::env::current_exe().expect("this test binary");
    let mut child = Command::new(exe)
        .args(["--exact", "child_new_acceptor", "--nocapture", "--test-threads=1"])
        .env("SOTTO_HANDOFF_CHILD", &path)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the new process");
    let (stream, _) = tokio::task::spawn_blocking(move || control.accept()).await.expect("thread").expect("accept");
    let report =
        within(LIMIT, "hand off", old.hand_off(stream, Some((passed, ListenerFamily::Tcp)), HandoffConfig::default()))
            .await;
    assert_eq!((report.handed_off, report.kept), (u64::from(CLIENTS), 0), "{report:?}");

    let conns = within(LIMIT, "traffic through the restart", traffic).await.expect("traffic");
    for r in readers {
        let _ = within(LIMIT, "old readers end", r).await;
    }
    // Wait until the new process has everything, then end the connections.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for c in &clients {
        assert!(c.stats().link_downs <= 1, "at most one link change");
    }
    drop(conns);
    drop(clients);
    let out = child.stdout.take().expect("stdout");
    let lines =
        tokio::task::spawn_blocking(move || BufReader::new(out).lines().map_while(Result::ok).collect::<Vec<String>>())
            .await
            .expect("thread");
    let status = child.wait().expect("child");
    assert!(status.success(), "the new process failed: {lines:?}");
    let mut new_ledger: HashMap<u32, Vec<u64>> = HashMap::new();
    for l in &lines {
        // The test harness may print its "test ... " prefix on the first line.
        let Some(at) = l.find("got ") else { continue };
        let mut w = l[at..].split_whitespace();
        if w.next() == Some("got") {
            let tag: u32 = w.next().and_then(|s| s.parse().ok()).expect("tag");
            let i: u64 = w.next().and_then(|s| s.parse().ok()).expect("index");
            new_ledger.entry(tag).or_default().push(i);
        }
    }
    let old_ledger = old_ledger.lock().expect("ledger");
    for tag in 0..CLIENTS {
        let mut all = old_ledger.get(&tag).cloned().unwrap_or_default();
        all.extend(new_ledger.get(&tag).cloned().unwrap_or_default());
        assert_eq!(
            all,
            (0..MSGS).collect::<Vec<_>>(),
            "conn {tag}: lost, duplicated or reordered across processes (old {:?}, new {:?})",
            old_ledger.get(&tag),
            new_ledger.get(&tag)
        );
    }
    assert!(new_ledger.values().map(Vec::len).sum::<usize>() > 0, "the new process received traffic");
    let _ = std::fs::remove_file(&path);
}
