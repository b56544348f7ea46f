//! The guides in `docs/` quote code instead of paraphrasing it: every ```` ```rust ```` block
//! starts with a `// <path>` line naming a file of this repository and must appear in that
//! file word for word, so a guide cannot drift from the code it explains. (The files are
//! compiled and run by the rest of the suite: `examples/custom_cell.rs` by
//! `tests/all/demo_custom_cell.rs`.)

use std::path::Path;

/// The ```` ```rust ```` blocks of a markdown text, each as its lines.
fn rust_blocks(markdown: &str) -> Vec<Vec<&str>> {
    let mut blocks = vec![];
    let mut current: Option<Vec<&str>> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, fence) if fence.starts_with("```rust") => current = Some(vec![]),
            (Some(_), "```") => blocks.push(current.take().expect("open block")),
            (Some(block), _) => block.push(line),
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "a ```rust block is never closed");
    blocks
}

#[test]
fn code_in_the_guides_is_quoted_from_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable guide");
        for block in rust_blocks(&text) {
            let (first, body) = block.split_first().expect("a non-empty block");
            let source = first.strip_prefix("// ").unwrap_or_else(|| {
                panic!(
                    "{}: a rust block must start with `// <path of the file it quotes>`, \
                     found {first:?}",
                    path.display()
                )
            });
            let code = std::fs::read_to_string(root.join(source))
                .unwrap_or_else(|e| panic!("{}: cannot read {source}: {e}", path.display()));
            let excerpt = body.join("\n");
            assert!(
                code.contains(&excerpt),
                "{}: this block no longer appears in {source}:\n{excerpt}",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 5,
        "expected the guides to quote code, checked {checked} blocks"
    );
}

#[test]
fn the_block_reader_finds_blocks_and_their_lines() {
    let md = "text\n```rust\n// a.rs\nfn f() {}\n```\n```text\nnot rust\n```\n";
    assert_eq!(rust_blocks(md), vec![vec!["// a.rs", "fn f() {}"]]);
}

/// The names a guide ties to a source file, as `(name, file)`: the name of a link to a `.rs`
/// file (`[`Layer::new`](../crates/rnn/src/layer.rs)`, its last `::` part), the names in
/// backticks listed right after a link to one (`([`fused/gru.rs`](..), `backward` and
/// `cell_backward`)`), and a name right before ` in [`..`](...rs)`.
fn named_in_links(markdown: &str) -> Vec<(String, String)> {
    let mut named = vec![];
    let mut rest = markdown;
    while let Some(open) = rest.find("](") {
        let (before, after) = (&rest[..open], &rest[open + 2..]);
        let Some(close) = after.find(')') else { break };
        let target = &after[..close];
        rest = &after[close..];
        if !target.ends_with(".rs") {
            continue;
        }
        let text = before.rfind('[').map_or("", |i| &before[i + 1..]);
        let name = |code: &str| -> Option<String> {
            let code = code.strip_prefix('`')?.strip_suffix('`')?;
            let last = code.rsplit("::").next()?.trim_end_matches("()");
            let ident = !last.is_empty() && last.chars().all(|c| c.is_alphanumeric() || c == '_');
            ident.then(|| last.to_string())
        };
        if let Some(n) = name(text) {
            named.push((n, target.to_string()));
        }
        // Names listed after the link: `, `a` and `b`` (or `; `a``).
        let mut tail = &rest[1..];
        loop {
            let t = tail.trim_start_matches([',', ';', ' ', '\n']);
            let t = t.strip_prefix("and ").unwrap_or(t);
            let Some(end) = t.strip_prefix('`').and_then(|r| r.find('`')) else {
                break;
            };
            match name(&t[..end + 2]) {
                Some(n) => named.push((n, target.to_string())),
                None => break,
            }
            tail = &t[end + 2..];
            if !(tail.starts_with(',') || tail.starts_with(" and")) {
                break;
            }
        }
        // A name right before ` in [`..`](target)`.
        if let Some(head) = before.rfind('[').map(|i| &before[..i]) {
            if let Some(code) = head.strip_suffix(" in ") {
                if let Some(start) = code.strip_suffix('`').and_then(|c| c.rfind('`')) {
                    if let Some(n) = name(&code[start..]) {
                        named.push((n, target.to_string()));
                    }
                }
            }
        }
    }
    named
}

/// Whether `code` defines `name` (a function, type, trait, constant, module or macro).
fn defines(code: &str, name: &str) -> bool {
    [
        "fn",
        "struct",
        "trait",
        "enum",
        "type",
        "const",
        "static",
        "mod",
        "macro_rules!",
    ]
    .iter()
    .any(|kw| {
        let needle = format!("{kw} {name}");
        code.match_indices(&needle).any(|(at, _)| {
            let next = code[at + needle.len()..].chars().next();
            next.is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
        })
    })
}

#[test]
fn code_the_guides_name_is_in_the_files_they_link() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut guides = vec![(root.join("README.md"), root.to_path_buf())];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            guides.push((path, root.join("docs")));
        }
    }
    let mut checked = 0;
    for (guide, base) in guides {
        let text = std::fs::read_to_string(&guide).expect("readable guide");
        for (name, target) in named_in_links(&text) {
            let code = std::fs::read_to_string(base.join(&target))
                .unwrap_or_else(|e| panic!("{}: cannot read {target}: {e}", guide.display()));
            assert!(
                defines(&code, &name),
                "{}: `{name}` is not defined in {target}",
                guide.display()
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 20,
        "expected the guides to name code, checked {checked}"
    );
}

#[test]
fn the_link_reader_finds_names_in_links_lists_and_before_in() {
    let md = "Backward ([`fused/gru.rs`](../a.rs), `backward` and `cell_backward`; the sums in \
              `parameter_grads` in [`fused/mod.rs`](../b.rs)), see [`Layer::new`](c.rs) and \
              [the guide](d.md).";
    let want: Vec<(String, String)> = [
        ("backward", "../a.rs"),
        ("cell_backward", "../a.rs"),
        ("parameter_grads", "../b.rs"),
        ("new", "c.rs"),
    ]
    .iter()
    .map(|(n, t)| (n.to_string(), t.to_string()))
    .collect();
    assert_eq!(named_in_links(md), want);
    assert!(defines("pub(super) fn backward<T>", "backward"));
    assert!(!defines("fn backward_loop()", "backward"));
}
