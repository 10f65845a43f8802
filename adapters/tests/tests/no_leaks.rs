//! Dropping handles ends every task they started, on both runtimes: live sessions, an
//! acceptor with sessions not yet accepted, a session stuck dialing, a session redialing.
//! One test in its own binary, because it reads a process-wide task counter.

use std::time::Duration;

use sotto_adapter_tests::proxy::cuttable_tcp;
use sotto_adapter_tests::workload::{eventually, exchange, test_config, within};

const LIMIT: Duration = Duration::from_secs(10);

#[test]
fn a6_dropping_handles_ends_every_task() {
    assert_eq!(sotto_tokio::live_tasks(), 0);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        // tokio: acceptor + two sessions (one accepted, one left in the backlog).
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let acceptor = sotto_tokio::raw::serve_tcp(l, test_config()).expect("config");
        let dial = move || tokio::net::TcpStream::connect(addr);
        // `a` goes through a proxy (no faults), whose drop cuts its link without a GOODBYE.
        let (proxy, paddr) = cuttable_tcp(addr);
        let a = sotto_tokio::raw::connect(move || tokio::net::TcpStream::connect(paddr), test_config())
            .await
            .expect("connect");
        let b = acceptor.accept().await.expect("accept");
        within(LIMIT, "exchange", exchange(&a, &b, 100)).await;
        let a2 = sotto_tokio::raw::connect(dial, test_config()).await.expect("connect");
        // smol: acceptor + session, driven by smol's executor.
        let sl = smol::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let saddr = sl.local_addr().expect("addr");
        let sacceptor = sotto_smol::raw::serve_tcp(sl, test_config()).expect("config");
        let c = sotto_smol::raw::connect(move || smol::net::TcpStream::connect(saddr), test_config())
            .await
            .expect("connect");
        let d = sacceptor.accept().await.expect("accept");
        within(LIMIT, "exchange", exchange(&c, &d, 100)).await;
        // Acceptors: 2. Drivers: a, b, a2, a2's peer (still in the backlog), c, d.
        assert_eq!(sotto_tokio::live_tasks(), 8);
        // A session whose link was cut and whose acceptor is gone keeps redialing; drop it
        // mid-way. (Dropping a handle closes its session with GOODBYE, after which the peer
        // would not redial: the link goes first.)
        drop(proxy);
        drop(b);
        drop(acceptor);
        assert!(eventually(LIMIT, || a.stats().dials > 2).await, "redialing");
        drop(a);
        drop(a2);
        drop((c, d, sacceptor));
        // Connects that never get a link: the connector hangs, then the caller gives up.
        let stuck =
            sotto_tokio::raw::connect(std::future::pending::<std::io::Result<tokio::net::TcpStream>>, test_config());
        assert!(tokio::time::timeout(Duration::from_millis(100), stuck).await.is_err());
        let stuck =
            sotto_smol::raw::connect(std::future::pending::<std::io::Result<smol::net::TcpStream>>, test_config());
        assert!(tokio::time::timeout(Duration::from_millis(100), stuck).await.is_err());
        assert!(
            eventually(LIMIT, || sotto_tokio::live_tasks() == 0).await,
            "tasks left: {}",
            sotto_tokio::live_tasks()
        );
    });
}
