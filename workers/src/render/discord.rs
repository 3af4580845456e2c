//! Discord renderer: turns the agents' CommonMark into a Discord message `content`, which
//! Discord's clients read as their own Markdown dialect (API docs, Reference › Message
//! Formatting; the syntax itself is Discord's "Markdown Text 101" support article).
//!
//! Discord's Markdown is not CommonMark: it is a rule-based parser (simple-markdown, per
//! Discord's engineering blog) where every construct is matched on the raw text, line
//! constructs (headings, lists, quotes, subtext) only at a line start, and a backslash before
//! any punctuation shows that character literally. So the renderer walks pulldown's events,
//! re-emits each construct in Discord's syntax and backslash-escapes every character of the
//! text that Discord would otherwise read as markup.

use super::{events, is_inline_end, segments, table_text, Mentions, Rendered, Segment};
use pulldown_cmark::{Alignment, CodeBlockKind, Event, HeadingLevel, LinkType, Tag, TagEnd};

/// Renders `markdown` as Discord message content. `length` counts characters, as Discord's
/// Create Message `content` limit does.
pub fn render(markdown: &str, mentions: &Mentions<'_>) -> Rendered {
    let (text, _) = render_with_pings(markdown, mentions);
    let length = text.chars().count();
    Rendered {
        text,
        html: None,
        length,
    }
}

/// The allowed ids that [`render`] turns into real `<@ID>` mentions (so: outside code), in
/// first-seen order without duplicates. The adapter sends them as `allowed_mentions.users`
/// with an empty `parse`, so they are the only ones that can be notified.
pub fn mentioned(markdown: &str, mentions: &Mentions<'_>) -> Vec<String> {
    render_with_pings(markdown, mentions).1
}

/// Both results of one rendering, so the mention list is by construction exactly what the text
/// contains.
fn render_with_pings(markdown: &str, mentions: &Mentions<'_>) -> (String, Vec<String>) {
    let mut stream = events(markdown);
    let blocks = parse_blocks(&mut stream);
    let mut cx = Ctx {
        mentions,
        pings: Vec::new(),
    };
    let lines = layout(&blocks, &mut cx, Nest::default());
    let text: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    let text = text.join("\n").trim_end().to_string();
    (text, cx.pings)
}

// ---------------------------------------------------------------------------------------------
// Blocks: pulldown's event stream regrouped into a tree, because Discord's line syntax needs
// each line's container prefixes (quote bar, list indentation) and the separators between blocks
// depend on the enclosing container.

/// One block of the document, its inline content kept as events.
enum Block<'a> {
    Paragraph(Vec<Event<'a>>),
    Heading(HeadingLevel, Vec<Event<'a>>),
    Code {
        lang: Option<String>,
        code: String,
    },
    Html(String),
    Quote(Vec<Block<'a>>),
    List {
        start: Option<u64>,
        items: Vec<Vec<Block<'a>>>,
    },
    Table {
        aligns: Vec<Alignment>,
        rows: Vec<Vec<Vec<Event<'a>>>>,
    },
    Rule,
}

/// Reads blocks until the end of the enclosing container (or of the stream). Inline events that
/// arrive outside a paragraph (tight list items) form an implicit paragraph.
fn parse_blocks<'a>(it: &mut impl Iterator<Item = Event<'a>>) -> Vec<Block<'a>> {
    let mut blocks = Vec::new();
    let mut loose: Vec<Event<'a>> = Vec::new();
    while let Some(ev) = it.next() {
        match ev {
            Event::Start(tag) => match tag {
                Tag::Paragraph => {
                    flush(&mut loose, &mut blocks);
                    blocks.push(Block::Paragraph(inline_until_end(it)));
                }
                Tag::Heading { level, .. } => {
                    flush(&mut loose, &mut blocks);
                    blocks.push(Block::Heading(level, inline_until_end(it)));
                }
                Tag::BlockQuote(_) => {
                    flush(&mut loose, &mut blocks);
                    blocks.push(Block::Quote(parse_blocks(it)));
                }
                Tag::CodeBlock(kind) => {
                    flush(&mut loose, &mut blocks);
                    let lang = match kind {
                        CodeBlockKind::Fenced(info) => fence_language(&info),
                        CodeBlockKind::Indented => None,
                    };
                    blocks.push(Block::Code {
                        lang,
                        code: text_until_end(it),
                    });
                }
                Tag::HtmlBlock => {
                    flush(&mut loose, &mut blocks);
                    blocks.push(Block::Html(text_until_end(it)));
                }
                Tag::List(start) => {
                    flush(&mut loose, &mut blocks);
                    blocks.push(parse_list(it, start));
                }
                Tag::Table(aligns) => {
                    flush(&mut loose, &mut blocks);
                    blocks.push(parse_table(it, aligns));
                }
                // Containers Discord has no form for (and that the parser options do not
                // enable): their content is kept as plain blocks.
                Tag::Item
                | Tag::TableHead
                | Tag::TableRow
                | Tag::TableCell
                | Tag::FootnoteDefinition(_)
                | Tag::DefinitionList
                | Tag::DefinitionListTitle
                | Tag::DefinitionListDefinition
                | Tag::MetadataBlock(_) => {
                    flush(&mut loose, &mut blocks);
                    blocks.extend(parse_blocks(it));
                }
                Tag::Emphasis
                | Tag::Strong
                | Tag::Strikethrough
                | Tag::Superscript
                | Tag::Subscript
                | Tag::Link { .. }
                | Tag::Image { .. } => loose.push(Event::Start(tag)),
            },
            Event::End(end) => {
                if is_inline_end(&end) {
                    loose.push(Event::End(end));
                } else {
                    break;
                }
            }
            Event::Rule => {
                flush(&mut loose, &mut blocks);
                blocks.push(Block::Rule);
            }
            Event::DisplayMath(math) => {
                flush(&mut loose, &mut blocks);
                blocks.push(Block::Code {
                    lang: None,
                    code: math.to_string(),
                });
            }
            Event::Text(_)
            | Event::Code(_)
            | Event::InlineMath(_)
            | Event::Html(_)
            | Event::InlineHtml(_)
            | Event::FootnoteReference(_)
            | Event::SoftBreak
            | Event::HardBreak
            | Event::TaskListMarker(_) => loose.push(ev),
        }
    }
    flush(&mut loose, &mut blocks);
    blocks
}

