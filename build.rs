//! Build metadata for `prefect_exporter_build_info`: the source's git revision and the
//! compiler's version, as compile-time environment variables of the crate.
//!
//! The revision is `PREFECT_EXPORTER_REVISION` when set (for builds from a source archive),
//! else the commit of the git checkout being built (when git is installed and the checkout is
//! this crate's own), else `unknown`. Only local commands run; never the network.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PREFECT_EXPORTER_REVISION");
    let revision = std::env::var("PREFECT_EXPORTER_REVISION")
        .ok()
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .or_else(git_revision)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=PREFECT_EXPORTER_REVISION={revision}");

    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    // `rustc 1.89.0 (29483883e 2025-08-04)` -> `1.89.0`
    let rustc_version = output(&rustc, &["--version"])
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=PREFECT_EXPORTER_RUSTC_VERSION={rustc_version}");
}

/// The checked-out commit (12 hex digits), when the crate's directory is the top of a git
/// work tree (not a directory inside some other repository). Asks cargo to run this again
/// when the checkout moves: HEAD, the branch it points to, and the packed refs.
fn git_revision() -> Option<String> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    let top = output("git", &["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != Path::new(&manifest_dir).canonicalize().ok()? {
        return None;
    }
    let revision = output("git", &["rev-parse", "--short=12", "HEAD"])?;
    let branch = output("git", &["symbolic-ref", "-q", "HEAD"]);
    for git_path in ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref()) {
        if let Some(path) = output("git", &["rev-parse", "--git-path", git_path]) {
            // A path that does not exist would make cargo run this script on every build.
            if Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    Some(revision)
}

/// A command's trimmed standard output, when it ran and succeeded.
fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}
