//! `ringway-bench`: the benchmark suite's backend, load generator and suite runner.

fn main() {
    eprintln!("ringway-bench: not built yet");
    std::process::exit(2);
}
