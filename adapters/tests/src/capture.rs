//! A `tracing` subscriber that records sotto's spans and events, for tests that assert what
//! a server's logs would show: each event's level, message and fields, and the span it was
//! emitted in (with that span's fields as they are now, so a field recorded after the
//! span's creation, such as a session's `peer`, is seen).
//!
//! Sessions run on runtime worker threads, so the subscriber is the process's global
//! default ([`install`]); the tests of one binary take turns ([`Capture::exclusive`]) and
//! each starts from an empty record.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// A span as recorded: its name and fields (as of now), and its parent.
#[derive(Clone, Debug)]
pub struct SpanRecord {
    /// The span's name.
    pub name: &'static str,
    /// Its fields, each as its `Debug` text (a `display` field as its `Display` text).
    pub fields: BTreeMap<String, String>,
    /// The span it was created in.
    pub parent: Option<u64>,
    /// Its callsite's metadata.
    pub metadata: &'static Metadata<'static>,
}

/// An event as recorded.
#[derive(Clone, Debug)]
pub struct EventRecord {
    /// Its level.
    pub level: Level,
    /// Its message.
    pub message: String,
    /// Its other fields.
    pub fields: BTreeMap<String, String>,
    /// The innermost span it was emitted in.
    pub span: Option<u64>,
}

#[derive(Default)]
struct State {
    spans: HashMap<u64, SpanRecord>,
    events: Vec<EventRecord>,
}

/// The recording subscriber (see the module docs).
pub struct Capture {
    /// The most verbose level recorded (a `Level` as its `LevelFilter` index).
    max: AtomicUsize,
    next_id: AtomicU64,
    state: Mutex<State>,
    /// Calls into the subscriber for spans and events (new spans, records, events, enters,
    /// exits), however they were filtered.
    calls: AtomicU64,
    /// A test has its turn.
    busy: Mutex<bool>,
    free: Condvar,
}

/// A test's turn with the recorder (see [`Capture::exclusive`]); the next test's starts when
/// it is dropped.
#[must_use]
pub struct Turn(&'static Capture);

impl Drop for Turn {
    fn drop(&mut self) {
        *self.0.busy.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = false;
        self.0.free.notify_one();
    }
}

thread_local! {
    /// The spans this thread is in, innermost last.
    static STACK: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

struct Fields<'a> {
    message: Option<&'a mut String>,
    fields: &'a mut BTreeMap<String, String>,
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.fields.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        match (&mut self.message, field.name()) {
            (Some(m), "message") => **m = text,
            _ => {
                self.fields.insert(field.name().to_owned(), text);
            }
        }
    }
}

fn level_index(level: LevelFilter) -> usize {
    match level.into_level() {
        None => 0,
        Some(Level::ERROR) => 1,
        Some(Level::WARN) => 2,
        Some(Level::INFO) => 3,
        Some(Level::DEBUG) => 4,
        Some(Level::TRACE) => 5,
    }
}