/// Turns gathered loose inline events into a paragraph.
fn flush<'a>(loose: &mut Vec<Event<'a>>, blocks: &mut Vec<Block<'a>>) {
    if !loose.is_empty() {
        blocks.push(Block::Paragraph(std::mem::take(loose)));
    }
}

/// The inline events up to the end of the current paragraph, heading or table cell.
fn inline_until_end<'a>(it: &mut impl Iterator<Item = Event<'a>>) -> Vec<Event<'a>> {
    let mut out = Vec::new();
    for ev in it.by_ref() {
        if matches!(&ev, Event::End(end) if !is_inline_end(end)) {
            break;
        }
        out.push(ev);
    }
    out
}

/// The text of a code or HTML block.
fn text_until_end<'a>(it: &mut impl Iterator<Item = Event<'a>>) -> String {
    let mut out = String::new();
    for ev in it.by_ref() {
        match ev {
            Event::Text(t) | Event::Html(t) => out.push_str(&t),
            Event::End(_) => break,
            _ => {}
        }
    }
    out
}

fn parse_list<'a>(it: &mut impl Iterator<Item = Event<'a>>, start: Option<u64>) -> Block<'a> {
    let mut items = Vec::new();
    loop {
        match it.next() {
            Some(Event::Start(Tag::Item)) => items.push(parse_blocks(it)),
            Some(Event::End(TagEnd::List(_))) | None => break,
            Some(_) => {}
        }
    }
    Block::List { start, items }
}

fn parse_table<'a>(it: &mut impl Iterator<Item = Event<'a>>, aligns: Vec<Alignment>) -> Block<'a> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    loop {
        match it.next() {
            Some(Event::Start(Tag::TableCell)) => row.push(inline_until_end(it)),
            Some(Event::End(TagEnd::TableHead | TagEnd::TableRow)) => {
                rows.push(std::mem::take(&mut row));
            }
            Some(Event::End(TagEnd::Table)) | None => break,
            Some(_) => {}
        }
    }
    Block::Table { aligns, rows }
}

/// The language of a fence's info string, if Discord can take it. Discord reads the word
/// right after the opening backticks as the language only when it is made of letters, digits
/// and `_+-.`; anything else would be shown as the first line of the code, so it is dropped.
fn fence_language(info: &str) -> Option<String> {
    let word = info.split_whitespace().next()?;
    let fits = word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    fits.then(|| word.to_string())
}

// ---------------------------------------------------------------------------------------------
// Layout: blocks to lines, with container prefixes.

/// State shared by the whole rendering.
struct Ctx<'m> {
    mentions: &'m Mentions<'m>,
    /// Allowed ids rendered as real mentions, first-seen order.
    pings: Vec<String>,
}

impl Ctx<'_> {
    fn add_pings(&mut self, ids: Vec<String>) {
        for id in ids {
            if !self.pings.contains(&id) {
                self.pings.push(id);
            }
        }
    }
}

/// Where a block sits.
#[derive(Clone, Copy, Default)]
struct Nest {
    /// Inside a block quote: Discord's quotes do not nest (Markdown Text 101), so an inner quote
    /// adds no second bar.
    in_quote: bool,
    /// Inside a list item: Discord's list items are consecutive lines, so no blank line may
    /// separate the blocks of an item.
    in_item: bool,
}

/// One output line.
struct Line {
    text: String,
    /// A code fence line: it must start at the line's first column, since Discord reads
    /// fences over the raw text, not inside a quote's or a list's line syntax; it gets no
    /// container prefix.
    raw: bool,
}

impl Line {
    fn text(text: String) -> Self {
        Line { text, raw: false }
    }

    fn raw(text: String) -> Self {
        Line { text, raw: true }
    }

    /// Whether a container prefix goes in front. An empty line gets none: a quote line must
    /// carry text after its marker, and an empty line simply ends the quote or list there.
    fn prefixed(&self) -> bool {
        !self.raw && !self.text.is_empty()
    }
}

