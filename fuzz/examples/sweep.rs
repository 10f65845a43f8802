//! Run pseudo-random inputs through one target's check outside libFuzzer (a quick smoke test
//! of a harness change): `cargo run --release --manifest-path fuzz/Cargo.toml --example sweep
//! -- <target> [rounds] [seed] [max_len]`. The first failing input is saved as
//! `/tmp/<target>-fail` for `replay`.
fn main() {
    let mut args = std::env::args().skip(1);
    let target = args.next().expect("target");
    let n: usize = args.next().map_or(1000, |s| s.parse().expect("n"));
    let seed: u64 = args.next().map_or(1, |s| s.parse().expect("seed"));
    let maxlen: u64 = args.next().map_or(2000, |s| s.parse().expect("maxlen"));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ seed;
    let mut next = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    std::panic::set_hook(Box::new(|_| {}));
    for round in 0..n {
        let len = (next() % maxlen) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let t = target.clone();
        let d = data.clone();
        if let Err(e) = std::panic::catch_unwind(move || sotto_fuzz::run_target(&t, &d)) {
            let msg = e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
            let path = format!("/tmp/{target}-fail");
            std::fs::write(&path, &data).expect("write");
            println!("round {round}: {msg:?} -> {path}");
            std::process::exit(1);
        }
    }
    println!("{n} rounds ok");
}
