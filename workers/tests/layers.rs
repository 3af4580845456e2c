//! The layer guard: a module of `workers/src` may import only modules of a lower layer, so the
//! import graph has no circle and no upward arrow. Workers share a layer, so they never
//! import each other (what two workers share belongs in `runtime` or `model`).
//!
//! A new top-level module fails this test until it is given its layer here, deliberately.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module's layer, lowest first (the same order as `lib.rs` describes).
const LAYERS: &[(&str, u8)] = &[
    ("error", 0),
    ("ids", 0),
    ("config", 1),
    ("model", 2),
    ("render", 2),
    ("io", 3),
    ("store", 4),
    ("runtime", 5),
    ("binder", 6),
    ("router", 6),
    ("deliver", 6),
    ("lifecycle", 6),
    ("listen", 6),
    ("app", 7),
    ("cli", 7),
];

/// Every `crate::<module>` a source text names outside comments, including the members of
/// `use crate::{a, b::c}` groups.
fn references(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let code: String = text
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for member in group[..end].split(',') {
                let name = ident(member.trim());
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// The top-level modules of `src` and every module each one references.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(src).expect("read src") {
        let path = entry.expect("dir entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("utf-8 name")
            .to_owned();
        if name == "bin" || name == "lib" {
            continue;
        }
        let mut files = Vec::new();
        collect(&path, &mut files);
        let refs = edges.entry(name.clone()).or_default();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read source");
            refs.extend(references(&text).into_iter().filter(|r| *r != name));
        }
    }
    edges
}

fn collect(path: &Path, files: &mut Vec<std::path::PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read dir") {
            collect(&entry.expect("dir entry").path(), files);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        files.push(path.to_owned());
    }
}

/// Every import that breaks the layering, as "from -> to (why)".
fn violations(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let layer: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let mut wrong = Vec::new();
    for (from, targets) in edges {
        let Some(&from_layer) = layer.get(from.as_str()) else {
            wrong.push(format!("{from} has no layer: add it to LAYERS"));
            continue;
        };
        for to in targets {
            // Names that are not top-level modules (`crate::Config`, a re-export) are not
            // edges between layers.
            let Some(&to_layer) = layer.get(to.as_str()) else {
                continue;
            };
            if to_layer == from_layer {
                wrong.push(format!("{from} -> {to} (same layer)"));
            } else if to_layer > from_layer {
                wrong.push(format!("{from} -> {to} (upward)"));
            }
        }
    }
    wrong
}

#[test]
fn no_module_imports_its_own_or_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&src);
    assert!(edges.len() >= LAYERS.len(), "found only {:?}", edges.keys());
    let wrong = violations(&edges);
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_guard_sees_upward_sibling_and_unplaced_imports() {
    let text = "use crate::{runtime::WorkerContext, deliver::x};\n\
                // crate::app in a comment is not an import\n\
                fn f() { crate::binder::g(); my_crate::app::h(); }";
    assert_eq!(
        references(text),
        ["binder", "deliver", "runtime"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    let mut edges = BTreeMap::new();
    edges.insert("store".to_owned(), ["runtime".to_owned()].into());
    edges.insert("router".to_owned(), ["deliver".to_owned()].into());
    edges.insert("gadgets".to_owned(), BTreeSet::new());
    edges.insert("model".to_owned(), ["config".to_owned()].into());
    assert_eq!(
        violations(&edges),
        [
            "gadgets has no layer: add it to LAYERS",
            "router -> deliver (same layer)",
            "store -> runtime (upward)",
        ]
    );
}