fn layout(blocks: &[Block<'_>], cx: &mut Ctx<'_>, nest: Nest) -> Vec<Line> {
    let mut lines = Vec::new();
    for block in blocks {
        let mut next = block_lines(block, cx, nest);
        if next.is_empty() {
            continue;
        }
        if !lines.is_empty() && !nest.in_item {
            lines.push(Line::text(String::new()));
        }
        lines.append(&mut next);
    }
    lines
}

fn block_lines(block: &Block<'_>, cx: &mut Ctx<'_>, nest: Nest) -> Vec<Line> {
    match block {
        Block::Paragraph(evs) => {
            let text = render_inline(evs, cx, false);
            if text.is_empty() {
                return Vec::new();
            }
            text.split('\n')
                .map(|l| Line::text(l.to_string()))
                .collect()
        }
        Block::Heading(level, evs) => {
            // A Discord heading is one line, so line breaks inside it become spaces.
            let text = render_inline(evs, cx, true);
            if text.trim().is_empty() {
                return Vec::new();
            }
            // Discord has headings of three sizes only (Markdown Text 101); smaller ones
            // become a bold line.
            let line = match level {
                HeadingLevel::H1 => format!("# {text}"),
                HeadingLevel::H2 => format!("## {text}"),
                HeadingLevel::H3 => format!("### {text}"),
                HeadingLevel::H4 | HeadingLevel::H5 | HeadingLevel::H6 => format!("**{text}**"),
            };
            vec![Line::text(line)]
        }
        Block::Code { lang, code } => code_block_lines(lang.as_deref(), code),
        Block::Html(html) => {
            // Discord does not interpret HTML; it is shown as the author wrote it, escaped like
            // any text so that no part of it becomes Discord markup.
            let mut lines = Vec::new();
            for line in html.trim_end_matches('\n').split('\n') {
                if line.is_empty() {
                    if !nest.in_item {
                        lines.push(Line::text(String::new()));
                    }
                    continue;
                }
                let mut w = Inline::new(cx.mentions, true, false);
                w.literal(line);
                lines.push(Line::text(w.out));
            }
            lines
        }
        Block::Quote(children) => {
            let inner = layout(
                children,
                cx,
                Nest {
                    in_quote: true,
                    ..nest
                },
            );
            if nest.in_quote {
                return inner;
            }
            // Discord's quote is "> " at a line start (Markdown Text 101).
            inner
                .into_iter()
                .map(|l| {
                    if l.prefixed() {
                        Line::text(format!("> {}", l.text))
                    } else {
                        l
                    }
                })
                .collect()
        }
        Block::List { start, items } => {
            let mut lines = Vec::new();
            for (i, item) in items.iter().enumerate() {
                // Discord's lists take "- " bullets and "N. " numbers (Markdown Text 101);
                // numbers are written out so a list starting past one keeps its numbering.
                let marker = match start {
                    Some(n) => format!("{}. ", n.saturating_add(i as u64)),
                    None => "- ".to_string(),
                };
                let indent = " ".repeat(marker.len());
                let inner = layout(
                    item,
                    cx,
                    Nest {
                        in_item: true,
                        ..nest
                    },
                );
                let mut rest = inner.into_iter().peekable();
                match rest.peek() {
                    Some(first) if first.prefixed() => {
                        if let Some(first) = rest.next() {
                            lines.push(Line::text(format!("{marker}{}", first.text)));
                        }
                    }
                    _ => lines.push(Line::text(marker.trim_end().to_string())),
                }
                // Continuation lines are indented under the item's text; Discord keeps
                // indented lines in the item and nests an indented list.
                for line in rest {
                    if line.prefixed() {
                        lines.push(Line::text(format!("{indent}{}", line.text)));
                    } else {
                        lines.push(line);
                    }
                }
            }
            lines
        }
        Block::Table { aligns, rows } => table_lines(aligns, rows, cx),
        // Discord has no horizontal rule; a line of box-drawing characters stands in for it.
        Block::Rule => vec![Line::text("─".repeat(10))],
    }
}

/// A fenced code block. Discord's code blocks have no escape: the first triple backtick inside
/// ends the block, so runs of backticks in the code are broken with zero-width spaces, the
/// usual workaround, which shows the same characters. A block with no visible content is left
/// out, since Discord would show its fences as literal backticks.
fn code_block_lines(lang: Option<&str>, code: &str) -> Vec<Line> {
    if !code.contains(|c| c != '\n') {
        return Vec::new();
    }
    let body = break_backtick_runs(code, 3);
    let body = body.strip_suffix('\n').unwrap_or(&body);
    let mut lines = vec![Line::raw(format!("```{}", lang.unwrap_or("")))];
    lines.extend(body.split('\n').map(|l| Line::raw(l.to_string())));
    lines.push(Line::raw("```".to_string()));
    lines
}

/// Inserts a zero-width space between the backticks of every run of at least `min` of them.
fn break_backtick_runs(s: &str, min: usize) -> String {
    let mut out = String::with_capacity(s.len());
    let mut run = 0;
    let flush_run = |out: &mut String, run: usize| {
        if run >= min {
            out.push('`');
            for _ in 1..run {
                out.push('\u{200B}');
                out.push('`');
            }
        } else {
            out.extend(std::iter::repeat_n('`', run));
        }
    };
    for c in s.chars() {
        if c == '`' {
            run += 1;
        } else {
            flush_run(&mut out, run);
            run = 0;
            out.push(c);
        }
    }
    flush_run(&mut out, run);
    out
}

/// Discord has no tables: a monospace code block with the columns padded to line up, each
/// column aligned as its delimiter row says.
fn table_lines(aligns: &[Alignment], rows: &[Vec<Vec<Event<'_>>>], cx: &Ctx<'_>) -> Vec<Line> {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|cell| {
                    let mut w = Inline::new(cx.mentions, false, true);
                    w.plain = true;
                    w.run(cell);
                    break_backtick_runs(&w.out, 3)
                })
                .collect()
        })
        .collect();
    let mut lines = vec![Line::raw("```".to_string())];
    lines.extend(
        table_text(aligns, &cells, display_width, "-|-")
            .into_iter()
            .map(Line::raw),
    );
    lines.push(Line::raw("```".to_string()));
    lines
}

/// Characters a monospace block shows, the zero-width spaces that break backtick runs aside.
fn display_width(s: &str) -> usize {
    s.chars().filter(|c| *c != '\u{200B}').count()
}

// ---------------------------------------------------------------------------------------------
// Inline content.

fn render_inline(evs: &[Event<'_>], cx: &mut Ctx<'_>, breaks_as_space: bool) -> String {
    let mut w = Inline::new(cx.mentions, true, breaks_as_space);
    w.run(evs);
    cx.add_pings(w.pings);
    w.out
}

/// Writes inline content in Discord's syntax.
struct Inline<'m> {
    mentions: &'m Mentions<'m>,
    out: String,
    /// Nothing but spaces written since the line began: Discord's line constructs (headings,
    /// subtext, lists, quotes) are read here, even after an opening emphasis marker.
    line_start: bool,
    /// Line breaks become spaces (a heading or a link's text is one line).
    breaks_as_space: bool,
    /// Inside a masked link's text: Discord cannot nest links, so an inner one keeps its text.
    in_label: bool,
    /// Plain text for a monospace block: no markup, no escaping, no mentions.
    plain: bool,
    /// Allowed ids written as real mentions.
    pings: Vec<String>,
}

