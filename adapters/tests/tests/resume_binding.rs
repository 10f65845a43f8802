//! A resume binding without TLS (tokio, loopback TCP): `AcceptHooks::plain()` passes each
//! stream on unchanged, and the binding compares the peer IP of the session's first link
//! with the resuming link's. The client reaches the acceptor from 127.0.0.2 (through a relay
//! that learns the keys and can cut the links); its own resume from there is accepted, the
//! same key presented from 127.0.0.1 is answered REJECTED and the live link is untouched.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use sotto_adapter_tests::key_tap::{resume_with, KeyTap};
use sotto_adapter_tests::sessions::{exchange_all, open_accept, session_config};
use sotto_adapter_tests::workload::{eventually, within};
use sotto_proto::wire::{ServerHello, LEN_PREFIX};
use sotto_tokio::{AcceptHooks, LinkInfo, PeerAddr};

const LIMIT: Duration = Duration::from_secs(20);
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn ip(info: &LinkInfo) -> Option<IpAddr> {
    match info.peer_addr {
        Some(PeerAddr::Tcp(a)) => Some(a.ip()),
        _ => None,
    }
}

#[tokio::test]
async fn a_resume_bound_to_the_peer_ip_is_refused_from_another_address() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let upstream = l.local_addr().expect("addr");
    let hooks = AcceptHooks::plain().bind_resumes(|first, resuming| ip(first).is_some() && ip(first) == ip(resuming));
    let acc = sotto_tokio::serve_sessions_tcp_with(l, session_config(), hooks).expect("config");
    let tap = KeyTap::start_from(upstream, Some(OTHER)).await;
    let to = tap.addr;
    let a = sotto_tokio::connect_session(move || tokio::net::TcpStream::connect(to), session_config())
        .await
        .expect("connect");
    let b = within(LIMIT, "accept", acc.accept()).await.expect("accept");
    assert!(matches!(b.peer_addr(), Some(PeerAddr::Tcp(x)) if x.ip() == OTHER), "{:?}", b.peer_addr());
    assert_eq!(b.peer_identity(), None, "the plain hook names no identity");
    let pairs = within(LIMIT, "open", open_accept(&a, &b, 1)).await;
    tap.cut();
    assert!(eventually(LIMIT, || tap.keys().len() >= 2 && a.stats().link_established).await, "resumed from 127.0.0.2");
    let pairs = within(LIMIT, "exchange after the resume", exchange_all(pairs, 50)).await;
    let key = *tap.keys().last().expect("a key");
    let before = b.stats();

    let reply = within(LIMIT, "the resume from 127.0.0.1", resume_with(upstream, key)).await;
    assert_eq!(&reply[LEN_PREFIX..], &ServerHello::rejected().encode()[..], "REJECTED");
    let st = acc.stats();
    assert_eq!((st.resumes_refused_by_binding, st.endpoint.resumes_routed), (1, 1), "{st:?}");
    let pairs = within(LIMIT, "exchange after the refused resume", exchange_all(pairs, 50)).await;
    assert_eq!(b.stats().link_downs, before.link_downs, "the live link was not touched");
    drop(pairs);
}
