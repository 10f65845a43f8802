//! The session API: [`SessionHandle`]s carrying virtual [`Connection`]s with credit flow
//! control, over the core's session layer ([`sotto_proto::session::Session`]).
//!
//! - Initiators: [`connect_session`] owns its session (one lock per session).
//! - Acceptors: [`serve_sessions`] runs the core [`sotto_proto::endpoint::Endpoint`], which
//!   routes each new link by its resume key (handshake deadline, pending-handshake cap,
//!   per-source failure budget, detached-session cap); each session it admits is owned by its
//!   own driver task and locked on its own, exactly as an initiator's.
//!
//! See `home` for where each session's state lives and why.

mod acceptor;
mod byte_stream;
mod conn;
mod group;
mod handle;
mod home;
mod inbox;
mod loss;
#[cfg(unix)]
pub(crate) mod moving;
mod reconnecting;
mod staging;
mod state;

pub use acceptor::{serve_sessions, serve_sessions_hooked, SessionAcceptor, SessionAcceptorStats};
pub use byte_stream::WRITE_CHUNK;
pub use conn::{ConnError, ConnReceiver, ConnSender, Connection};
pub use handle::{
    connect_session, connect_session_with, AnswerError, Goodbye, IncomingOpen, OpenError, SessionEvent, SessionHandle,
    SessionId, SessionStats,
};
#[cfg(unix)]
pub(crate) use home::{Home, OwnHome};
pub use loss::{LostConnection, UnackedMessage, Unacknowledged};
pub use reconnecting::{ReconnectingSession, RenewError, Renewal, Reopened};
