//! Panics counted per thread: the driver catches a panic at its task boundary (the session
//! ends as evicted), so a run checks this count to see that nothing panicked at all.

use std::cell::Cell;
use std::sync::Once;

thread_local! {
    static PANICS: Cell<u64> = const { Cell::new(0) };
}

static HOOK: Once = Once::new();

/// Install the counting panic hook (once per process; it chains to the previous hook).
pub fn install() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|p| p.set(p.get() + 1));
            previous(info);
        }));
    });
}

/// Panics on this thread since the hook was installed (caught ones included).
#[must_use]
pub fn count() -> u64 {
    PANICS.with(Cell::get)
}
