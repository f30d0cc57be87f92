//! Keeps the seams of issue 12 by reading the sources: no import circle between the
//! top-level modules of `src/`, none between the files of the directory modules in
//! [`FILE_CIRCLES`], and the layering rules of docs/architecture.md ("dependencies point
//! down": a stage may use the ones before it and the leaves).
//!
//! A reference is a `crate::<module>` path (or, between the files of one directory,
//! `super::<file>`) in code: comments, string literals and `#[cfg(test)]` items (and the
//! files of test-only modules) are left out, as tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

/// The leaves: any module may use them; they use only each other.
const LEAVES: &[&str] = &["sip", "body", "numbers", "identity", "clock", "config", "private_file"];

/// Handler modules and the wiring: what a store or a domain handle must never use.
#[rustfmt::skip]
const HANDLERS: &[&str] = &[
    "transport", "transaction", "dialog", "core", "subscription", "notification", "registrar",
    "provisioning", "admin", "cli", "server", "http_listener",
];

/// (module, the modules it must not refer to), from docs/architecture.md.
#[rustfmt::skip]
const FORBIDDEN: &[(&str, &[&str])] = &[
    ("transport", &["transaction", "dialog", "core", "subscription", "resolution", "notification"]),
    ("transaction", &["dialog", "core", "subscription", "resolution", "notification"]),
    ("dialog", &["transaction", "core", "subscription", "resolution", "notification"]),
    ("core", &["dialog", "subscription", "resolution", "notification", "presence", "registrar"]),
    ("resolution", &["subscription", "notification", "dialog", "core"]),
    ("notification", &["subscription", "resolution", "index", "presence"]),
    ("presence", &["subscription"]),
    ("registrar", &["subscription"]),
    ("limits", &["transport", "sip"]),
    ("index", HANDLERS),
    ("budget", HANDLERS),
    ("accounts", HANDLERS),
    ("address_books", HANDLERS),
];

/// (module, the only modules it may refer to).
#[rustfmt::skip]
const ONLY: &[(&str, &[&str])] = &[
    // Each trait with its vocabulary; the domain modules re-export that vocabulary.
    ("storage", &["numbers", "identity", "clock", "sip", "body"]),
    ("sip", LEAVES),
    ("body", LEAVES),
    ("numbers", LEAVES),
    ("identity", LEAVES),
    ("clock", LEAVES),
    ("config", LEAVES),
    ("private_file", LEAVES),
    // Counted from every stage, so it may know none of them: it is handed values.
    ("metrics", LEAVES),
];

/// Directory modules whose files must not import each other in a circle, each with one
/// reference between its files that the scan must find (else the scan is broken).
const FILE_CIRCLES: &[(&str, (&str, &str))] = &[
    ("subscription", ("handler", "record")),
    ("replay", ("runner", "trace")),
];

/// One source file: its path under `src/`, its code (see [`code_of`]) and the modules it
/// declares `#[cfg(test)] mod name;`.
struct File {
    path: PathBuf,
    code: String,
    test_modules: Vec<String>,
}

impl File {
    fn new(path: PathBuf, source: &str) -> File {
        let (code, test_modules) = code_of(source);
        File {
            path,
            code,
            test_modules,
        }
    }
}

/// module → module it refers to → where (the first place seen).
type Graph = BTreeMap<String, BTreeMap<String, String>>;

#[test]
fn no_import_circle_between_modules() {
    let files = read_src();
    let graph = module_graph(&files);
    assert_found(&graph, "subscription", "notification");
    assert_found(&graph, "index", "storage");
    let circles = circles(&graph);
    assert!(
        circles.is_empty(),
        "import circles between modules of src/:\n{}",
        circles.join("\n")
    );
}

#[test]
fn files_of_a_stage_import_no_circle() {
    let files = read_src();
    let mut problems = Vec::new();
    for (dir, (from, to)) in FILE_CIRCLES {
        let graph = file_graph(&files, dir);
        assert_found(&graph, from, to);
        problems.extend(
            circles(&graph)
                .into_iter()
                .map(|c| format!("in src/{dir}/: {c}")),
        );
    }
    assert!(
        problems.is_empty(),
        "import circles between files:\n{}",
        problems.join("\n")
    );
}

#[test]
fn dependencies_point_down() {
    let graph = module_graph(&read_src());
    let known: BTreeSet<&str> = graph.keys().map(String::as_str).collect();
    for (m, set) in FORBIDDEN.iter().chain(ONLY) {
        for name in std::iter::once(m).chain(set.iter()) {
            assert!(
                known.contains(name),
                "the rules name `{name}`, which is no module of src/"
            );
        }
    }
    let broken = layering_violations(&graph);
    assert!(
        broken.is_empty(),
        "layering rules (docs/architecture.md) broken:\n{}",
        broken.join("\n")
    );
}

