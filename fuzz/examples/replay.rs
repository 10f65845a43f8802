//! Run one input through a target's check outside libFuzzer, e.g. to reproduce a crash with
//! a trace: `SOTTO_FUZZ_TRACE=1 cargo run --manifest-path fuzz/Cargo.toml --example replay --
//! pair fuzz/artifacts/pair/crash-...`.

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(target), Some(path)) = (args.next(), args.next()) else {
        eprintln!("usage: replay <target> <input file>");
        std::process::exit(2);
    };
    let data = std::fs::read(&path).expect("readable input");
    sotto_fuzz::run_target(&target, &data);
    println!("{target}: {path} passes");
}
