//! The runtime-neutral half of sotto's async adapters, shared by `sotto-tokio` and
//! `sotto-smol` so that each of those is only glue (how to spawn a task, how to arm a timer,
//! which stream types to accept).
//!
//! What lives here:
//!
//! - the per-session **driver** task: one future per session looping "drain the core's
//!   outputs, check the clock against `poll_timeout`, wait for one input (link readable or
//!   writable, application command, new link, timer), feed it"; reads go into one reusable
//!   `BytesMut` (polled only when the stream has woken since its last `Pending`: a spurious
//!   wake-up of the task costs no read system call), writes are batched through
//!   [`sotto_proto::stream::LendingBatch`] (one write call for many frames; large items written
//!   straight from the replay ring, vectored). The
//!   loop is generic over the state it drives, so the same code runs raw stable conduits and
//!   session-layer sessions;
//! - the **session API**: [`connect_session`], [`serve_sessions`] ([`SessionAcceptor`]),
//!   [`SessionHandle`] (open, accept, events, stats, graceful close) and [`Connection`]
//!   (`Stream<Item = Bytes>` + `Sink<Bytes>`, and `futures::io::AsyncRead` + `AsyncWrite` as a
//!   byte stream; per-connection credit backpressure);
//! - the **raw stable-conduit API** for vox peers: [`connect`], [`serve`] ([`Acceptor`]),
//!   [`StableConduit`] (items in and out, events, stats, graceful close);
//! - the initiator's **redial** policy ([`Backoff`]: exponential with full jitter, randomness
//!   injected).
//!
//! # Map, top-down
//!
//! Read the modules in this order; each imports only from those below it.
//!
//! 1. **Entry points** (`entry`): [`dial`], [`dial_session`], [`listen`],
//!    [`listen_sessions`] (and [`listen_with`], [`listen_sessions_with`], which run
//!    [`AcceptHooks`] on each link), generic over an adapter's glue, so an adapter's
//!    `connect`, `serve_tcp` and the rest are one line each.
//! 2. **Handles**: the session API (`session::handle`, `session::conn`: [`SessionHandle`],
//!    [`Connection`]), the raw API (`handle`: [`StableConduit`]), and the acceptors
//!    (`acceptor`, `session::acceptor`, both a `front`: the queue of new sessions, the
//!    listening task and a graceful `shutdown`).
//! 3. **The per-session driver task** (`driver`): one loop for both kinds of session,
//!    reaching the state behind the session's lock through `host`'s traits, implemented by
//!    `raw` (a bare conduit) and `session::home` (a session-layer session and its
//!    `session::state`).
//! 4. **The router** (`router`, `routing`): the core endpoint behind its own small lock,
//!    each acceptor session's membership of it (its mailbox of routed links), and the
//!    listener's admission and routing of links, shared by both acceptors.
//! 5. **Link sources**: the listening task (`listen`, running each handshake as a
//!    `pending` link under its deadline, after its link hook if it has one: `link_hook`,
//!    [`AcceptHooks`], a TLS handshake, and the resume binding), the initiator's dialer
//!    (`dialer`, with [`Backoff`]), and the adapters' glue traits (`glue`: [`StreamGlue`],
//!    [`ListenerGlue`], [`HookGlue`]; [`WithPeer`] in `peer`).
//! 6. **Runtime glue** (`runtime`): [`Runtime`] (spawn a task that is cancelled when its
//!    guard is dropped, or detached; make a resettable [`Timer`]; tell the time) and [`Io`]
//!    (a `futures::io` byte stream, optionally reading into uninitialized memory), plus the
//!    small shared pieces every layer uses (`shared`, `config`, `keys`, `tasks`,
//!    `read_buffer`, `read_gate`, `summary`: an acceptor's gauges, `trace`: what is logged).
//!
//! A new runtime is one file: its [`Runtime`], a [`StreamGlue`] for its streams and a
//! [`ListenerGlue`] for each of its listeners.
//!
//! # Where a session's state lives, and why
//!
//! Every session has **one driver task** and its state behind **one lock**, shared by the
//! driver and the application's handles: the handles call the core directly (`send` copies
//! a payload once, into the replay ring; nothing is queued in between), and the driver takes
//! the lock once per batch of input (a whole read's worth of messages is fed under one lock).
//!
//! What a message costs the application: [`ConnSender::send`] takes the lock once per
//! message; [`ConnSender::send_many`] and the connection's `Sink` (which stages up to 256
//! messages and queues them on flush) take it once per burst, which at 16 B messages is the
//! difference between about 0.7x and 1.0-1.1x of raw buffered TCP (`docs/benchmarks.md`).
//! On the receiving side a whole read's messages reach the connection's queue under one
//! lock, a peer's batch of small messages as one entry, cut into messages as the reader
//! takes them; the reader takes the whole queue under one lock.
//!
//! - Every session, initiator or acceptor, owns its [`sotto_proto::session::Session`]: one
//!   mutex per session, taken by its own driver task and its own handles, never by another
//!   session.
//! - An acceptor runs the core [`sotto_proto::endpoint::Endpoint`], which only routes: it
//!   keeps the resume-key index, the pending handshakes and their deadline, the per-source
//!   failure budget and the bookkeeping of unready and detached sessions, behind a small
//!   lock of its own. The listener takes it to route a link; a session's driver takes it
//!   only when the session's lifecycle changes (ready, detached or attached, a resume's
//!   outcome, ended), never on the data path and never across a system call. A resume is
//!   handed to its session's driver through a mailbox in the session's own state, and the
//!   session checks the key before the new link may supersede the live one. So sessions of
//!   one acceptor progress in parallel on a multi-thread runtime.
//!
//! The raw stable-conduit acceptor routes through the same endpoint (`router`, `routing`):
//! one router for both, and its sessions check a resume the same way before it may
//! supersede their link. Links are accounted per source (the hash of a TCP peer's IP
//! address, from the stream's [`Io::peer_addr`]); links whose source is unknown (Unix
//! sockets, streams the adapter cannot look into) share the one source 0.
//!
//! The locks are `std::sync::Mutex`: a waiter is woken by the unlock that frees the lock,
//! never by a timed re-check. The crate's one `unsafe` block is the call to glibc's
//! `malloc_trim` that gives idle sessions' freed buffers back to the system (`memory_return`,
//! with its proof).
//!
//! # Logs
//!
//! sotto logs through `tracing`. Every session's task runs in a span named `sotto_session`
//! with the fields `session` ([`SessionHandle::id`] / [`StableConduit::id`]), `role`
//! (`initiator` or `acceptor`), `api` (`session` or `conduit`) and `peer` (the current
//! link's peer address, recorded when a link attaches, if the stream knows it). The span is
//! at INFO, so the events below carry it whenever INFO is enabled. WARN: a session lost
//! (`end`: why), an acceptor full, a peer's session-protocol violation (`code`, `reason`).
//! INFO: a session ended by the peer's GOODBYE (`code`, `reason`) or by its acceptor's
//! shutdown, a resume refused (unknown key, resume binding, its session), a link refused by
//! an acceptor limit (`limit`: the [`AcceptorConfig`] field, `peer`, `source`). DEBUG: links
//! up and down (`link`, the cause), dials, handshake timeouts. Nothing is logged per
//! message. The acceptor's own events come from its listening task, outside any session
//! span, and carry the link's `peer` and `source` themselves; they are rate-limited, one
//! line per source and kind per [`AcceptorConfig::refusal_log_interval`], the refusals not
//! logged counted in the next line's `suppressed`. (Recording `peer` on the span uses `Span::current()`, which needs a
//! subscriber that tracks the current span, as `tracing-subscriber`'s do.)
//!
//! # Export
//!
//! With the `facet` feature (forwarded by `sotto-tokio` and `sotto-smol`; rustc 1.90), the
//! configuration ([`Config`] and its groups) and every stats type ([`Stats`],
//! [`SessionStats`], [`AcceptorStats`], [`SessionAcceptorStats`] with its
//! [`AcceptorSummary`], [`ShutdownReport`]) derive `facet::Facet`, with the core's types
//! inside them. JSON is one call, `facet_json::to_string(&acceptor.stats())`; durations
//! are written as `[seconds, nanoseconds]`, and a configuration reads back with
//! `facet_json::from_str::<Config>`.
//!
//! Applications use `sotto-tokio` or `sotto-smol`, which re-export the types of this crate.
#![deny(unsafe_code)]

