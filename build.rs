//! Records the commit being built, for `eventsd_build_info{commit}`: `EVENTSD_COMMIT` when
//! the packager sets it, else `git rev-parse` when built from a checkout, else nothing.

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
    if let Some(commit) = commit.filter(|c| !c.is_empty()) {
        println!("cargo:rustc-env=EVENTSD_COMMIT={commit}");
    }
}
