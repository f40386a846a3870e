//! The layer rules of `src/lib.rs`, checked on the source: no import circle between the
//! top-level modules of `src/`, no import against the layer table, and no source file with
//! more than 600 lines of non-test code.
//!
//! Imports are read as text: every `crate::` path (in `use` items and inline), outside
//! comments and outside test-only code (`#[cfg(test)]` items and the files they declare).
//! `LAYERS_SRC=/path/to/src cargo test --test integration layers` checks another tree (an
//! older checkout, say) against the same rules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module -> the top-level modules it imports.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn src_dir() -> PathBuf {
    std::env::var_os("LAYERS_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/state/record.rs` -> `state`), or `None` for
/// the crate root and the binary.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" => None,
        name => Some(name.trim_end_matches(".rs").to_owned()),
    }
}

/// The text of `source` without comments and without `#[cfg(test)]` items (the item after
/// the attribute, up to its `;` or its matching `}`), and the names of test-only `mod x;`
/// declarations (files that hold test code only).
fn production_code(source: &str) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut test_modules = Vec::new();
    let mut lines = source.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        if trimmed.starts_with("#[cfg(test)]") {
            let mut depth = 0i32;
            let mut opened = false;
            for item in lines.by_ref() {
                let code = item.split("//").next().unwrap_or("");
                if !opened {
                    if let Some(name) = code
                        .trim()
                        .trim_start_matches("pub(crate) ")
                        .strip_prefix("mod ")
                        .and_then(|rest| rest.strip_suffix(';'))
                    {
                        test_modules.push(name.trim().to_owned());
                        break;
                    }
                }
                depth += code.matches('{').count() as i32 - code.matches('}').count() as i32;
                opened |= code.contains('{');
                if (opened && depth <= 0) || (!opened && code.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        out.push_str(line.split("//").next().unwrap_or(""));
        out.push('\n');
    }
    (out, test_modules)
}

/// The top-level modules named by `crate::` paths in `code`, including grouped imports
/// (`use crate::{a::x, b}`).
fn imported_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        let preceded_by_ident = rest[..at]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        if !preceded_by_ident {
            if let Some(group) = after.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for part in group[..end].split(',') {
                    let name = part.trim().split("::").next().unwrap_or("").trim();
                    if !name.is_empty() {
                        found.insert(name.to_owned());
                    }
                }
            } else {
                let name: String = after
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        }
        rest = after;
    }
    found
}

/// The import graph of the top-level modules of `src`, and each file's non-test line count.
fn scan(src: &Path) -> (Graph, Vec<(PathBuf, usize)>) {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut test_only: BTreeSet<PathBuf> = BTreeSet::new();
    let mut parsed = Vec::new();
    for file in &files {
        let source = std::fs::read_to_string(file).expect("readable source file");
        let (code, test_modules) = production_code(&source);
        let dir = if file
            .file_name()
            .is_some_and(|n| n == "mod.rs" || n == "lib.rs")
        {
            file.parent().expect("a parent").to_path_buf()
        } else {
            file.with_extension("")
        };
        for name in test_modules {
            test_only.insert(dir.join(format!("{name}.rs")));
        }
        parsed.push((file.clone(), code));
    }
    let mut graph = Graph::new();
    let mut sizes = Vec::new();
    for (file, code) in parsed {
        if test_only.contains(&file) {
            continue;
        }
        sizes.push((file.clone(), code.lines().count()));
        let Some(module) = top_module(src, &file) else {
            continue;
        };
        let imports = graph.entry(module.clone()).or_default();
        imports.extend(imported_modules(&code).into_iter().filter(|m| *m != module));
    }
    (graph, sizes)
}

/// Every cycle's members, one list per strongly connected component of two or more modules.
fn circles(graph: &Graph) -> Vec<Vec<String>> {
    let reaches = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(module) = stack.pop() {
            for next in graph.get(&module).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|m| (m, reaches(m))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for module in graph.keys() {
        if done.contains(module) {
            continue;
        }
        let component: Vec<String> = graph
            .keys()
            .filter(|other| {
                *other == module
                    || (reach[module].contains(*other) && reach[other].contains(module))
            })
            .cloned()
            .collect();
        done.extend(component.iter().cloned());
        if component.len() > 1 {
            out.push(component);
        }
    }
    out
}

/// The layer table of `lib.rs`: layer -> the layers it may import.
fn layer_table(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("src/lib.rs");
    let mut table = BTreeMap::new();
    for line in lib.lines() {
        let Some(row) = line.strip_prefix("//! | `") else {
            continue;
        };
        let cells: Vec<&str> = row.split(" | ").collect();
        let layer = cells[0].trim_end_matches('`').to_owned();
        let allowed = cells
            .last()
            .expect("a row with cells")
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        table.insert(layer, allowed);
    }
    table
}

#[test]
fn no_import_circle_between_top_level_modules() {
    let (graph, _) = scan(&src_dir());
    let found = circles(&graph);
    assert!(
        found.is_empty(),
        "import circles between top-level modules of src/: {found:?}\nimports: {graph:#?}"
    );
}

#[test]
fn every_import_follows_the_layer_table_in_lib_rs() {
    let src = src_dir();
    let table = layer_table(&src);
    assert!(table.len() >= 10, "lib.rs holds the layer table: {table:?}");
    let (graph, _) = scan(&src);
    let mut wrong = Vec::new();
    for (module, imports) in &graph {
        let Some(allowed) = table.get(module) else {
            wrong.push(format!("{module} is not in the layer table"));
            continue;
        };
        for import in imports {
            if !allowed.contains(import) {
                wrong.push(format!("{module} imports {import}"));
            }
        }
    }
    for layer in table.keys() {
        if !graph.contains_key(layer) {
            wrong.push(format!("the table names {layer}, which src/ does not have"));
        }
    }
    assert!(wrong.is_empty(), "against the layer table: {wrong:#?}");
}

#[test]
fn no_source_file_has_more_than_600_lines_of_non_test_code() {
    let (_, sizes) = scan(&src_dir());
    let long: Vec<_> = sizes.iter().filter(|(_, n)| *n > 600).collect();
    assert!(long.is_empty(), "files over 600 non-test lines: {long:?}");
}

#[test]
fn the_checker_finds_circles_and_test_code() {
    let graph: Graph = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(m, to)| (m.to_owned(), to.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(circles(&graph), vec![vec!["a", "b", "c"]]);
    let (code, tests) = production_code(
        "use crate::a::x;\n// crate::b\n#[cfg(test)]\nmod tests {\n    use crate::c;\n}\n#[cfg(test)]\npub(crate) mod support;\nfn f() { crate::{d::y, e}; }\n",
    );
    assert_eq!(tests, vec!["support"]);
    assert_eq!(
        imported_modules(&code).into_iter().collect::<Vec<_>>(),
        vec!["a", "d", "e"]
    );
}
