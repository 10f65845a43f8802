//! Serial-number arithmetic (RFC 1982) between the u32 sequence numbers on the wire and the
//! u64 counters the conduit keeps. Internally nothing wraps: a u64 at a billion frames a
//! second lasts for centuries. A wire value is expanded to the u64 nearest a reference.

/// Expand `wire` to the u64 whose low 32 bits equal it and that lies in
/// `[reference - 2^31, reference + 2^31)`. `None` if that would be negative.
#[must_use]
pub(crate) fn expand(wire: u32, reference: u64) -> Option<u64> {
    let delta = i64::from(wire.wrapping_sub(reference as u32) as i32);
    reference.checked_add_signed(delta)
}

/// The wire form of the count `n` of frames received: `last_received = n - 1`, absent when 0.
#[must_use]
pub(crate) fn last_of(count: u64) -> Option<u32> {
    count.checked_sub(1).map(|v| v as u32)
}

/// The count of frames a wire `last_received`/ack means, expanded near `reference`.
#[must_use]
pub(crate) fn count_of(last: Option<u32>, reference: u64) -> Option<u64> {
    match last {
        None => Some(0),
        Some(l) => expand(l.wrapping_add(1), reference),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_across_wrap() {
        assert_eq!(expand(0, 1 << 32), Some(1 << 32));
        assert_eq!(expand(u32::MAX, 1 << 32), Some((1 << 32) - 1));
        assert_eq!(expand(5, 3), Some(5));
        assert_eq!(expand(u32::MAX, 0), None);
        assert_eq!(expand(1, (1 << 32) + 0xffff_fff0), Some((2 << 32) + 1));
    }

    #[test]
    fn counts() {
        assert_eq!(last_of(0), None);
        assert_eq!(last_of(1 << 32), Some(u32::MAX));
        assert_eq!(count_of(Some(u32::MAX), 1 << 32), Some(1 << 32));
        assert_eq!(count_of(None, 77), Some(0));
        assert_eq!(count_of(Some(4), 3), Some(5));
    }
}
