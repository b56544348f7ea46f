//! The guides in `docs/` quote code instead of paraphrasing it: every ```` ```rust ```` block
//! starts with a `// <path>` line naming a file of this repository and must appear in that
//! file word for word, so a guide cannot drift from the code it explains. (The files are
//! compiled and run by the rest of the suite: `examples/custom_cell.rs` by
//! `tests/demo_custom_cell.rs`.)

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
