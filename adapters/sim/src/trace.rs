//! `SOTTO_TRACE=1`: the driver's `tracing` events printed to stderr with the virtual time,
//! for reading what a failing seed did.

use std::cell::Cell;
use std::fmt::Write as _;
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

thread_local! {
    static NOW: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// The executor tells the time it has reached (for the trace's timestamps).
pub(crate) fn set_now(now: Duration) {
    NOW.with(|n| n.set(now));
}

struct Printer;

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl Subscriber for Printer {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut f = Fields(String::new());
        event.record(&mut f);
        let now = NOW.with(Cell::get);
        eprintln!("[{:>12.6}s] {}{}", now.as_secs_f64(), event.metadata().level(), f.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Run `f` with the driver's events printed, if `SOTTO_TRACE` is set.
pub fn traced<T>(f: impl FnOnce() -> T) -> T {
    if std::env::var_os("SOTTO_TRACE").is_some() {
        tracing::subscriber::with_default(Printer, f)
    } else {
        f()
    }
}
