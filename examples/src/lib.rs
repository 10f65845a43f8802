//! Runnable example programs for sotto; see the `[[example]]`s of this package and the
//! repository README ("Examples"). This library is empty.
#![forbid(unsafe_code)]
