//! `eventsctl`: the phpd-like control program (start, stop, reload, status...), the same
//! commands as `eventsd COMMAND` but `run`.

fn main() {
    std::process::exit(eventsd::cli::ctl_main());
}