impl Capture {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Take this binary's turn (tests share the one global subscriber): clears what was
    /// recorded and records `max` and less verbose from now on. Hold the guard for the test.
    pub fn exclusive(&'static self, max: Level) -> Turn {
        let mut busy = self.busy.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while *busy {
            busy = self.free.wait(busy).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *busy = true;
        drop(busy);
        let turn = Turn(self);
        self.max.store(level_index(LevelFilter::from_level(max)), Ordering::SeqCst);
        tracing::callsite::rebuild_interest_cache();
        let mut s = self.lock();
        s.events.clear();
        drop(s);
        turn
    }

    /// Calls into the subscriber for spans and events so far (see [`Capture::calls`]).
    #[must_use]
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// The events recorded so far.
    #[must_use]
    pub fn events(&self) -> Vec<EventRecord> {
        self.lock().events.clone()
    }

    /// The span `id` as it is now.
    #[must_use]
    pub fn span(&self, id: u64) -> Option<SpanRecord> {
        self.lock().spans.get(&id).cloned()
    }

    /// The spans named `name` whose field `field` is `value`, with their ids.
    #[must_use]
    pub fn spans_where(&self, name: &str, field: &str, value: &str) -> Vec<(u64, SpanRecord)> {
        let s = self.lock();
        let mut v: Vec<(u64, SpanRecord)> = s
            .spans
            .iter()
            .filter(|(_, r)| r.name == name && r.fields.get(field).is_some_and(|f| f == value))
            .map(|(id, r)| (*id, r.clone()))
            .collect();
        v.sort_by_key(|(id, _)| *id);
        v
    }

    /// The events whose message contains `text`.
    #[must_use]
    pub fn events_with(&self, text: &str) -> Vec<EventRecord> {
        self.lock().events.iter().filter(|e| e.message.contains(text)).cloned().collect()
    }
}

/// The global subscriber, delegating to the one [`Capture`].
struct Global(&'static Capture);

impl Subscriber for Global {
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        let max = self.0.max.load(Ordering::Relaxed);
        meta.target().starts_with("sotto") && level_index(LevelFilter::from_level(*meta.level())) <= max
    }
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(match self.0.max.load(Ordering::Relaxed) {
            0 => LevelFilter::OFF,
            1 => LevelFilter::ERROR,
            2 => LevelFilter::WARN,
            3 => LevelFilter::INFO,
            4 => LevelFilter::DEBUG,
            _ => LevelFilter::TRACE,
        })
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        self.0.calls.fetch_add(1, Ordering::Relaxed);
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields { message: None, fields: &mut fields });
        let parent = if let Some(p) = attrs.parent() {
            Some(p.into_u64())
        } else if attrs.is_contextual() {
            STACK.with(|s| s.borrow().last().copied())
        } else {
            None
        };
        let metadata = attrs.metadata();
        self.0.lock().spans.insert(id, SpanRecord { name: metadata.name(), fields, parent, metadata });
        Id::from_u64(id)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        self.0.calls.fetch_add(1, Ordering::Relaxed);
        let mut s = self.0.lock();
        if let Some(r) = s.spans.get_mut(&span.into_u64()) {
            values.record(&mut Fields { message: None, fields: &mut r.fields });
        }
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        self.0.calls.fetch_add(1, Ordering::Relaxed);
        let mut message = String::new();
        let mut fields = BTreeMap::new();
        event.record(&mut Fields { message: Some(&mut message), fields: &mut fields });
        let span = if let Some(p) = event.parent() {
            Some(p.into_u64())
        } else if event.is_contextual() {
            STACK.with(|s| s.borrow().last().copied())
        } else {
            None
        };
        let level = *event.metadata().level();
        self.0.lock().events.push(EventRecord { level, message, fields, span });
    }
    fn current_span(&self) -> tracing_core::span::Current {
        let Some(id) = STACK.with(|s| s.borrow().last().copied()) else { return tracing_core::span::Current::none() };
        match self.0.lock().spans.get(&id) {
            Some(r) => tracing_core::span::Current::new(Id::from_u64(id), r.metadata),
            None => tracing_core::span::Current::none(),
        }
    }
    fn enter(&self, span: &Id) {
        self.0.calls.fetch_add(1, Ordering::Relaxed);
        STACK.with(|s| s.borrow_mut().push(span.into_u64()));
    }
    fn exit(&self, span: &Id) {
        self.0.calls.fetch_add(1, Ordering::Relaxed);
        STACK.with(|s| {
            let mut s = s.borrow_mut();
            if let Some(i) = s.iter().rposition(|&x| x == span.into_u64()) {
                s.remove(i);
            }
        });
    }
}

fn leaked(max: Level) -> &'static Capture {
    Box::leak(Box::new(Capture {
        max: AtomicUsize::new(level_index(LevelFilter::from_level(max))),
        next_id: AtomicU64::new(0),
        calls: AtomicU64::new(0),
        state: Mutex::new(State::default()),
        busy: Mutex::new(false),
        free: Condvar::new(),
    }))
}

/// The process's recording subscriber, installed as the global default on first use.
///
/// # Panics
/// If another global subscriber was installed first.
pub fn install() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = leaked(Level::DEBUG);
        tracing::subscriber::set_global_default(Global(capture)).expect("no other global subscriber");
        capture
    })
}

/// A recorder of its own that records `max` and less verbose, and the subscriber to set
/// (for `tracing::subscriber::with_default`, on a thread that runs every task concerned).
#[must_use]
pub fn local(max: Level) -> (&'static Capture, impl Subscriber + Send + Sync) {
    let capture = leaked(max);
    (capture, Global(capture))
}