/// The checks themselves, on a made-up tree: they must see through comments, strings and
/// tests, and name what they find.
#[test]
fn the_checks_catch_a_violation() {
    let tree = [
        ("transport/mod.rs", "//! uses crate::core in a comment\nmod udp;\n#[cfg(test)]\nmod fake;"),
        ("transport/udp.rs", "fn f() { let s = \"crate::dialog\"; let c = '{'; }\nuse crate::{sip, subscription::Table};"),
        ("transport/fake.rs", "use crate::core::Core;"),
        ("subscription/mod.rs", "mod a;\nmod b;\n"),
        ("subscription/a.rs", "use super::b::X;\n#[cfg(test)]\nmod t { use crate::transaction::Y; }"),
        ("subscription/b.rs", "use crate::subscription::a::Z;\nuse crate::transport::Sender;"),
        ("sip.rs", ""),
        ("core.rs", ""),
        ("transaction.rs", "use crate::transport::Sender;"),
    ];
    let files: Vec<File> = tree.iter().map(|(p, s)| File::new(p.into(), s)).collect();
    let graph = module_graph(&files);
    let subscription: Vec<&String> = graph["subscription"].keys().collect();
    assert_eq!(subscription, ["transport"], "nothing from test code");
    let transport: Vec<&String> = graph["transport"].keys().collect();
    assert_eq!(
        transport,
        ["sip", "subscription"],
        "nothing from comments, strings, test-only files"
    );
    let circle = circles(&graph);
    assert_eq!(circle, ["subscription -> transport (src/subscription/b.rs:2) -> subscription (src/transport/udp.rs:2)"]);
    let broken = layering_violations(&graph);
    assert_eq!(
        broken,
        ["transport must not use subscription (src/transport/udp.rs:2)"]
    );
    let files_circle = circles(&file_graph(&files, "subscription"));
    assert_eq!(
        files_circle,
        ["a -> b (src/subscription/a.rs:1) -> a (src/subscription/b.rs:1)"]
    );
}

fn assert_found(graph: &Graph, from: &str, to: &str) {
    let targets = graph
        .get(from)
        .map(|t| t.keys().cloned().collect::<Vec<_>>());
    let found = targets.as_ref().is_some_and(|t| t.iter().any(|x| x == to));
    assert!(
        found,
        "the scan lost a known reference {from} -> {to} (found {targets:?}): is it broken?"
    );
}

fn layering_violations(graph: &Graph) -> Vec<String> {
    let mut out = Vec::new();
    for (m, targets) in graph {
        for (t, at) in targets {
            let forbidden = FORBIDDEN
                .iter()
                .any(|(x, set)| x == m && set.contains(&t.as_str()));
            let outside = ONLY
                .iter()
                .any(|(x, set)| x == m && !set.contains(&t.as_str()));
            if forbidden || outside {
                out.push(format!("{m} must not use {t} ({at})"));
            }
        }
    }
    out
}

