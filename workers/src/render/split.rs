//! Splits long content into parts that each fit a platform's limit once rendered.
//!
//! Markdown is split between its blocks, so that every part is whole Markdown that renders
//! on its own: never inside a code block (one too long for a part is split between its lines,
//! each piece fenced again with the same info string), a table (split between rows, each
//! piece with the header again), a list (between items), a link, a code span or an emphasis.
//! Only a single unbreakable run too long for any part (one enormous word or link) is cut
//! where it must be.
//!
//! `fits` is the platform's own measure of a rendered part, so the limit holds for what the
//! platform counts, escapes and markup included.

use super::{is_inline_end, options};
use pulldown_cmark::{Event, Parser, Tag};
use std::ops::Range;

/// Parts of `content` (Markdown) that each fit; each is a piece of the source, whole blocks
/// where they fit.
pub(super) fn markdown(content: &str, fits: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut parts = Vec::new();
    pack(content, &top_level(content), fits, &mut parts);
    parts.retain(|p| !p.trim().is_empty());
    if parts.is_empty() {
        parts.push(content.trim().to_owned());
    }
    parts
}

/// Parts of `content` (raw text) that each fit, cut at the most natural boundary available:
/// paragraph, then line, then word, then (for one huge word) characters.
pub(super) fn plain(content: &str, fits: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = content.trim_matches('\n');
    while !rest.is_empty() {
        if fits(rest) {
            parts.push(rest.to_owned());
            break;
        }
        let end = longest_fitting_prefix(rest, fits);
        let window = &rest[..end];
        // Not in the first half: tiny parts are worse than a cut mid-sentence.
        let min = window.len() / 2;
        let cut = ["\n\n", "\n", " "]
            .iter()
            .find_map(|sep| {
                window
                    .rfind(sep)
                    .filter(|&i| i >= min && i > 0)
                    .map(|i| i + sep.len())
            })
            .unwrap_or(end);
        parts.push(rest[..cut].trim_end().to_owned());
        rest = rest[cut..].trim_start_matches('\n');
    }
    parts
}

/// The byte length of the longest prefix of `text` that fits (at least one character, so
/// splitting always advances).
fn longest_fitting_prefix(text: &str, fits: &dyn Fn(&str) -> bool) -> usize {
    // The end of each character: a prefix is `text[..bounds[i]]`.
    let bounds: Vec<usize> = text.char_indices().map(|(i, c)| i + c.len_utf8()).collect();
    if bounds.is_empty() {
        return 0;
    }
    // Binary search for the longest fitting prefix (fitting is monotone in its length);
    // the first character is taken even when it alone does not fit.
    let (mut lo, mut hi) = (0usize, bounds.len());
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if fits(&text[..bounds[mid]]) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    bounds[lo]
}

/// One top-level block of a piece of Markdown: its source range and what kind it is.
struct Block {
    range: Range<usize>,
    kind: Kind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Code,
    List,
    Table,
    Other,
}

/// The top-level blocks of `source`, in order.
fn top_level(source: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut depth = 0usize;
    let mut current: Option<(usize, Kind)> = None;
    for (event, range) in Parser::new_ext(source, options()).into_offset_iter() {
        match event {
            Event::Start(tag) => {
                if depth == 0 {
                    let kind = match tag {
                        Tag::CodeBlock(_) => Kind::Code,
                        Tag::List(_) => Kind::List,
                        Tag::Table(_) => Kind::Table,
                        _ => Kind::Other,
                    };
                    current = Some((range.start, kind));
                }
                depth += 1;
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    if let Some((start, kind)) = current.take() {
                        blocks.push(Block {
                            range: start..range.end.max(start),
                            kind,
                        });
                    }
                }
            }
            // A rule, or HTML at the top level, is a block of one event.
            _ if depth == 0 => blocks.push(Block {
                range,
                kind: Kind::Other,
            }),
            _ => {}
        }
    }
    blocks
}

