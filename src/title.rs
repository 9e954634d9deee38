//! Process titles as `ps` shows them, nginx's way: `eventsd: master process /usr/bin/eventsd
//! -c … run`, `eventsd: worker process`, `eventsd: action runner`, `eventsd: cluster link`.
//!
//! Owns the memory of this process's command line. Linux shows `/proc/PID/cmdline` from
//! that memory, so a title is written over it. The environment's strings follow it; once
//! each variable has been given memory of its own (`setenv` copies it), a title may run on
//! over their old bytes, as nginx's `ngx_init_setproctitle` does, and the kernel reads a
//! command line that does not end in NUL on into that space. Called only while one
//! thread runs: by the master before it forks anything, by a child right after its fork.

use std::sync::Mutex;

/// Where titles may be written: the start and length of the command line's memory (with
/// the old environment's, when it follows at once). `None` until `init`, or when
/// `/proc/self/stat` could not be read: titles are then left as they are.
static AREA: Mutex<Option<(usize, usize)>> = Mutex::new(None);

/// Makes room for titles and returns the command line as it was, for the master's title.
pub fn init() -> String {
    let original = std::fs::read("/proc/self/cmdline")
        .map(|bytes| {
            let text = String::from_utf8_lossy(&bytes);
            text.trim_end_matches('\0').replace('\0', " ")
        })
        .unwrap_or_default();
    *lock() = area_of_this_process(move_environment_out());
    original
}

/// Shows `title` as this process's command line (cut to the room there is).
pub fn set(title: &str) {
    let Some((start, len)) = *lock() else { return };
    let bytes = title.as_bytes();
    let kept = bytes.len().min(len - 1);
    // SAFETY: [start, start + len) is this process's command line and environment
    // memory, as the kernel reported it; nothing reads it any more (the arguments were
    // parsed, each variable was copied out by `move_environment_out`), and only one thread
    // runs.
    unsafe {
        let area = start as *mut u8;
        std::ptr::write_bytes(area, 0, len);
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), area, kept);
    }
}

fn lock() -> std::sync::MutexGuard<'static, Option<(usize, usize)>> {
    AREA.lock().unwrap_or_else(|e| e.into_inner())
}

/// The command line's memory, extended over the environment's when that follows at
/// once and every variable was moved out of it: fields 48 to 51 of `/proc/self/stat`
/// (`arg_start`, `arg_end`, `env_start`, `env_end`).
fn area_of_this_process(environment_moved: bool) -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which may hold spaces and parentheses: field 3
    // is the first.
    let fields: Vec<usize> = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .skip(45)
        .take(4)
        .map(|field| field.parse().ok())
        .collect::<Option<_>>()?;
    let [arg_start, arg_end, env_start, env_end] = fields[..] else {
        return None;
    };
    let end = if environment_moved && env_start == arg_end {
        env_end
    } else {
        arg_end
    };
    (end > arg_start + 1).then_some((arg_start, end - arg_start))
}

/// Gives every environment variable memory of its own, so that the old strings may be
/// overwritten; false if one could not be moved (a name `setenv` refuses, such as one
/// holding `=`): its old string must then stay as it is.
fn move_environment_out() -> bool {
    let mut all = true;
    for (name, value) in std::env::vars_os() {
        let bytes = name.as_encoded_bytes();
        if bytes.is_empty() || bytes.contains(&b'=') {
            all = false;
            continue;
        }
        // SAFETY: only one thread runs (see the module comment); `setenv` replaces the
        // variable with a copy, the same name and value.
        unsafe { std::env::set_var(&name, &value) };
    }
    all
}