/// Every `.rs` file under `src/`, code only, test-only module files left out.
fn read_src() -> Vec<File> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    walk(&root, &mut paths);
    let files: Vec<File> = paths
        .iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            File::new(p.strip_prefix(&root).unwrap().to_path_buf(), &text)
        })
        .collect();
    assert!(
        files.len() > 50,
        "only {} files under {}",
        files.len(),
        root.display()
    );
    files
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The references between top-level modules (`lib.rs` and `main.rs`, which wire
/// everything, left out).
fn module_graph(files: &[File]) -> Graph {
    let modules: BTreeSet<String> = files.iter().map(|f| top_module(&f.path)).collect();
    let mut graph = Graph::new();
    for f in live_files(files) {
        let from = top_module(&f.path);
        if from == "lib" || from == "main" {
            continue;
        }
        let edges = graph.entry(from.clone()).or_default();
        for (to, line) in paths_after(&f.code, "crate") {
            if to != from && modules.contains(&to) {
                edges
                    .entry(to)
                    .or_insert_with(|| format!("src/{}:{line}", f.path.display()));
            }
        }
    }
    graph
}

/// The references between the files of directory module `dir` (`mod.rs` left out: it
/// declares and re-exports them all).
fn file_graph(files: &[File], dir: &str) -> Graph {
    let in_dir = |f: &File| f.path.parent() == Some(Path::new(dir)) && !f.path.ends_with("mod.rs");
    let names: BTreeSet<String> = files
        .iter()
        .filter(|f| in_dir(f))
        .map(|f| stem(&f.path))
        .collect();
    let mut graph = Graph::new();
    for f in live_files(files).filter(|f| in_dir(f)) {
        let from = stem(&f.path);
        let edges = graph.entry(from.clone()).or_default();
        let own = paths_after(&f.code, "super").into_iter();
        let by_crate = paths_after(
            &f.code.replace(&format!("crate::{dir}::"), "super::"),
            "super",
        );
        for (to, line) in own.chain(by_crate) {
            if to != from && names.contains(&to) {
                edges
                    .entry(to)
                    .or_insert_with(|| format!("src/{}:{line}", f.path.display()));
            }
        }
    }
    graph
}

/// The files compiled outside tests: those of modules declared `#[cfg(test)] mod x;` left out.
fn live_files(files: &[File]) -> impl Iterator<Item = &File> {
    let mut test_only = Vec::new();
    for f in files {
        let dir = match f.path.file_name().and_then(|n| n.to_str()) {
            Some("mod.rs" | "lib.rs" | "main.rs") => {
                f.path.parent().unwrap_or(Path::new("")).to_path_buf()
            }
            _ => f.path.with_extension(""),
        };
        test_only.extend(f.test_modules.iter().map(|m| dir.join(m)));
    }
    files.iter().filter(move |f| {
        !test_only
            .iter()
            .any(|m| f.path.starts_with(m) || f.path == m.with_extension("rs"))
    })
}

fn top_module(path: &Path) -> String {
    let first = path
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned());
    first
        .unwrap_or_default()
        .trim_end_matches(".rs")
        .to_string()
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The names following `prefix::` in `code` (`prefix::name`, or each `prefix::{a, b::c}`
/// member), with their line.
fn paths_after(code: &str, prefix: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let pattern = format!("{prefix}::");
    for (at, _) in code.match_indices(&pattern) {
        let before = &code[..at];
        if before.ends_with("::")
            || before
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$')
        {
            continue;
        }
        let line = code[..at].matches('\n').count() + 1;
        let rest = &code[at + pattern.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            out.extend(group_heads(group).into_iter().map(|n| (n, line)));
        } else {
            out.push((ident_at(rest), line));
        }
    }
    out
}

/// The first name of each member of a `{a::b, c, d::{e}}` group (`group` starts after `{`).
fn group_heads(group: &str) -> Vec<String> {
    let (mut depth, mut heads, mut start) = (1, Vec::new(), true);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 1 => break,
            '}' => depth -= 1,
            ',' if depth == 1 => start = true,
            c if start && depth == 1 && !c.is_whitespace() => {
                heads.push(ident_at(&group[i..]));
                start = false;
            }
            _ => {}
        }
    }
    heads
}

