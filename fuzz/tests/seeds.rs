//! Replays the committed seed corpus (`seeds/<target>/`) and a deterministic sweep of
//! pseudo-random inputs through every target's check, on a stable toolchain, without
//! libFuzzer: `cargo test --manifest-path fuzz/Cargo.toml`.

use std::path::Path;

#[test]
fn every_seed_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let mut total = 0;
    for target in sotto_fuzz::TARGETS {
        let dir = root.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("seeds/{target}: {e}"))
            .map(|e| e.expect("dir entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no seeds for {target}");
        for f in files {
            let data = std::fs::read(&f).expect("readable seed");
            sotto_fuzz::run_target(target, &data);
            total += 1;
        }
    }
    assert!(total > 0);
}

#[test]
fn pseudo_random_sweep() {
    // xorshift64*: deterministic, so a failure here reproduces exactly.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    for target in sotto_fuzz::TARGETS {
        for round in 0..300 {
            let len = (next() % 600) as usize;
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let r = std::panic::catch_unwind(|| sotto_fuzz::run_target(target, &data));
            assert!(r.is_ok(), "{target} round {round} failed on {data:02x?}");
        }
    }
}

#[test]
fn state_import_survives_every_single_byte_corruption_of_its_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/state_import");
    let mut seeds = 0;
    for entry in std::fs::read_dir(dir).expect("seeds/state_import") {
        let data = std::fs::read(entry.expect("dir entry").path()).expect("readable seed");
        seeds += 1;
        // Under each importing configuration as is, then every byte of the state flipped.
        for sel in 0..3u8 {
            let mut d = data.clone();
            d[0] = sel;
            sotto_fuzz::state::run(&d);
        }
        for at in 1..data.len() {
            for flip in [0x01u8, 0xff] {
                let mut d = data.clone();
                d[at] ^= flip;
                sotto_fuzz::state::run(&d);
            }
        }
    }
    assert!(seeds >= 4, "state seeds present");
}
