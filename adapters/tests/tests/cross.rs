//! tokio ↔ smol in both directions, through the chaos proxy: a tokio initiator against a
//! smol acceptor over TCP, a smol initiator against a tokio acceptor over a Unix socket.

use std::time::Duration;

use sotto_adapter_tests::proxy::{Chaos, ChaosProxy, Endpoint};
use sotto_adapter_tests::workload::{exchange, seed, test_config, unix_path, within};

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn tokio_initiator_smol_acceptor_tcp_chaos() {
    let seed = seed();
    println!("seed {seed}");
    let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = sotto_smol::raw::serve_tcp(listener, test_config()).expect("config");
    let chaos = Chaos { stall_every: 5, half_open_every: 7, ..Chaos::kills(seed, 20) };
    let proxy = ChaosProxy::start(Endpoint::Tcp("127.0.0.1:0".parse().expect("addr")), Endpoint::Tcp(addr), chaos)
        .expect("proxy");
    let Endpoint::Tcp(paddr) = proxy.endpoint else { unreachable!() };
    let a = sotto_tokio::raw::connect(
        move || async move {
            let s = tokio::net::TcpStream::connect(paddr).await?;
            s.set_nodelay(true)?;
            Ok(s)
        },
        test_config(),
    )
    .await
    .expect("connect");
    let b = acceptor.accept().await.expect("accept");
    within(LIMIT, "tokio -> smol exchange", exchange(&a, &b, 3000)).await;
    println!("kills {} resumes {}", proxy.kills(), a.stats().conduit.resumes);
    assert!(proxy.kills() >= 3);
}

#[test]
fn smol_initiator_tokio_acceptor_unix_chaos() {
    let seed = seed();
    println!("seed {seed}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let path = unix_path("cross-up");
    let acceptor = rt.block_on(async {
        let l = tokio::net::UnixListener::bind(&path).expect("bind");
        sotto_tokio::raw::serve_unix(l, test_config()).expect("config")
    });
    let proxy =
        ChaosProxy::start(Endpoint::Unix(unix_path("cross-proxy")), Endpoint::Unix(path), Chaos::kills(seed, 20))
            .expect("proxy");
    let Endpoint::Unix(ppath) = proxy.endpoint.clone() else { unreachable!() };
    // The smol side is driven by smol's executor, the tokio acceptor by `rt`.
    rt.block_on(async {
        let a = sotto_smol::raw::connect(move || smol::net::unix::UnixStream::connect(ppath.clone()), test_config())
            .await
            .expect("connect");
        let b = acceptor.accept().await.expect("accept");
        within(LIMIT, "smol -> tokio exchange", exchange(&a, &b, 3000)).await;
        println!("kills {} resumes {}", proxy.kills(), a.stats().conduit.resumes);
        assert!(proxy.kills() >= 3);
    });
}