fn ident_at(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Circles of `graph`, each as one path through it with where each step is made.
fn circles(graph: &Graph) -> Vec<String> {
    strongly_connected(graph)
        .iter()
        .filter(|c| c.len() > 1)
        .map(|c| one_circle(graph, c))
        .collect()
}

/// A shortest path from the first module of `component` back to itself.
fn one_circle(graph: &Graph, component: &BTreeSet<String>) -> String {
    let start = component.iter().next().unwrap();
    let mut came_from: BTreeMap<&String, &String> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(m) = queue.pop_front() {
        for next in graph
            .get(m)
            .into_iter()
            .flat_map(|t| t.keys())
            .filter(|n| component.contains(*n))
        {
            if next == start {
                let mut path = vec![m];
                while let Some(prev) = came_from.get(path.last().unwrap()) {
                    path.push(prev);
                }
                path.reverse();
                path.push(start);
                let steps: Vec<String> = path
                    .windows(2)
                    .map(|w| format!("{} ({})", w[1], graph[w[0]][w[1]]))
                    .collect();
                return format!("{start} -> {}", steps.join(" -> "));
            }
            if !came_from.contains_key(next) && next != start {
                came_from.insert(next, m);
                queue.push_back(next);
            }
        }
    }
    unreachable!("a strongly connected component has a circle")
}

/// Tarjan's strongly connected components.
fn strongly_connected(graph: &Graph) -> Vec<BTreeSet<String>> {
    struct Tarjan<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, (usize, usize)>,
        stack: Vec<&'a str>,
        out: Vec<BTreeSet<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, (n, n));
            self.stack.push(v);
            for w in self.graph.get(v).into_iter().flat_map(|t| t.keys()) {
                let low = match self.index.get(w.as_str()) {
                    None => {
                        self.visit(w);
                        self.index[w.as_str()].1
                    }
                    Some(&(i, _)) if self.stack.contains(&w.as_str()) => i,
                    Some(_) => continue,
                };
                let entry = self.index.get_mut(v).unwrap();
                entry.1 = entry.1.min(low);
            }
            let (i, low) = self.index[v];
            if i == low {
                let at = self.stack.iter().rposition(|x| *x == v).unwrap();
                self.out
                    .push(self.stack.drain(at..).map(String::from).collect());
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        stack: Vec::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out
}

/// `source` with comments, string and char literals and `#[cfg(test)]` items blanked
/// (lines kept); and the modules it declares `#[cfg(test)] mod name;`.
fn code_of(source: &str) -> (String, Vec<String>) {
    without_tests(&blank_comments_and_literals(source))
}

fn blank_comments_and_literals(source: &str) -> String {
    let s: Vec<char> = source.chars().collect();
    let mut out: Vec<char> = s.clone();
    let blank = |out: &mut Vec<char>, from: usize, to: usize| {
        for c in &mut out[from..to.min(s.len())] {
            if *c != '\n' {
                *c = ' ';
            }
        }
    };
    let ident = |i: usize| i < s.len() && (s[i].is_alphanumeric() || s[i] == '_');
    let mut i = 0;
    while i < s.len() {
        let next = s.get(i + 1).copied();
        let end = if s[i] == '/' && next == Some('/') {
            (i..s.len()).find(|&j| s[j] == '\n').unwrap_or(s.len())
        } else if s[i] == '/' && next == Some('*') {
            block_comment_end(&s, i)
        } else if s[i] == '"' {
            string_end(&s, i + 1)
        } else if s[i] == 'r'
            && (i == 0 || !ident(i - 1) || (s[i - 1] == 'b' && (i < 2 || !ident(i - 2))))
        {
            let hashes = s[i + 1..].iter().take_while(|c| **c == '#').count();
            if s.get(i + 1 + hashes) == Some(&'"') {
                raw_string_end(&s, i + 2 + hashes, hashes)
            } else {
                i + 1
            }
        } else if s[i] == '\'' && next == Some('\\') {
            (i + 2..s.len())
                .find(|&j| s[j] == '\'')
                .map_or(s.len(), |j| j + 1)
        } else if s[i] == '\'' && s.get(i + 2) == Some(&'\'') {
            i + 3
        } else {
            i + 1
        };
        if end > i + 1 {
            blank(&mut out, i, end);
        }
        i = end;
    }
    out.into_iter().collect()
}

fn block_comment_end(s: &[char], start: usize) -> usize {
    let (mut depth, mut i) = (0, start);
    while i + 1 < s.len() {
        match (s[i], s[i + 1]) {
            ('/', '*') => (depth, i) = (depth + 1, i + 2),
            ('*', '/') if depth == 1 => return i + 2,
            ('*', '/') => (depth, i) = (depth - 1, i + 2),
            _ => i += 1,
        }
    }
    s.len()
}

fn string_end(s: &[char], mut i: usize) -> usize {
    while i < s.len() {
        match s[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    s.len()
}

fn raw_string_end(s: &[char], from: usize, hashes: usize) -> usize {
    (from..s.len())
        .find(|&j| {
            s[j] == '"'
                && s[j + 1..]
                    .iter()
                    .take(hashes)
                    .filter(|c| **c == '#')
                    .count()
                    == hashes
        })
        .map_or(s.len(), |j| j + 1 + hashes)
}

/// `code` (already without comments and literals) with each `#[cfg(test)]` item blanked:
/// up to its `;`, or through its `{ ... }` block. Returns the names of `mod name;` items
/// among them.
fn without_tests(code: &str) -> (String, Vec<String>) {
    const ATTR: &str = "#[cfg(test)]";
    let (mut out, mut modules) = (code.to_string(), Vec::new());
    while let Some(at) = out.find(ATTR) {
        let end = test_item_end(&out, at);
        let item: Vec<&str> = out[at + ATTR.len()..end]
            .trim_end_matches(';')
            .split_whitespace()
            .collect();
        if let [.., "mod", name] = item[..] {
            modules.push(name.to_string());
        }
        let blanked: String = out[at..end]
            .chars()
            .map(|c| if c == '\n' { c } else { ' ' })
            .collect();
        out.replace_range(at..end, &blanked);
    }
    (out, modules)
}

fn test_item_end(code: &str, at: usize) -> usize {
    let mut depth = 0;
    for (i, c) in code[at..].char_indices() {
        match c {
            ';' if depth == 0 => return at + i + 1,
            '{' => depth += 1,
            '}' if depth == 1 => return at + i + 1,
            '}' => depth -= 1,
            _ => {}
        }
    }
    code.len()
}
