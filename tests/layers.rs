//! The layering of the source (docs/ARCHITECTURE.md, "Layers"): every top-level module of
//! `src/` imports only modules of its own layer or below, and no import cycle joins two of them;
//! the load generator's files (`load-tests/src/*.rs`) import each other without a cycle.
//!
//! An import is any `crate::x` path in the code (a `use`, a group `use crate::{x, y::z}`, or an
//! inline `crate::x::f()`); comments are ignored. `super::` paths stay inside a module, so they
//! are not read. A failure names the file, the line and the import.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers of `src/`, bottom first. A module may import modules of its own layer or of a
/// layer below; a new top-level module must be placed here. Same-layer imports are allowed but
/// may not form a cycle.
const LAYERS: &[&[&str]] = &[
    // Settings read from the environment: imports nothing of Echo.
    &["config"],
    // Infrastructure: logging, the database, object storage, the per-client limits.
    &["telemetry", "db", "storage", "limits"],
    // Shared vocabulary: the error type, the metrics registry, the JSON shapes.
    &["error", "metrics", "api_types"],
    // Input rules (parsing and text checks) shared by REST and WebSocket.
    &["extract"],
    // Events and where they are published (`Broker`), delivery through a trait.
    &["broker"],
    // Services: authentication; chats and messages (validate, authorise, commit, publish).
    &["auth", "chat"],
    // AI replies (the `Generation` actor), their cross-node needs behind a trait.
    &["ai"],
    // Video uploads and jobs (`JobSupervisor`, `VideoJob`).
    &["video"],
    // Sessions, rooms, the router; other nodes behind the `Peers` trait.
    &["realtime"],
    // Redis: the cross-node broker, presence and reply copies (implements those traits).
    &["cluster"],
    // What HTTP handlers get.
    &["state"],
    // HTTP: handlers, middleware, extractors, the OpenAPI document, the AI SDK framing.
    &["routes"],
    // The HTTP server and its upgrade hook, which hands WebSockets to `realtime::socket`.
    &["server"],
    // Wiring and running a node.
    &["startup"],
];

/// Files of the crate roots, which declare the modules and are not part of any layer.
const ROOTS: &[&str] = &["lib", "main"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The code with comments blanked out (line structure kept, so line numbers stay right).
/// String literals are kept; a `//` inside one is rare enough in this code base to accept
/// reading the rest of its line as a comment.
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut chars = src.chars().peekable();
    let mut block = 0usize;
    let mut line_comment = false;
    while let Some(c) = chars.next() {
        if c == '\n' {
            line_comment = false;
            out.push('\n');
            continue;
        }
        if line_comment {
            continue;
        }
        if block > 0 {
            if c == '*' && chars.peek() == Some(&'/') {
                chars.next();
                block -= 1;
            } else if c == '/' && chars.peek() == Some(&'*') {
                chars.next();
                block += 1;
            }
            continue;
        }
        if c == '/' && chars.peek() == Some(&'/') {
            line_comment = true;
            continue;
        }
        if c == '/' && chars.peek() == Some(&'*') {
            chars.next();
            block = 1;
            continue;
        }
        out.push(c);
    }
    out
}

