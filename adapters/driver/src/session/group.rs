//! Serving a worker of an [`AcceptorGroup`] with the session API (the group itself, its
//! keys and its mailboxes are in `group`, beside the router).

use std::io;

use futures::stream::{Stream, StreamExt};

use super::acceptor::{serve_in_group, SessionAcceptor};
use crate::config::Config;
use crate::glue::ListenerGlue;
use crate::group::{AcceptorGroup, GroupError};
use crate::routing::source_of_peer;
use crate::runtime::{Io, Runtime};

impl<S: Io> AcceptorGroup<S> {
    /// Serve `incoming` as worker `worker` (below [`workers`](Self::workers)) on runtime
    /// `rt`, like [`serve_sessions`](crate::serve_sessions): each item a freshly accepted
    /// stream and its source. Call once per worker; every worker should be serving before
    /// clients resume (a link passed to a worker that is not serving yet waits in its
    /// mailbox until it is). Serving a worker again after its acceptor was dropped takes
    /// links for it again.
    pub fn serve<R, St>(&self, rt: R, worker: u16, incoming: St, config: Config) -> Result<SessionAcceptor, GroupError>
    where
        R: Runtime,
        St: Stream<Item = io::Result<(S, u64)>> + Send + 'static,
    {
        let (issuer, member) = self.join(worker)?;
        serve_in_group(rt, incoming, config, issuer, member).map_err(GroupError::Config)
    }

    /// Serve `listener` as worker `worker` on `rt` (see [`serve`](Self::serve)), each link's
    /// source taken from its peer's address, as [`listen_sessions`](crate::listen_sessions)
    /// does. What an adapter's `serve_group_tcp` is.
    pub fn serve_listener<R, L>(
        &self,
        rt: R,
        worker: u16,
        listener: L,
        config: Config,
    ) -> Result<SessionAcceptor, GroupError>
    where
        R: ListenerGlue<L, Io = S>,
    {
        let incoming = rt.incoming(listener).map(|r| {
            r.map(|io| {
                let source = source_of_peer(&io);
                (io, source)
            })
        });
        self.serve(rt, worker, incoming, config)
    }
}
