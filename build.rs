//! Records the commit being built, for `eventsd_build_info{commit}` and `--version`:
//! `EVENTSD_COMMIT` when the packager sets it, else `git rev-parse` when built from a
//! checkout, else nothing.

fn main() {
    println!("cargo:rerun-if-env-changed=EVENTSD_COMMIT");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let commit = std::env::var("EVENTSD_COMMIT").ok().or_else(|| {
        let output = std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
    });
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
