//! Dropping session-API handles ends every task they started, on both runtimes: live
//! sessions with open connections (held on after the session handle is gone), an acceptor
//! with a session not yet accepted, a session redialing a vanished acceptor. One test in
//! its own binary, because it reads a process-wide task counter.

use std::time::Duration;

use bytes::Bytes;
use sotto_adapter_tests::proxy::Chaos;
use sotto_adapter_tests::sessions::{dial, exchange_all, listen, open_accept, proxy_to, session_config, Rt, Transport};
use sotto_adapter_tests::workload::{eventually, within};
use sotto_tokio::ConnError;

const LIMIT: Duration = Duration::from_secs(10);

#[test]
fn a6_dropping_session_handles_ends_every_task() {
    assert_eq!(sotto_tokio::live_tasks(), 0);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        // tokio acceptor, smol initiator; a second session left in the backlog.
        let (acc, upstream) = listen(Rt::Tokio, Transport::Tcp, session_config()).await;
        let a = dial(Rt::Smol, upstream.clone(), session_config()).await;
        let b = acc.accept().await.expect("accept");
        let pairs = within(LIMIT, "open", open_accept(&a, &b, 3)).await;
        let mut pairs = within(LIMIT, "exchange", exchange_all(pairs, 100)).await;
        let proxy = proxy_to(upstream, Chaos::kills(1, 0));
        let a2 = dial(Rt::Tokio, proxy.endpoint.clone(), session_config()).await;
        // smol acceptor, tokio initiator.
        let (sacc, supstream) = listen(Rt::Smol, Transport::Unix, session_config()).await;
        let c = dial(Rt::Tokio, supstream, session_config()).await;
        let d = sacc.accept().await.expect("accept");
        let cpairs = within(LIMIT, "open", open_accept(&c, &d, 2)).await;
        let cpairs = within(LIMIT, "exchange", exchange_all(cpairs, 100)).await;
        // Acceptors: 2. Drivers: a, b, a2, a2's peer (in the backlog), c, d.
        assert_eq!(sotto_tokio::live_tasks(), 8);
        // Connections outlive their session handle, which ends the session's task.
        let (mut x, _y) = pairs.pop().expect("pair");
        drop(a);
        assert!(eventually(LIMIT, || sotto_tokio::live_tasks() <= 6).await, "a and b end (GOODBYE)");
        let err = x.send(Bytes::from_static(b"late")).await.expect_err("session gone");
        assert!(matches!(err, ConnError::Ended(_)), "{err:?}");
        drop(pairs);
        // A session whose link dies without a GOODBYE (the proxy vanishes) keeps redialing;
        // drop it mid-way.
        drop(proxy);
        drop(acc);
        drop(b);
        assert!(eventually(LIMIT, || a2.stats().dials > 2).await, "redialing");
        drop(a2);
        drop((cpairs, c, d, sacc));
        assert!(
            eventually(LIMIT, || sotto_tokio::live_tasks() == 0).await,
            "tasks left: {}",
            sotto_tokio::live_tasks()
        );
    });
}
