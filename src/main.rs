//! `tend`: the command-line entry point.

fn main() {
    eprintln!("tend: not built yet");
    std::process::exit(2);
}