impl<'m> Inline<'m> {
    fn new(mentions: &'m Mentions<'m>, line_start: bool, breaks_as_space: bool) -> Self {
        Inline {
            mentions,
            out: String::new(),
            line_start,
            breaks_as_space,
            in_label: false,
            plain: false,
            pings: Vec::new(),
        }
    }

    fn run(&mut self, evs: &[Event<'_>]) {
        let mut i = 0;
        while i < evs.len() {
            match &evs[i] {
                Event::Text(t) => self.text(t),
                Event::Code(c) | Event::InlineMath(c) | Event::DisplayMath(c) => self.code(c),
                Event::Html(h) | Event::InlineHtml(h) => self.literal(h),
                Event::FootnoteReference(name) => self.literal(&format!("[^{name}]")),
                Event::TaskListMarker(done) => self.literal(if *done { "[x] " } else { "[ ] " }),
                Event::SoftBreak | Event::HardBreak => self.line_break(),
                Event::Rule => {}
                // Discord: `*italics*`, `**bold**`, `~~strikethrough~~` (Markdown Text 101).
                // Italics use `*`: Discord reads `_` as italics only at word boundaries, and
                // `__` is its underline.
                Event::Start(Tag::Emphasis) | Event::End(TagEnd::Emphasis) => self.marker("*"),
                Event::Start(Tag::Strong) | Event::End(TagEnd::Strong) => self.marker("**"),
                Event::Start(Tag::Strikethrough) | Event::End(TagEnd::Strikethrough) => {
                    self.marker("~~")
                }
                Event::Start(
                    Tag::Link {
                        link_type,
                        dest_url,
                        ..
                    }
                    | Tag::Image {
                        link_type,
                        dest_url,
                        ..
                    },
                ) => {
                    let end = matching_end(evs, i);
                    let label = evs.get(i + 1..end).unwrap_or(&[]);
                    self.link(*link_type, dest_url, label);
                    i = end;
                }
                // Discord has no super- or subscript; their text stays.
                Event::Start(Tag::Superscript | Tag::Subscript)
                | Event::End(TagEnd::Superscript | TagEnd::Subscript) => {}
                // Block tags never reach inline content (`parse_blocks` splits them out).
                Event::Start(_) | Event::End(_) => {}
            }
            i += 1;
        }
    }

    /// Text that may hold `<@ID>` mention tokens.
    fn text(&mut self, text: &str) {
        for segment in segments(text) {
            match segment {
                Segment::Text(t) => self.escaped(t),
                Segment::Mention(id) => self.mention(id),
            }
        }
    }

    /// A mention token. Discord's user mention is `<@ID>` with a snowflake id (Reference ›
    /// Message Formatting); an id that is not one could only be shown literally by Discord and
    /// would be refused in `allowed_mentions.users`, so it is treated as not allowed. Anything
    /// else is plain `@ID`, which notifies nobody.
    fn mention(&mut self, id: &str) {
        if self.plain {
            self.out.push('@');
            self.out.push_str(id);
        } else if self.mentions.allows(id) && is_snowflake(id) {
            self.out.push_str("<@");
            self.out.push_str(id);
            self.out.push('>');
            self.line_start = false;
            if !self.pings.iter().any(|p| p == id) {
                self.pings.push(id.to_string());
            }
        } else {
            self.escaped(&format!("@{id}"));
        }
    }

    /// Text shown as written (raw HTML and the like): escaped, no mentions.
    fn literal(&mut self, text: &str) {
        self.escaped(text);
    }

    /// Writes `text` so that Discord shows it literally. Discord's escape is a backslash before
    /// any punctuation character (Markdown Text 101).
    fn escaped(&mut self, text: &str) {
        if self.plain {
            self.out.push_str(text);
            return;
        }
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            // Discord links bare web addresses over the raw text and applies no escapes inside
            // them, so an address is written untouched: an escape would end up in the link.
            if let Some(len) = bare_url_len(rest) {
                self.out.push_str(&rest[..len]);
                self.line_start = false;
                rest = &rest[len..];
                continue;
            }
            rest = &rest[c.len_utf8()..];
            if c == '\n' {
                self.out.push('\n');
                self.line_start = true;
                continue;
            }
            if self.line_start {
                if c == ' ' {
                    self.out.push(c);
                    continue;
                }
                self.line_start = false;
                // Line constructs, each only where it would form: `#`–`###` headings and
                // `-#` subtext before a space, `-`/`+` bullets before a space, `>` quotes
                // before a space or `>>`, `N.` numbered items before a space. Elsewhere the
                // character is text as it is (`#000`, `-1`, `>_<`), so it is left alone.
                let spaced = |after: &str| after.is_empty() || after.starts_with([' ', '\t']);
                let forms = match c {
                    '#' => {
                        let hashes = rest.chars().take_while(|h| *h == '#').count();
                        hashes < 3 && spaced(&rest[hashes..])
                    }
                    '-' => spaced(rest) || rest.strip_prefix('#').is_some_and(spaced),
                    '+' => spaced(rest),
                    '>' => spaced(rest) || rest.starts_with(">>"),
                    _ => false,
                };
                if forms {
                    self.out.push('\\');
                    self.out.push(c);
                    continue;
                }
                if c.is_ascii_digit() {
                    let digits = rest
                        .find(|d: char| !d.is_ascii_digit())
                        .unwrap_or(rest.len());
                    self.out.push(c);
                    self.out.push_str(&rest[..digits]);
                    rest = &rest[digits..];
                    if let Some(after) = rest.strip_prefix('.').filter(|a| spaced(a)) {
                        self.out.push_str("\\.");
                        rest = after;
                    }
                    continue;
                }
            }
            // Emphasis, underline, strikethrough, spoiler and code markers and the escape
            // itself are markup anywhere; `[` opens a masked link; `<` followed by text opens
            // a mention, channel, role, emoji, timestamp or `<url>`.
            let markup = match c {
                '\\' | '*' | '_' | '~' | '`' | '|' | '[' => true,
                '<' => rest.starts_with(|n: char| !n.is_whitespace()),
                _ => false,
            };
            if markup {
                self.out.push('\\');
            }
            self.out.push(c);
        }
    }

