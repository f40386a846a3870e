//! The README's own `replay` examples, run as written (with the test build of the binary):
//! each must succeed and print nothing on stderr but its throughput line (issue 16: the
//! `replay-data/*.jsonl` example printed a warning from a synthetic hostile file).

use std::path::Path;

use crate::support::run_to_end;

const PREFIX: &str = "cargo run --release -- replay ";

/// Expands a `dir/prefix*suffix` argument the way a shell would (sorted); any other argument
/// is returned as it is.
fn expand(root: &Path, arg: &str) -> Vec<String> {
    let Some((prefix, suffix)) = arg.split_once('*') else {
        return vec![arg.to_owned()];
    };
    let (dir, name_prefix) = prefix.rsplit_once('/').unwrap_or((".", prefix));
    let mut names: Vec<String> = std::fs::read_dir(root.join(dir))
        .expect("the glob's directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(name_prefix) && n.ends_with(suffix))
        .map(|n| format!("{dir}/{n}"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "{arg} matches nothing");
    names
}

#[test]
fn the_readme_replay_examples_run_without_warnings() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let commands: Vec<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix(PREFIX))
        .map(|rest| rest.split('#').next().unwrap_or("").trim())
        .collect();
    assert_eq!(
        commands.len(),
        2,
        "the README's replay examples: {commands:?}"
    );
    for command in commands {
        let mut args = vec!["replay".to_owned()];
        for word in command.split_whitespace() {
            args.extend(expand(root, word).into_iter().map(|a| {
                if a.starts_with("replay-data/") {
                    root.join(&a).display().to_string()
                } else {
                    a
                }
            }));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = run_to_end(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{command}: {stderr}");
        assert!(!output.stdout.is_empty(), "{command}: no output");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{command}: only the summary line: {stderr}");
        assert!(lines[0].starts_with("replayed "), "{command}: {stderr}");
    }
}
