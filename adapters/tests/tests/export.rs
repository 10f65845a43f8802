//! The adapters' configuration and stats as JSON in one call (`facet_json::to_string`),
//! with the `facet` feature (forwarded from sotto-tokio and sotto-smol through sotto-driver
//! to the core): the configuration round-trips, a live session's and acceptor's stats carry
//! their figures (session and raw, on both runtimes). Run with `cargo test -p sotto-adapter-tests --features facet --test export`.
#![cfg(feature = "facet")]

use std::time::Duration;

use sotto_adapter_tests::sessions::{dial, listen, session_config, Rt, Transport};
use sotto_adapter_tests::workload::{exchange, test_config, within};
use sotto_tokio::Config;

const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn the_config_round_trips_through_json() {
    let mut config = Config::default();
    config.dial.connect_timeout = Duration::from_millis(1500);
    config.acceptor.max_sessions = 1234;
    config.buffers.read_chunk = 4096;
    config.protocol.recovery_timeout = Duration::from_secs(30);
    let json = facet_json::to_string(&config).expect("serializes");
    println!("{json}");
    assert!(json.contains("\"max_sessions\":1234"), "{json}");
    assert!(json.contains("\"read_chunk\":4096"), "{json}");
    let back: Config = facet_json::from_str(&json).expect("parses back");
    assert_eq!(back, config);
}

/// A live session's stats and its acceptor's (with the acceptor-wide summary) as JSON.
async fn session_stats_run(rt: Rt) {
    let (acc, upstream) = listen(rt, Transport::Tcp, session_config()).await;
    let a = dial(rt, upstream, session_config()).await;
    let b = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    let stats = a.stats();
    let json = facet_json::to_string(&stats).expect("serializes");
    println!("{rt:?}: {json}");
    assert!(json.contains(&format!("\"link_ups\":{}", stats.link_ups)), "{json}");
    assert!(json.contains(&format!("\"buffer_bytes\":{}", stats.buffer_bytes)), "{json}");
    assert!(json.contains("\"session\":{"), "the core's stats inside: {json}");

    let acc_stats = acc.stats();
    let json = facet_json::to_string(&acc_stats).expect("serializes");
    println!("{rt:?}: {json}");
    assert_eq!(acc_stats.summary.sessions_live, 1);
    assert!(json.contains("\"summary\":{\"sessions_live\":1,"), "{json}");
    assert!(json.contains("\"refused\":{\"full\":0,"), "{json}");
    assert!(json.contains("\"endpoint\":{"), "{json}");
    drop((a, b));
}

#[tokio::test]
async fn session_and_acceptor_stats_serialize_with_their_figures_tokio() {
    session_stats_run(Rt::Tokio).await;
}

#[test]
fn session_and_acceptor_stats_serialize_with_their_figures_smol() {
    smol::block_on(session_stats_run(Rt::Smol));
}

/// A raw conduit's stats and its acceptor's as JSON.
async fn raw_stats_run(rt: Rt) {
    let (acc, c) = match rt {
        Rt::Tokio => {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = l.local_addr().expect("addr");
            let acc = sotto_tokio::raw::serve_tcp(l, test_config()).expect("config");
            let c = sotto_tokio::raw::connect(move || tokio::net::TcpStream::connect(addr), test_config()).await;
            (acc, c.expect("connect"))
        }
        Rt::Smol => {
            let l = smol::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = l.local_addr().expect("addr");
            let acc = sotto_smol::raw::serve_tcp(l, test_config()).expect("config");
            let c = sotto_smol::raw::connect(move || smol::net::TcpStream::connect(addr), test_config()).await;
            (acc, c.expect("connect"))
        }
    };
    let s = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    within(LIMIT, "exchange", exchange(&c, &s, 10)).await;
    let stats = c.stats();
    let json = facet_json::to_string(&stats).expect("serializes");
    println!("{rt:?}: {json}");
    assert!(json.contains(&format!("\"items_queued\":{}", stats.conduit.items_queued)), "{json}");
    let json = facet_json::to_string(&acc.stats()).expect("serializes");
    println!("{rt:?}: {json}");
    assert!(json.contains("\"sessions\":1,"), "{json}");
    assert!(json.contains("\"summary\":{\"sessions_live\":1,"), "{json}");
}

#[tokio::test]
async fn raw_conduit_and_acceptor_stats_serialize_tokio() {
    raw_stats_run(Rt::Tokio).await;
}

#[test]
fn raw_conduit_and_acceptor_stats_serialize_smol() {
    smol::block_on(raw_stats_run(Rt::Smol));
}