/// Packs `blocks` of `source` into parts: consecutive whole blocks (their source as written,
/// separators included) while they fit; a block too big for a part of its own is split.
fn pack(source: &str, blocks: &[Block], fits: &dyn Fn(&str) -> bool, parts: &mut Vec<String>) {
    let mut open: Option<Range<usize>> = None;
    for block in blocks {
        if let Some(range) = &open {
            let joined = range.start..block.range.end;
            if fits(source[joined.clone()].trim_end()) {
                open = Some(joined);
                continue;
            }
            parts.push(source[range.clone()].trim_end().to_owned());
            open = None;
        }
        let text = source[block.range.clone()].trim_end();
        if fits(text) {
            open = Some(block.range.clone());
            continue;
        }
        parts.extend(split_block(text, block.kind, fits));
    }
    if let Some(range) = open {
        parts.push(source[range].trim_end().to_owned());
    }
}

/// Pieces of one block too big for a part, each fitting and each whole Markdown.
fn split_block(text: &str, kind: Kind, fits: &dyn Fn(&str) -> bool) -> Vec<String> {
    match kind {
        Kind::Code => split_code(text, fits),
        Kind::Table => split_table(text, fits),
        Kind::List => {
            let items = list_items(text);
            if items.len() > 1 {
                let mut parts = Vec::new();
                pack(text, &items, fits, &mut parts);
                parts
            } else {
                split_inline(text, fits)
            }
        }
        Kind::Other => split_inline(text, fits),
    }
}

/// A list's items as blocks of the list's own source (each keeps its marker, so an ordered
/// item keeps its number).
fn list_items(text: &str) -> Vec<Block> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    for (event, range) in Parser::new_ext(text, options()).into_offset_iter() {
        match event {
            Event::Start(Tag::Item) if depth == 1 => {
                items.push(Block {
                    range,
                    kind: Kind::Other,
                });
                depth += 1;
            }
            Event::Start(_) => depth += 1,
            Event::End(_) => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    items
}

/// A fenced or indented code block split between its lines, each piece a code block of its
/// own with the same fence and info string.
fn split_code(text: &str, fits: &dyn Fn(&str) -> bool) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let first = lines.first().copied().unwrap_or("");
    let trimmed = first.trim_start();
    let fence_char = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
    let (open, close, body): (String, String, Vec<&str>) = match fence_char {
        Some(c) => {
            let run = trimmed.chars().take_while(|x| *x == c).count();
            let fence: String = std::iter::repeat_n(c, run.max(3)).collect();
            let mut body: Vec<&str> = lines[1..].to_vec();
            if body
                .last()
                .is_some_and(|l| l.trim_start().starts_with(fence.as_str()))
            {
                body.pop();
            }
            (first.trim().to_owned(), fence, body)
        }
        // An indented block: fence it, so each piece is unambiguous on its own.
        None => (
            "```".to_owned(),
            "```".to_owned(),
            lines
                .iter()
                .map(|l| l.strip_prefix("    ").unwrap_or(l))
                .collect(),
        ),
    };
    let wrap = |lines: &[&str]| format!("{open}\n{}\n{close}", lines.join("\n"));
    let mut pieces = Vec::new();
    let mut start = 0;
    while start < body.len() {
        let mut end = start + 1;
        while end < body.len() && fits(&wrap(&body[start..end + 1])) {
            end += 1;
        }
        let piece = wrap(&body[start..end]);
        if fits(&piece) {
            pieces.push(piece);
        } else {
            // One line longer than a part: cut it, each cut still code.
            let line = body[start];
            let mut rest = line;
            while !rest.is_empty() {
                let end = longest_fitting_prefix(rest, &|p: &str| fits(&wrap(&[p])));
                pieces.push(wrap(&[&rest[..end]]));
                rest = &rest[end..];
            }
        }
        start = end;
    }
    pieces
}

/// A table split between its rows, each piece with the header and delimiter rows again.
fn split_table(text: &str, fits: &dyn Fn(&str) -> bool) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() < 3 {
        return split_inline(text, fits);
    }
    let head = format!("{}\n{}", lines[0], lines[1]);
    let mut pieces = Vec::new();
    let mut rows: Vec<&str> = Vec::new();
    for row in &lines[2..] {
        rows.push(row);
        let candidate = format!("{head}\n{}", rows.join("\n"));
        if !fits(&candidate) && rows.len() > 1 {
            rows.pop();
            pieces.push(format!("{head}\n{}", rows.join("\n")));
            rows = vec![row];
        }
    }
    if !rows.is_empty() {
        let last = format!("{head}\n{}", rows.join("\n"));
        if fits(&last) {
            pieces.push(last);
        } else {
            // A single row longer than a part: it can only be shown as text.
            pieces.extend(split_inline(&rows.join("\n"), fits));
        }
    }
    pieces
}