    /// Emphasis markers leave `line_start` as it is: Discord still reads a line construct
    /// right after one.
    fn marker(&mut self, marker: &str) {
        if !self.plain {
            self.out.push_str(marker);
        }
    }

    fn line_break(&mut self) {
        if self.breaks_as_space || self.plain {
            self.out.push(' ');
        } else {
            // Chat convention: every line break is kept, and Discord shows a newline as one.
            self.out.push('\n');
            self.line_start = true;
        }
    }

    /// Inline code. Discord's inline code is delimited by one or two backticks only (three
    /// open a code block) and has no escape, so backtick runs inside are broken with
    /// zero-width spaces, two delimiters are used when the code holds a backtick, and a space
    /// pads code that starts or ends with one.
    fn code(&mut self, code: &str) {
        if self.plain {
            self.out.push_str(code);
            return;
        }
        if code.is_empty() {
            return;
        }
        let code = break_backtick_runs(code, 2);
        let fence = if code.contains('`') { "``" } else { "`" };
        let pad = if code.starts_with('`') || code.ends_with('`') {
            " "
        } else {
            ""
        };
        self.out.push_str(fence);
        self.out.push_str(pad);
        self.out.push_str(&code);
        self.out.push_str(pad);
        self.out.push_str(fence);
        self.line_start = false;
    }