// 1. Entry points.
mod entry;
// 2. Handles and acceptors.
mod acceptor;
mod front;
mod handle;
#[cfg(unix)]
pub mod handoff;
mod session;
mod shutdown;
// 3. The per-session driver task and the state it drives.
mod driver;
mod host;
mod raw;
// 4. The router.
mod group;
mod lot;
mod router;
mod routing;
// 5. Link sources.
mod backoff;
mod dialer;
mod glue;
mod link_hook;
mod listen;
mod peer;
mod pending;
// 6. Runtime glue and shared pieces.
mod config;
mod keys;
mod memory_return;
mod read_buffer;
mod read_gate;
mod refusal_log;
mod runtime;
mod shared;
mod summary;
mod tasks;
mod trace;

pub use acceptor::{serve, serve_hooked, Acceptor, AcceptorStats};
pub use backoff::{is_transient, permanent, Backoff, Permanent};
pub use config::{AcceptorConfig, BufferConfig, Config, DialConfig, ProtocolConfig};
pub use entry::{dial, dial_reconnecting, dial_session, listen, listen_sessions, listen_sessions_with, listen_with};
pub use glue::{HookGlue, ListenerGlue, StreamGlue, Streams};
pub use group::{AcceptorGroup, GroupError, FORWARD_QUEUE};
pub use handle::{connect, ConnectError, Ended, SendError, StableConduit, TrySendError};
pub use link_hook::{AcceptHooks, AcceptedLink, LinkHookFuture, LinkInfo, PeerIdentity};
pub use peer::WithPeer;
pub use routing::source_of;
pub use runtime::{BoxTask, FuturesIo, Io, PeerAddr, Runtime, TaskGuard, TaskHandle, Timer};
pub use session::{
    connect_session, connect_session_with, serve_sessions, serve_sessions_hooked, AnswerError, ConnError, ConnReceiver,
    ConnSender, Connection, Goodbye, IncomingOpen, LostConnection, OpenError, ReconnectingSession, RenewError, Renewal,
    Reopened, SessionAcceptor, SessionAcceptorStats, SessionEvent, SessionHandle, SessionId, SessionStats,
    UnackedMessage, Unacknowledged, WRITE_CHUNK,
};
pub use shared::{ConduitEvent, DialFailure, LinkDownCause, ResumeTiming, Stats};
pub use shutdown::ShutdownReport;
pub use summary::{AcceptorSummary, Refusals};
pub use tasks::live_tasks;