/// A paragraph-like block cut only where its inline structure allows: at line breaks or
/// between words outside links, code spans and emphasis. Falls back to any space, then to
/// characters, for a run no part can hold.
fn split_inline(text: &str, fits: &dyn Fn(&str) -> bool) -> Vec<String> {
    let safe = safe_cuts(text);
    let mut pieces = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let rest = &text[start..];
        if fits(rest.trim()) {
            pieces.push(rest.trim().to_owned());
            break;
        }
        // The furthest safe cut whose piece still fits; breaks preferred to spaces.
        let candidates: Vec<&(usize, bool)> = safe.iter().filter(|(at, _)| *at > start).collect();
        let fitting = |at: usize| fits(text[start..at].trim());
        let best = candidates
            .iter()
            .rev()
            .find(|(at, line_break)| *line_break && fitting(*at))
            .or_else(|| candidates.iter().rev().find(|(at, _)| fitting(*at)))
            .map(|(at, _)| *at);
        let cut = match best {
            Some(at) => at,
            None => {
                // Nothing safe fits: the longest prefix that does, at a space when there is one.
                let end = start + longest_fitting_prefix(rest, &|p: &str| fits(p.trim()));
                text[start..end]
                    .rfind(char::is_whitespace)
                    .map(|i| start + i + 1)
                    .filter(|at| *at > start + (end - start) / 2)
                    .unwrap_or(end)
            }
        };
        let piece = text[start..cut].trim();
        if !piece.is_empty() {
            pieces.push(piece.to_owned());
        }
        start = cut;
    }
    pieces
}