/// One `crate::…` import: the top-level name it reaches, and where.
#[derive(Debug, Clone)]
struct Import {
    target: String,
    line: usize,
    text: String,
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every top-level name a file reaches through `crate::`.
fn imports(src: &str) -> Vec<Import> {
    let code = strip_comments(src);
    let lines: Vec<&str> = src.lines().collect();
    let bytes: Vec<char> = code.chars().collect();
    let line_of = |pos: usize| bytes[..pos].iter().filter(|c| **c == '\n').count();
    let mut found = Vec::new();
    let mut i = 0;
    while i + 7 <= bytes.len() {
        let here: String = bytes[i..i + 7].iter().collect();
        // `crate::` not preceded by an identifier character (`$crate::` counts: macros).
        if here != "crate::" || (i > 0 && is_ident(bytes[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        i += 7;
        let line = line_of(start);
        let mut push = |name: String| {
            if !name.is_empty() {
                found.push(Import {
                    target: name,
                    line: line + 1,
                    text: lines.get(line).map_or("", |l| l.trim()).to_string(),
                });
            }
        };
        if bytes.get(i) == Some(&'{') {
            // A group: the names right after `{` or `,` at depth 1.
            let mut depth = 0usize;
            let mut expect_name = false;
            while i < bytes.len() {
                let c = bytes[i];
                match c {
                    '{' => {
                        depth += 1;
                        expect_name = depth == 1;
                        i += 1;
                    }
                    '}' => {
                        depth -= 1;
                        i += 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' => {
                        expect_name = depth == 1;
                        i += 1;
                    }
                    c if is_ident(c) && expect_name => {
                        let mut name = String::new();
                        while i < bytes.len() && is_ident(bytes[i]) {
                            name.push(bytes[i]);
                            i += 1;
                        }
                        expect_name = false;
                        push(name);
                    }
                    _ => i += 1,
                }
            }
        } else {
            let mut name = String::new();
            while i < bytes.len() && is_ident(bytes[i]) {
                name.push(bytes[i]);
                i += 1;
            }
            push(name);
        }
    }
    found
}

/// An edge of the module graph, with the first place it is made.
type Graph = BTreeMap<String, BTreeMap<String, (PathBuf, Import)>>;

/// The top-level module of `file` under `src` (`realtime` for `src/realtime/room.rs`).
fn top_level(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The module graph of the files under `dir`, each file named by `module_of`; imports of names
/// that are not modules (`crate::run!`-style macros, items of the crate root) are left out.
fn graph(dir: &Path, module_of: impl Fn(&Path) -> Option<String>) -> Graph {
    let mut files = Vec::new();
    rust_files(dir, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(f)).collect();
    let mut g: Graph = BTreeMap::new();
    for file in &files {
        let Some(from) = module_of(file) else {
            continue;
        };
        g.entry(from.clone()).or_default();
        let src = fs::read_to_string(file).unwrap();
        for import in imports(&src) {
            if import.target == from || !modules.contains(&import.target) {
                continue;
            }
            g.get_mut(&from)
                .unwrap()
                .entry(import.target.clone())
                .or_insert_with(|| (file.clone(), import));
        }
    }
    g
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct Walk<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(w: &mut Walk<'a>, v: &'a str) {
        w.index.insert(v, w.next);
        w.low.insert(v, w.next);
        w.next += 1;
        w.stack.push(v);
        w.on_stack.insert(v);
        let g = w.g;
        for u in g.get(v).into_iter().flat_map(|e| e.keys()) {
            let u = u.as_str();
            if !w.index.contains_key(u) {
                visit(w, u);
                let low = w.low[v].min(w.low[u]);
                w.low.insert(v, low);
            } else if w.on_stack.contains(u) {
                let low = w.low[v].min(w.index[u]);
                w.low.insert(v, low);
            }
        }
        if w.low[v] == w.index[v] {
            let mut scc = Vec::new();
            while let Some(u) = w.stack.pop() {
                w.on_stack.remove(u);
                scc.push(u.to_string());
                if u == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                w.found.push(scc);
            }
        }
    }
    let mut w = Walk {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in g.keys() {
        if !w.index.contains_key(v.as_str()) {
            visit(&mut w, v);
        }
    }
    w.found
}

/// One line per import that closes a cycle: every edge inside the component.
fn describe_cycles(g: &Graph, base: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for scc in cycles(g) {
        out.push(format!("import cycle between {}:", scc.join(", ")));
        for from in &scc {
            for (to, (file, import)) in &g[from] {
                if scc.contains(to) {
                    out.push(format!(
                        "  {from} -> {to}: {}:{}: {}",
                        file.strip_prefix(base).unwrap_or(file).display(),
                        import.line,
                        import.text
                    ));
                }
            }
        }
    }
    out
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The problems of `src/`: modules missing from [`LAYERS`], upward imports, cycles.
fn src_problems() -> Vec<String> {
    let base = root();
    let src = base.join("src");
    let g = graph(&src, |f| {
        let m = top_level(&src, f);
        (!ROOTS.contains(&m.as_str())).then_some(m)
    });
    let mut problems = Vec::new();
    for module in g.keys() {
        if layer_of(module).is_none() {
            problems.push(format!(
                "src/{module}: a top-level module that is in no layer: add it to LAYERS in \
                 tests/layers.rs (and to docs/ARCHITECTURE.md)"
            ));
        }
    }
    for name in LAYERS.iter().flat_map(|l| l.iter()) {
        if !g.contains_key(*name) {
            problems.push(format!(
                "LAYERS names `{name}`, which is not a module of src/"
            ));
        }
    }
    for (from, edges) in &g {
        let Some(own) = layer_of(from) else { continue };
        for (to, (file, import)) in edges {
            let Some(theirs) = layer_of(to) else { continue };
            if theirs > own {
                problems.push(format!(
                    "upward import: {from} (layer {own}) imports {to} (layer {theirs}) at {}:{}: {}",
                    file.strip_prefix(&base).unwrap_or(file).display(),
                    import.line,
                    import.text
                ));
            }
        }
    }
    problems.extend(describe_cycles(&g, &base));
    problems
}

#[test]
fn src_modules_import_only_their_layer_or_below_and_form_no_cycle() {
    let problems = src_problems();
    assert!(
        problems.is_empty(),
        "the layering of src/ is broken:\n{}\n(allowed order, bottom first: {})",
        problems.join("\n"),
        LAYERS
            .iter()
            .map(|l| l.join(" "))
            .collect::<Vec<_>>()
            .join(" < ")
    );
}

#[test]
fn load_generator_files_form_no_cycle() {
    let base = root();
    let dir = base.join("load-tests").join("src");
    let g = graph(&dir, |f| {
        let name = f.file_stem()?.to_string_lossy().to_string();
        (name != "main").then_some(name)
    });
    assert!(g.len() > 3, "load-tests/src has its files: {:?}", g.keys());
    let problems = describe_cycles(&g, &base);
    assert!(
        problems.is_empty(),
        "the load generator's files import each other in a cycle:\n{}",
        problems.join("\n")
    );
}

#[test]
fn imports_are_read_from_uses_groups_and_inline_paths() {
    let src = r#"
        use crate::a::b;
        use crate::{c, d::{e, f}, g::*};
        // use crate::commented;
        /* crate::blocked */
        fn x() { crate::h::call(); $crate::i::j!(); my_crate::k(); }
    "#;
    let names: Vec<String> = imports(src).into_iter().map(|i| i.target).collect();
    assert_eq!(names, ["a", "c", "d", "g", "h", "i"]);
    let mut g = Graph::new();
    let edge = |to: &str| {
        let import = Import {
            target: to.into(),
            line: 1,
            text: String::new(),
        };
        (to.to_string(), (PathBuf::from("x.rs"), import))
    };
    g.insert("a".into(), [edge("b")].into_iter().collect());
    g.insert("b".into(), [edge("c")].into_iter().collect());
    g.insert("c".into(), [edge("a")].into_iter().collect());
    g.insert("d".into(), [edge("a")].into_iter().collect());
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
}
