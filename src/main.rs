//! `ringway` command line: parse arguments, load config, start shards.

fn main() {
    eprintln!("ringway: not built yet");
    std::process::exit(2);
}
