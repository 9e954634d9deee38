//! The `eventsd` binary: the control CLI, which also runs the master.

fn main() {
    std::process::exit(eventsd::cli::main());
}
