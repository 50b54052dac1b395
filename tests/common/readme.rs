//! The README's code, for the tests that run it as written: the shell
//! blocks of a section (the tour, the backups) and a configuration block
//! found by its first line (HAProxy, nginx, unbound). A README edit that
//! breaks a tested snippet fails its test instead of silently untesting it.

use std::path::Path;

/// README.md's text.
pub fn text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path:?}: {e}"))
}

/// The ```sh blocks of the section under `heading`, in order.
pub fn sh_blocks(heading: &str) -> Vec<String> {
    let readme = text();
    let start = readme
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README has no {heading:?}"));
    let section = &readme[start + heading.len() + 2..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut blocks = Vec::new();
    let mut rest = section;
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + 6..];
        let close = body.find("```").expect("an sh block is closed");
        blocks.push(body[..close].to_owned());
        rest = &body[close + 3..];
    }
    assert!(!blocks.is_empty(), "no sh block under {heading:?}");
    blocks
}

/// The README's fenced code block whose first line is `first_line`, with
/// each `(from, to)` of `replace` applied: the configuration the README
/// shows, with this test's ports in it. Panics if the README has no such
/// block or a replacement finds nothing to replace, so a README edit that
/// breaks the tested snippet fails the test instead of silently untesting it.
pub fn snippet(first_line: &str, replace: &[(&str, &str)]) -> String {
    let text = text();
    let mut lines = text.lines();
    let mut block = None;
    while let Some(line) = lines.next() {
        if !line.trim_start().starts_with("```") {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let body: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.trim_start().starts_with("```"))
            .map(|l| l.get(indent..).unwrap_or(l.trim_start()))
            .collect();
        if body
            .first()
            .is_some_and(|first| first.trim_end() == first_line)
        {
            block = Some(body.join("\n") + "\n");
            break;
        }
    }
    let mut snippet =
        block.unwrap_or_else(|| panic!("README.md has no code block starting {first_line:?}"));
    for (from, to) in replace {
        assert!(
            snippet.contains(from),
            "the README snippet starting {first_line:?} no longer contains {from:?}"
        );
        snippet = snippet.replace(from, to);
    }
    snippet
}
