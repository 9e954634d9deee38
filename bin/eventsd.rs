//! `eventsd`: the daemon's program. `eventsd run` is the master in the foreground (what
//! systemd starts); every other command is the control CLI, as `eventsctl` has it.

fn main() {
    std::process::exit(eventsd::cli::daemon_main());
}