    /// A link or an image (which becomes a link to it). Discord shows masked links
    /// `[text](url)` in bot and webhook messages (Markdown Text 101) for web addresses only,
    /// and shows a masked link as plain text when its text holds a web address or brackets.
    fn link(&mut self, link_type: LinkType, dest: &str, label: &[Event<'_>]) {
        if self.plain {
            let before = self.out.len();
            self.run(label);
            let shown = self.out.get(before..).unwrap_or("");
            if shown.is_empty() {
                self.out.push_str(dest);
            } else if shown != dest {
                self.out.push_str(" (");
                self.out.push_str(dest);
                self.out.push(')');
            }
            return;
        }
        if self.in_label || matches!(link_type, LinkType::Email) {
            // An image inside a link's text keeps its alt text; an e-mail autolink is its
            // address, which Discord does not link.
            self.run(label);
            return;
        }
        let Some(href) = web_href(dest) else {
            // Not a web address: Discord would not link it, so text and address are shown.
            let before = self.out.len();
            self.run(label);
            if self.out.len() > before {
                self.escaped(" (");
                self.escaped(dest);
                self.escaped(")");
            } else {
                self.escaped(dest);
            }
            return;
        };
        let mut plain = Inline::new(self.mentions, false, true);
        plain.plain = true;
        plain.run(label);
        if matches!(link_type, LinkType::Autolink) || plain.out.is_empty() || plain.out == dest {
            // Discord's `<url>` shows the address itself as a link.
            self.push_angle_url(&href);
            return;
        }
        let mut text = Inline::new(self.mentions, false, true);
        text.in_label = true;
        text.run(label);
        let masks = !text.out.contains(['[', ']'])
            && !text.out.contains("http://")
            && !text.out.contains("https://");
        if masks {
            self.out.push('[');
            self.out.push_str(&text.out);
            self.out.push_str("](");
            self.out.push_str(&masked_href(href));
            self.out.push(')');
            self.line_start = false;
            for id in text.pings {
                if !self.pings.contains(&id) {
                    self.pings.push(id);
                }
            }
        } else {
            self.run(label);
            self.out.push_str(" (");
            self.push_angle_url(&href);
            self.out.push(')');
        }
    }

    fn push_angle_url(&mut self, href: &str) {
        self.out.push('<');
        self.out.push_str(href);
        self.out.push('>');
        self.line_start = false;
    }
}

/// The index of the `End` matching the link or image `Start` at `start` (or the end of `evs`).
fn matching_end(evs: &[Event<'_>], start: usize) -> usize {
    let mut depth = 0usize;
    for (i, ev) in evs.iter().enumerate().skip(start) {
        match ev {
            Event::Start(Tag::Link { .. } | Tag::Image { .. }) => depth += 1,
            Event::End(TagEnd::Link | TagEnd::Image) => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    evs.len()
}

/// Whether `id` is a Discord snowflake: an unsigned integer sent as a decimal string
/// (Reference › Snowflakes).
fn is_snowflake(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && id.parse::<u64>().is_ok()
}

/// The length of the bare web address at the start of `s`, as Discord's autolinking reads one:
/// `http://` or `https://`, then everything up to whitespace or `<`, less trailing
/// punctuation that usually ends a sentence (`.,:;"')]`), at least two characters after the
/// scheme.
fn bare_url_len(s: &str) -> Option<usize> {
    let scheme = if s.starts_with("https://") {
        "https://".len()
    } else if s.starts_with("http://") {
        "http://".len()
    } else {
        return None;
    };
    let rest = &s[scheme..];
    let run = rest
        .find(|c: char| c.is_whitespace() || c == '<')
        .unwrap_or(rest.len());
    let run = &rest[..run];
    let kept = run.trim_end_matches(['.', ',', ':', ';', '"', '\'', ')', ']']);
    (kept.chars().count() >= 2).then_some(scheme + kept.len())
}

/// `dest` as the target of a Discord link, if it is a web address. The scheme is lowercased
/// (schemes are case-insensitive; Discord links only lowercase `http`/`https`), and the
/// characters that would end the target inside Discord's `(...)` or `<...>` are
/// percent-encoded: whitespace, controls, `<`, `>`, `(`, `)` and the backslash. Whitespace,
/// controls, `<`, `>` and the backslash are not valid in a URL, and browsers send them
/// encoded, so that is the address the author meant.
fn web_href(dest: &str) -> Option<String> {
    let (scheme, rest) = if starts_with_ignore_case(dest, "https://") {
        ("https://", &dest["https://".len()..])
    } else if starts_with_ignore_case(dest, "http://") {
        ("http://", &dest["http://".len()..])
    } else {
        return None;
    };
    if rest.chars().count() < 2 {
        return None;
    }
    let mut href = String::from(scheme);
    for c in rest.chars() {
        if c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '(' | ')' | '\\') {
            percent_encode(c, &mut href);
        } else {
            href.push(c);
        }
    }
    Some(href)
}

/// A masked link's target must end as a bare address may (see [`bare_url_len`]), or Discord
/// shows the whole link as text; a trailing punctuation character is percent-encoded.
fn masked_href(mut href: String) -> String {
    if let Some(last) = href.pop() {
        if matches!(last, '.' | ',' | ':' | ';' | '"' | '\'' | ']') {
            percent_encode(last, &mut href);
        } else {
            href.push(last);
        }
    }
    href
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

fn percent_encode(c: char, out: &mut String) {
    let mut buf = [0u8; 4];
    for b in c.encode_utf8(&mut buf).bytes() {
        out.push_str(&format!("%{b:02X}"));
    }
}

/// Raw text as Discord shows it literally: a backslash before every character its Markdown
/// could read as markup there (Discord's Markdown takes a backslash before ASCII punctuation
/// as an escape, as CommonMark does) — emphasis, code, spoilers, links and mention tokens
/// anywhere, quotes, headings and lists at the start of a line — so nothing formats.
pub fn plain(text: &str) -> Rendered {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for line in text.split_inclusive('\n') {
        let body = line.trim_start_matches([' ', '\t']);
        out.push_str(&line[..line.len() - body.len()]);
        let starts_block = body.starts_with(['>', '#', '-', '+'])
            || body
                .split_once(['.', ')'])
                .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        if starts_block && !body.starts_with(|c: char| c.is_ascii_digit()) {
            out.push('\\');
        }
        for (i, c) in body.char_indices() {
            let ordered_marker = starts_block
                && body.starts_with(|c: char| c.is_ascii_digit())
                && matches!(c, '.' | ')')
                && body[..i].chars().all(|d| d.is_ascii_digit());
            if ordered_marker || matches!(c, '\\' | '*' | '_' | '~' | '`' | '|' | '[' | ']' | '<') {
                out.push('\\');
            }
            out.push(c);
        }
    }
    Rendered {
        length: out.chars().count(),
        text: out,
        html: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_escaped_so_nothing_formats() {
        assert_eq!(
            plain("**not bold** <@1> # x, ok.\n# title\n> quote\n1. one\n12) twelve").text,
            "\\*\\*not bold\\*\\* \\<@1> # x, ok.\n\\# title\n\\> quote\n1\\. one\n12\\) twelve"
        );
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn r(markdown: &str) -> String {
        render(markdown, &Mentions::default()).text
    }

    fn r_allow(markdown: &str, allowed: &[&str]) -> String {
        let allowed = ids(allowed);
        render(markdown, &Mentions::new(&allowed)).text
    }

    const SAMPLE: &str = include_str!("sample.md");

    const SAMPLE_TAIL: &str = r#"## Steps

1. Collect receipts
2. Sort them by [category](https://example.com/cats?a=1&b=2)
   - nested *item*
3. Done

- one
- two

> A quote with \<b>raw html\</b> & a \<!channel> and @everyone @here @room.

```rust
fn main() { println!("<not html> & {}", 1 < 2); }
```

```
Item         | Cost
-------------|-----
Rent         | 1200
Food & drink |  300
```
"#;

    #[test]
    fn sample_renders_exactly() {
        let allowed = ids(&["U0PERSON01"]);
        let out = render(SAMPLE, &Mentions::new(&allowed));
        println!("{}", out.text);
        let expected = format!(
            "# Budget plan\n\n\
             Here is the **draft** for *Q3*, with ~~old~~ new numbers and `inline code`.\n\
             A second line of the same paragraph.\n\n\
             {SAMPLE_TAIL}\n\
             Thanks @U0PERSON01 and @U0OTHER999! Escapes: 5 \\* 3 \\_ 2 < 4 > 1 & done.\n\
             [chart](https://example.com/chart.png)"
        );
        assert_eq!(out.text, expected);
        assert_eq!(out.length, expected.chars().count());
        assert_eq!(out.html, None);
        // `U0PERSON01` is not a Discord id, so nobody is mentioned.
        assert!(mentioned(SAMPLE, &Mentions::new(&allowed)).is_empty());
    }

    #[test]
    fn sample_with_discord_ids_renders_exactly() {
        let sample = SAMPLE.replace("<@U0PERSON01>", "<@80351110224678912>");
        let allowed = ids(&["80351110224678912"]);
        let out = render(&sample, &Mentions::new(&allowed));
        println!("{}", out.text);
        let expected = format!(
            "# Budget plan\n\n\
             Here is the **draft** for *Q3*, with ~~old~~ new numbers and `inline code`.\n\
             A second line of the same paragraph.\n\n\
             {SAMPLE_TAIL}\n\
             Thanks <@80351110224678912> and @U0OTHER999! Escapes: 5 \\* 3 \\_ 2 < 4 > 1 & done.\n\
             [chart](https://example.com/chart.png)"
        );
        assert_eq!(out.text, expected);
        assert_eq!(
            mentioned(&sample, &Mentions::new(&allowed)),
            ids(&["80351110224678912"])
        );
    }

    #[test]
    fn every_special_character_is_escaped() {
        assert_eq!(
            r(r"a \* b \_ c \~ d \` e | f \\ g \[h\] i < j <x k"),
            r"a \* b \_ c \~ d \` e \| f \\ g \[h] i < j \<x k"
        );
        assert_eq!(r("x || y ~~ z __ w"), r"x \|\| y \~\~ z \_\_ w");
        // A mention-, channel- or emoji-like token written by the author stays literal.
        assert_eq!(
            r("<#123> <:e:1> <t:1618953630> </cmd:1>"),
            r"\<#123> \<:e:1> \<t:1618953630> \</cmd:1>"
        );
    }

    #[test]
    fn line_start_markup_is_escaped() {
        assert_eq!(r(r"\# not a heading"), r"\# not a heading");
        assert_eq!(r(r"\- not a bullet"), r"\- not a bullet");
        assert_eq!(r(r"\+ not a bullet"), r"\+ not a bullet");
        assert_eq!(r(r"\> not a quote"), r"\> not a quote");
        assert_eq!(r(r"2024\. a year"), r"2024\. a year");
        assert_eq!(r(r"\-# not subtext"), r"\-# not subtext");
        // After a line break, and right after an opening emphasis marker.
        assert_eq!(r("a\n2. b\\\n\\# c"), "a\n2\\. b\n\\# c");
        assert_eq!(r(r"*\> x*"), r"*\> x*");
        // Not at a line start they are plain.
        assert_eq!(r("a # b - c > d 2. e"), "a # b - c > d 2. e");
        // Inside a heading the text starts a line too.
        assert_eq!(r(r"# \# tag"), r"# \# tag");
    }

    #[test]
    fn nested_emphasis() {
        assert_eq!(r("***both***"), "***both***");
        assert_eq!(r("**bold _and italic_**"), "**bold *and italic***");
        assert_eq!(r("*it **bold** it*"), "*it **bold** it*");
        assert_eq!(r("~~*gone*~~"), "~~*gone*~~");
        assert_eq!(r("__strong__ and _em_"), "**strong** and *em*");
    }

    #[test]
    fn links_keep_their_target() {
        assert_eq!(
            r("[**the** _docs_](https://example.com/a?x=1&y=2)"),
            "[**the** *docs*](https://example.com/a?x=1&y=2)"
        );
        assert_eq!(
            r("[wiki](<https://en.wikipedia.org/wiki/Rust_(language)>)"),
            "[wiki](https://en.wikipedia.org/wiki/Rust_%28language%29)"
        );
        assert_eq!(
            r("[a](<https://example.com/a b>)"),
            "[a](https://example.com/a%20b)"
        );
        assert_eq!(
            r("[pipe](https://example.com/?q=a|b)"),
            "[pipe](https://example.com/?q=a|b)"
        );
        assert_eq!(
            r("[gt](https://example.com/?q=a>b)"),
            "[gt](https://example.com/?q=a%3Eb)"
        );
        assert_eq!(
            r("[gt](https://example.com/?q=a%3Eb)"),
            "[gt](https://example.com/?q=a%3Eb)"
        );
        assert_eq!(
            r("[end](https://example.com/a.)"),
            "[end](https://example.com/a%2E)"
        );
        assert_eq!(
            r("[x](HTTPS://Example.com/A)"),
            "[x](https://Example.com/A)"
        );
    }

    #[test]
    fn links_discord_cannot_mask() {
        // An autolink, or a link whose text is its address: the address in angle brackets.
        assert_eq!(
            r("see <https://example.com/a_b>"),
            "see <https://example.com/a_b>"
        );
        assert_eq!(
            r("[https://example.com](https://example.com)"),
            "<https://example.com>"
        );
        // Text holding an address or brackets: text, then the address.
        assert_eq!(
            r("[go to https://a.example now](https://b.example)"),
            "go to https://a.example now (<https://b.example>)"
        );
        assert_eq!(
            r(r"[a \[b\]](https://example.com)"),
            r"a \[b] (<https://example.com>)"
        );
        // Not a web address: text and address as text.
        assert_eq!(
            r("[mail](mailto:a_b@example.com)"),
            r"mail (mailto:a\_b@example.com)"
        );
        assert_eq!(r("[rel](/docs/a_b)"), r"rel (/docs/a\_b)");
        assert_eq!(r("<a_b@example.com>"), r"a\_b@example.com");
        // Empty text: the address.
        assert_eq!(r("[](https://example.com/x)"), "<https://example.com/x>");
    }

    #[test]
    fn bare_urls_are_not_escaped() {
        assert_eq!(
            r("see https://example.com/a_b*c, then _x_"),
            "see https://example.com/a_b*c, then *x*"
        );
        assert_eq!(
            r("(https://example.com/x_y)."),
            "(https://example.com/x_y)."
        );
    }

    #[test]
    fn images_become_links() {
        assert_eq!(
            r("![a chart](https://example.com/c.png \"title\")"),
            "[a chart](https://example.com/c.png)"
        );
        assert_eq!(
            r("![](https://example.com/c.png)"),
            "<https://example.com/c.png>"
        );
        assert_eq!(
            r("[![logo](https://example.com/l.png)](https://example.com)"),
            "[logo](https://example.com)"
        );
    }

    #[test]
    fn code_block_with_backtick_fence_inside() {
        let md = "~~~python\nprint(\"```\")\n*not* <b> _x_ <@123>\n~~~\n";
        let zw = "`\u{200B}`\u{200B}`";
        assert_eq!(
            r_allow(md, &["123"]),
            format!("```python\nprint(\"{zw}\")\n*not* <b> _x_ <@123>\n```")
        );
        assert!(mentioned(md, &Mentions::new(&ids(&["123"]))).is_empty());
    }

    #[test]
    fn code_block_language_and_content_kept() {
        assert_eq!(
            r("```c++ extra\n  a < b && c\n\n```"),
            "```c++\n  a < b && c\n\n```"
        );
        // A language Discord could not read would become the first line of code: dropped.
        assert_eq!(r("```rust,ignore\nx\n```"), "```\nx\n```");
        assert_eq!(r("    indented\n    code"), "```\nindented\ncode\n```");
        assert_eq!(r("```\n```"), "");
    }

    #[test]
    fn inline_code() {
        assert_eq!(r("`` a ` b ``"), "``a ` b``");
        assert_eq!(r("`*not* <@1> |x|`"), "`*not* <@1> |x|`");
        assert_eq!(r("`` `tick ``"), "`` `tick ``");
        assert_eq!(r("``` a``b ```"), "``a`\u{200B}`b``");
    }

    #[test]
    fn mentions() {
        let md = "hi <@123> and <@456>, again <@123>";
        assert_eq!(r_allow(md, &["123"]), "hi <@123> and @456, again <@123>");
        assert_eq!(mentioned(md, &Mentions::new(&ids(&["123"]))), ids(&["123"]));
        assert_eq!(
            mentioned(
                "<@456> <@123> <@456>",
                &Mentions::new(&ids(&["123", "456"]))
            ),
            ids(&["456", "123"])
        );
        // Inside code nothing is a mention.
        assert_eq!(r_allow("`<@123>`", &["123"]), "`<@123>`");
        assert!(mentioned("`<@123>`", &Mentions::new(&ids(&["123"]))).is_empty());
        // Malformed tokens are text.
        assert_eq!(r("<@> and <@ a>"), r"\<@> and \<@ a>");
        // An id with markup characters is escaped as text.
        assert_eq!(r("<@a_b>"), r"@a\_b");
        // Role, channel and nickname forms are never user mentions.
        assert_eq!(
            r_allow("<@&123> <@!123> <#123>", &["123"]),
            r"@&123 @!123 \<#123>"
        );
        // A mention inside a link's text or a heading still counts.
        assert_eq!(r_allow("# Hi <@123>", &["123"]), "# Hi <@123>");
        assert_eq!(
            mentioned("# Hi <@123>", &Mentions::new(&ids(&["123"]))),
            ids(&["123"])
        );
    }

    #[test]
    fn broadcasts_stay_text() {
        // `allowed_mentions.parse: []` keeps `@everyone`/`@here` from notifying.
        assert_eq!(r("@everyone @here @room"), "@everyone @here @room");
        assert_eq!(
            r("<!channel> <!here> <!everyone>"),
            r"\<!channel> \<!here> \<!everyone>"
        );
    }

    #[test]
    fn headings() {
        assert_eq!(r("# One"), "# One");
        assert_eq!(r("### Three"), "### Three");
        assert_eq!(r("##### Five *x*"), "**Five *x***");
        assert_eq!(r("Set\next\n==="), "# Set ext");
        assert_eq!(r("#"), "");
    }

    #[test]
    fn lists() {
        assert_eq!(r("3. three\n4. four"), "3. three\n4. four");
        assert_eq!(
            r("- a\n\n  more a\n- b\n  - b1\n    - b2"),
            "- a\n  more a\n- b\n  - b1\n    - b2"
        );
        assert_eq!(
            r("1. a\n   ```sh\n   ls\n   ```\n2. b"),
            "1. a\n```sh\nls\n```\n2. b"
        );
        assert_eq!(r("- > quoted"), "- > quoted");
        assert_eq!(r("-\n- x"), "-\n- x");
    }

    #[test]
    fn block_quotes() {
        assert_eq!(r("> a\n> b"), "> a\n> b");
        assert_eq!(r("> a\n>\n> b"), "> a\n\n> b");
        assert_eq!(r("> a\n> > inner"), "> a\n\n> inner");
        assert_eq!(r("> - x\n>   - y"), "> - x\n>   - y");
        assert_eq!(
            r("> text\n> ```\n> code\n> ```"),
            "> text\n\n```\ncode\n```"
        );
    }

    #[test]
    fn table_with_alignment() {
        let md = "| L | C | R |\n|:--|:-:|--:|\n| a | bb | c |\n| long `x\\|y` | *e* | [l](https://e.x) |";
        assert_eq!(
            r(md),
            "```\n\
             L        | C  |               R\n\
             ---------|----|----------------\n\
             a        | bb |               c\n\
             long x|y | e  | l (https://e.x)\n\
             ```"
        );
    }

    #[test]
    fn table_cells_keep_code_and_mentions_literal() {
        let md = "| a | b |\n|---|---|\n| <@123> `` ``` `` | x |";
        assert_eq!(
            r_allow(md, &["123"]),
            "```\na        | b\n---------|--\n@123 `\u{200B}`\u{200B}` | x\n```"
        );
        assert!(mentioned(md, &Mentions::new(&ids(&["123"]))).is_empty());
    }

    #[test]
    fn empty_input() {
        assert_eq!(render("", &Mentions::default()).text, "");
        assert_eq!(render(" \n\t\n", &Mentions::default()).length, 0);
    }

    #[test]
    fn hard_and_soft_breaks_are_line_breaks() {
        assert_eq!(r("a  \nb\\\nc\nd"), "a\nb\nc\nd");
    }

    #[test]
    fn entities_are_decoded_then_escaped() {
        assert_eq!(r("&amp; &copy; &lt;b&gt; &#42;x&#42;"), r"& © \<b> \*x\*");
        // A decoded mention token is still a token.
        assert_eq!(r_allow("&lt;@123&gt;", &["123"]), "<@123>");
    }

    #[test]
    fn raw_html_is_literal() {
        assert_eq!(
            r("<div>\n*x* <@123>\n</div>\n\nafter"),
            "\\<div>\n\\*x\\* \\<@123>\n\\</div>\n\nafter"
        );
        assert_eq!(r("a <span>b</span>"), r"a \<span>b\</span>");
    }

    #[test]
    fn thematic_break() {
        assert_eq!(r("a\n\n---\n\nb"), "a\n\n──────────\n\nb");
    }

    #[test]
    fn length_counts_characters() {
        let out = render("héllo 👋🏽 **日本**", &Mentions::default());
        assert_eq!(out.text, "héllo 👋🏽 **日本**");
        assert_eq!(out.length, 15);
    }

    #[test]
    fn deterministic() {
        let allowed = ids(&["123"]);
        let m = Mentions::new(&allowed);
        assert_eq!(render(SAMPLE, &m), render(SAMPLE, &m));
    }
}
