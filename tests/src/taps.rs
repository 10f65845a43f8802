//! Ready-made [`Tap`]s for scenario tests: record frames, drop or rewrite the ones that match.
//! Taps are test hooks and may allocate.

use std::cell::RefCell;
use std::rc::Rc;

use crate::sim::Tap;

/// Frames seen by a recording tap: (link serial, frame bytes without prefix).
pub type Recorded = Rc<RefCell<Vec<(u64, Vec<u8>)>>>;

/// A tap that records every frame and lets it through.
#[must_use]
pub fn recorder() -> (Tap, Recorded) {
    let log: Recorded = Rc::default();
    let l = Rc::clone(&log);
    let tap: Tap = Box::new(move |serial, frame| {
        l.borrow_mut().push((serial, frame.clone()));
        true
    });
    (tap, log)
}

/// A tap that drops every frame for which `f(serial, frame)` is true.
#[must_use]
pub fn drop_if(mut f: impl FnMut(u64, &[u8]) -> bool + 'static) -> Tap {
    Box::new(move |serial, frame| !f(serial, frame))
}

/// A tap that rewrites the first frame written on link `serial` with `f`, once.
#[must_use]
pub fn rewrite_first_on(serial: u64, f: impl FnOnce(&mut Vec<u8>) + 'static) -> Tap {
    let mut f = Some(f);
    Box::new(move |s, frame| {
        if s == serial {
            if let Some(f) = f.take() {
                f(frame);
            }
        }
        true
    })
}

/// A tap that records every frame and also drops those for which `f` is true.
#[must_use]
pub fn record_and_drop_if(mut f: impl FnMut(u64, &[u8]) -> bool + 'static) -> (Tap, Recorded) {
    let log: Recorded = Rc::default();
    let l = Rc::clone(&log);
    let tap: Tap = Box::new(move |serial, frame| {
        l.borrow_mut().push((serial, frame.clone()));
        !f(serial, frame)
    });
    (tap, log)
}
