//! Resume keys from the operating system's randomness.

use sotto_proto::ResumeKey;

/// A fresh random resume key (never the all-zero "absent" key).
pub(crate) fn fresh_key() -> ResumeKey {
    let mut bytes = [0u8; 16];
    loop {
        if getrandom::fill(&mut bytes).is_err() {
            // No OS randomness: refuse to make up a guessable key. The conduit rejects a zero
            // key, so the handshake fails rather than issuing something predictable.
            return ResumeKey::ZERO;
        }
        let key = ResumeKey(bytes);
        if !key.is_zero() {
            return key;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_differ() {
        let a = super::fresh_key();
        let b = super::fresh_key();
        assert!(!a.is_zero());
        assert_ne!(a, b);
    }
}
