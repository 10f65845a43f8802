//! The raw stable-conduit acceptor's routing of fresh links to sessions, by the ClientHello
//! they opened with. (The session acceptor routes through the core endpoint, which hosts
//! session-layer sessions; bare conduits for vox peers are routed here.)
//!
//! A fresh ClientHello makes a new session; a resume goes to the session that issued the
//! presented key (its current key, or the one presented on its latest resume, which the core
//! still honours until the new key has been used, so a lost ServerHello does not lose the
//! session); anything else is answered REJECTED.
//!
//! Each session publishes its keys here *before* its ServerHello is written, so an initiator
//! can never present a key the router does not know yet.

use std::sync::{Arc, Mutex, MutexGuard};

use futures::task::AtomicWaker;
use sotto_proto::wire::ClientHello;
use sotto_proto::ResumeKey;

/// A link whose ClientHello has been read, on its way to a session.
#[derive(Debug)]
pub(crate) struct NewLink<S> {
    pub(crate) io: S,
    pub(crate) hello: ClientHello,
}

/// One session's mailbox for its next link. A newer link replaces one not yet taken (the
/// older stream is dropped, closing it): the newest attempt is the one the initiator waits on.
#[derive(Debug)]
pub(crate) struct LinkSlot<S> {
    link: Mutex<Option<NewLink<S>>>,
    waker: AtomicWaker,
}

impl<S> LinkSlot<S> {
    pub(crate) fn new(first: Option<NewLink<S>>) -> Self {
        Self { link: Mutex::new(first), waker: AtomicWaker::new() }
    }

    fn lock(&self) -> MutexGuard<'_, Option<NewLink<S>>> {
        self.link.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn put(&self, link: NewLink<S>) {
        let old = self.lock().replace(link);
        drop(old);
        self.waker.wake();
    }

    /// Take the waiting link, or register to be woken when one arrives.
    pub(crate) fn poll_take(&self, cx: &std::task::Context<'_>) -> Option<NewLink<S>> {
        self.waker.register(cx.waker());
        self.lock().take()
    }
}

/// Where a ClientHello goes.
pub(crate) enum Route<S> {
    /// Start a new session.
    Fresh,
    /// Hand the link to this session.
    Resume(Arc<LinkSlot<S>>),
    /// Nobody issued that key (expired, or the acceptor restarted): answer REJECTED.
    Reject,
}

#[derive(Debug)]
struct Entry<S> {
    id: u64,
    keys: [Option<ResumeKey>; 2],
    slot: Arc<LinkSlot<S>>,
}

/// The table of live sessions and the keys they accept.
#[derive(Debug)]
pub(crate) struct Router<S> {
    entries: Mutex<(u64, Vec<Entry<S>>)>,
}

impl<S> Router<S> {
    pub(crate) fn new() -> Self {
        Self { entries: Mutex::new((0, Vec::new())) }
    }

    fn lock(&self) -> MutexGuard<'_, (u64, Vec<Entry<S>>)> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decide where a link that opened with `hello` goes.
    pub(crate) fn route(&self, hello: &ClientHello) -> Route<S> {
        let Some(key) = hello.resume_key else { return Route::Fresh };
        let table = self.lock();
        // Compare against every key (constant time each) rather than stopping early.
        let mut found = None;
        for e in &table.1 {
            let hit = e.keys.iter().flatten().fold(false, |acc, k| acc | k.ct_eq(&key));
            if hit && found.is_none() {
                found = Some(Arc::clone(&e.slot));
            }
        }
        found.map_or(Route::Reject, Route::Resume)
    }

    /// Register a new session's mailbox; returns its entry id.
    pub(crate) fn insert(&self, slot: Arc<LinkSlot<S>>) -> u64 {
        let mut table = self.lock();
        table.0 += 1;
        let id = table.0;
        table.1.push(Entry { id, keys: [None, None], slot });
        id
    }

    /// The keys session `id` accepts now: the one it just issued, and the one presented on
    /// its latest resume.
    pub(crate) fn publish(&self, id: u64, current: Option<ResumeKey>, presented: Option<ResumeKey>) {
        if let Some(e) = self.lock().1.iter_mut().find(|e| e.id == id) {
            e.keys = [current, presented];
        }
    }

    /// Session `id` is over: its keys route nowhere from now on.
    pub(crate) fn remove(&self, id: u64) {
        self.lock().1.retain(|e| e.id != id);
    }

    /// Live sessions.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().1.len()
    }
}

/// A session's registration, removed when the session's driver ends.
#[derive(Debug)]
pub(crate) struct Registration<S> {
    pub(crate) router: Arc<Router<S>>,
    pub(crate) id: u64,
    pub(crate) slot: Arc<LinkSlot<S>>,
}

impl<S> Drop for Registration<S> {
    fn drop(&mut self) {
        self.router.remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(key: Option<[u8; 16]>) -> ClientHello {
        ClientHello { resume_key: key.map(ResumeKey), last_received: None, ext: true }
    }

    #[test]
    fn routes_fresh_resume_and_unknown() {
        let r: Router<()> = Router::new();
        assert!(matches!(r.route(&hello(None)), Route::Fresh));
        let slot = Arc::new(LinkSlot::new(None));
        let id = r.insert(Arc::clone(&slot));
        assert!(matches!(r.route(&hello(Some([1; 16]))), Route::Reject));
        r.publish(id, Some(ResumeKey([1; 16])), None);
        assert!(matches!(r.route(&hello(Some([1; 16]))), Route::Resume(_)));
        // After a resume presenting key 1 that issued key 2, both route (lost ServerHello).
        r.publish(id, Some(ResumeKey([2; 16])), Some(ResumeKey([1; 16])));
        assert!(matches!(r.route(&hello(Some([1; 16]))), Route::Resume(_)));
        assert!(matches!(r.route(&hello(Some([2; 16]))), Route::Resume(_)));
        r.remove(id);
        assert!(matches!(r.route(&hello(Some([2; 16]))), Route::Reject));
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn newer_link_replaces_a_waiting_one() {
        let slot = LinkSlot::new(Some(NewLink { io: 1u8, hello: hello(None) }));
        slot.put(NewLink { io: 2u8, hello: hello(None) });
        let waker = futures::task::noop_waker();
        let cx = std::task::Context::from_waker(&waker);
        assert_eq!(slot.poll_take(&cx).map(|l| l.io), Some(2));
        assert!(slot.poll_take(&cx).is_none());
    }
}