/// Byte offsets where `text` may be cut without splitting an inline element, and whether
/// each is a line break (preferred) or a space.
fn safe_cuts(text: &str) -> Vec<(usize, bool)> {
    let mut cuts = Vec::new();
    let mut inline_depth = 0usize;
    let mut block_depth = 0usize;
    for (event, range) in Parser::new_ext(text, options()).into_offset_iter() {
        match event {
            Event::Start(tag) => {
                if is_inline(&tag) {
                    inline_depth += 1;
                } else {
                    block_depth += 1;
                }
            }
            Event::End(end) => {
                if is_inline_end(&end) {
                    inline_depth = inline_depth.saturating_sub(1);
                } else {
                    block_depth = block_depth.saturating_sub(1);
                }
            }
            Event::SoftBreak | Event::HardBreak if inline_depth == 0 => {
                cuts.push((range.end, true));
            }
            Event::Text(_) if inline_depth == 0 && block_depth <= 1 => {
                let piece = &text[range.clone()];
                for (i, c) in piece.char_indices() {
                    if c == ' ' {
                        cuts.push((range.start + i + 1, false));
                    }
                }
            }
            _ => {}
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

fn is_inline(tag: &Tag<'_>) -> bool {
    matches!(
        tag,
        Tag::Emphasis | Tag::Strong | Tag::Strikethrough | Tag::Link { .. } | Tag::Image { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars_at_most(max: usize) -> impl Fn(&str) -> bool {
        move |s: &str| s.chars().count() <= max
    }

    #[test]
    fn content_that_fits_is_one_part_as_written() {
        let md = "# Title\n\nSome *text*.\n\n- a\n- b";
        assert_eq!(markdown(md, &chars_at_most(2000)), vec![md]);
    }

    #[test]
    fn blocks_are_packed_whole_and_in_order() {
        let para = |n: usize| format!("paragraph {n} {}", "word ".repeat(30).trim_end());
        let md: String = (0..10).map(para).collect::<Vec<_>>().join("\n\n");
        let parts = markdown(&md, &chars_at_most(400));
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| p.chars().count() <= 400));
        // Every paragraph whole in exactly one part, in order.
        let mut seen = Vec::new();
        for part in &parts {
            for n in 0..10 {
                if part.contains(&para(n)) {
                    seen.push(n);
                }
            }
        }
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_long_code_block_is_split_between_lines_and_fenced_again() {
        let body: String = (0..200).map(|i| format!("let x{i} = {i};\n")).collect();
        let md = format!("Intro.\n\n```rust\n{body}```\n\nOutro.");
        let parts = markdown(&md, &chars_at_most(500));
        assert!(parts.iter().all(|p| p.chars().count() <= 500));
        let code_parts: Vec<&String> = parts.iter().filter(|p| p.contains("let x")).collect();
        assert!(code_parts.len() > 2);
        for part in &code_parts {
            let fences = part.matches("```").count();
            assert_eq!(fences, 2, "each piece is one whole block: {part}");
            assert!(part.contains("```rust\n"), "info string kept: {part}");
        }
        let lines: usize = code_parts
            .iter()
            .map(|p| p.lines().filter(|l| l.starts_with("let x")).count())
            .sum();
        assert_eq!(lines, 200, "no line lost or cut");
    }

    #[test]
    fn a_paragraph_is_never_cut_inside_a_link_code_span_or_emphasis() {
        let md = format!(
            "{} [a link with many words in its text](https://example.com/x) {} `code span with spaces inside it` {} **bold words that go on** end",
            "lead ".repeat(20),
            "mid ".repeat(20),
            "more ".repeat(20)
        );
        for max in [60, 80, 120] {
            let parts = markdown(&md, &chars_at_most(max));
            for part in &parts {
                assert!(part.chars().count() <= max);
                assert_eq!(
                    part.matches('[').count(),
                    part.matches("](").count(),
                    "{part}"
                );
                assert_eq!(part.matches('`').count() % 2, 0, "{part}");
                assert_eq!(part.matches("**").count() % 2, 0, "{part}");
            }
            let joined = parts.join(" ");
            assert!(joined.contains("[a link with many words in its text](https://example.com/x)"));
        }
    }

    #[test]
    fn a_table_is_split_between_rows_with_its_header_again() {
        let rows: String = (0..50).map(|i| format!("| item {i} | {i} |\n")).collect();
        let md = format!("| Item | Cost |\n| --- | ---: |\n{rows}");
        let parts = markdown(&md, &chars_at_most(300));
        assert!(parts.len() > 1);
        for part in &parts {
            assert!(
                part.starts_with("| Item | Cost |\n| --- | ---: |\n"),
                "{part}"
            );
        }
        let total: usize = parts.iter().map(|p| p.matches("| item ").count()).sum();
        assert_eq!(total, 50);
    }

    #[test]
    fn a_long_list_is_split_between_items_keeping_their_numbers() {
        let md: String = (1..=40)
            .map(|i| format!("{i}. step number {i} of the plan\n"))
            .collect();
        let parts = markdown(&md, &chars_at_most(200));
        assert!(parts.len() > 1);
        assert!(parts[1].starts_with(|c: char| c.is_ascii_digit()));
        assert!(
            !parts[1].starts_with("1. "),
            "a later part keeps its numbering"
        );
        let items: usize = parts.iter().map(|p| p.lines().count()).sum();
        assert_eq!(items, 40);
    }

    #[test]
    fn one_huge_word_is_cut_on_character_boundaries() {
        let md = "é".repeat(4500);
        let parts = markdown(&md, &chars_at_most(2000));
        assert_eq!(
            parts.iter().map(|p| p.chars().count()).collect::<Vec<_>>(),
            vec![2000, 2000, 500]
        );
    }

    #[test]
    fn plain_text_splits_on_paragraphs_then_lines_then_words() {
        let para = "word ".repeat(300);
        let content = format!("{para}\n\n{para}\n\n{para}");
        let parts = plain(&content, &chars_at_most(2000));
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.chars().count() <= 2000));
        let lines: String = (0..1000).map(|i| format!("line {i:04}\n")).collect();
        let parts = plain(&lines, &chars_at_most(2000));
        assert_eq!(parts.join("\n").lines().count(), 1000);
    }
}
