//! Records the commit being built, for `eventsd_build_info{commit}` and `--version`:
//! `EVENTSD_COMMIT` when the packager sets it, else `git rev-parse` when built from a
//! checkout, else nothing.

fn main() {
    println!("cargo:rerun-if-env-changed=EVENTSD_COMMIT");
    for path in commit_files() {
        println!("cargo:rerun-if-changed={path}");
    }
    let commit = std::env::var("EVENTSD_COMMIT")
        .ok()
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]));
    let commit = commit.filter(|c| !c.is_empty());
    if let Some(commit) = &commit {
        println!("cargo:rustc-env=EVENTSD_COMMIT={commit}");
    }
    // What `--version` prints: the version, and the commit when known.
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let line = match &commit {
        Some(commit) => format!("{version} (commit {commit})"),
        None => version,
    };
    println!("cargo:rustc-env=EVENTSD_VERSION_LINE={line}");
}

/// The files a new commit changes: `HEAD` and the branch it names, where git keeps them
/// (in a worktree `.git` is a file). Only those that exist (a path that does not would
/// make cargo run this script, and rebuild the crate, at every build), and not the
/// folder of every branch (a commit on another worktree's would rebuild this one).
fn commit_files() -> Vec<String> {
    let mut refs = vec!["HEAD".to_string()];
    refs.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    refs.iter()
        .filter_map(|name| git(&["rev-parse", "--git-path", name]))
        .filter(|path| std::path::Path::new(path).exists())
        .collect()
}

/// What `git ARGS` prints, trimmed; `None` outside a checkout or without git.
fn git(args: &[&str]) -> Option<String> {
    let output = std::process::Command::new("git").args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}
