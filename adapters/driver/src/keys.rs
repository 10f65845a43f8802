//! Randomness for resume keys from the operating system. The endpoint mints the key from it
//! (`Endpoint::mint_key`: the bytes themselves, or an issuer-tagged key for a worker of an
//! acceptor group).

/// 16 bytes of the operating system's randomness, never all zero; `None` if it has none
/// (then issue no key: the conduit refuses the zero key, so the handshake fails rather than
/// issuing a guessable one).
pub(crate) fn random_key_bytes() -> Option<[u8; 16]> {
    let mut bytes = [0u8; 16];
    loop {
        getrandom::fill(&mut bytes).ok()?;
        if bytes != [0; 16] {
            return Some(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_bytes_differ_and_are_never_zero() {
        let a = super::random_key_bytes().expect("OS randomness");
        let b = super::random_key_bytes().expect("OS randomness");
        assert_ne!(a, [0; 16]);
        assert_ne!(a, b);
    }
}
